//! The proxy's two dialects behind one trait, so that a behaviour both share is tested once
//! and run for each (`upstream/tests/it`): per dialect, how a fake upstream's paths are made
//! and signed, how the proxy is asked for a narinfo and a NAR, and what a test reads of a
//! proxied narinfo, in terms both dialects share.

use std::fmt::Debug;
use std::future::Future;
use std::net::IpAddr;

use formats::compression::{nar_file_name, NarCompression};
use formats::{Compression, NarHash, NarInfo, StorePathHash};
use signing::{GuixSecretKey, SecretKey};
use upstream::{GuixProxied, Lookup, NarSource, Proxy};

use crate::fake_upstream::{guix_signed_part, make_guix_item_signed, make_item_in, Item, UpstreamKey};

/// One URL group of a proxied narinfo: where subserve serves the NAR, in which compression,
/// and how big that file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Relative to the cache (`nar/...`), as the narinfo's `URL` says.
    pub url: String,
    /// As the narinfo's `Compression` says.
    pub compression: NarCompression,
    /// As the narinfo's `FileSize` says.
    pub file_size: Option<u64>,
}

/// What a proxied narinfo says, in terms both dialects share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The store path's basename, `<hash>-<name>`.
    pub store_path: String,
    /// Hash of the uncompressed NAR.
    pub nar_hash: NarHash,
    /// Size of the uncompressed NAR.
    pub nar_size: u64,
    /// The references' basenames, in order.
    pub references: Vec<String>,
    /// The URL groups offered: a Nix narinfo has one, and subserve offers one Guix group.
    pub offers: Vec<Offer>,
}

/// A dialect of the proxy, named by the signing key of its fake upstreams
/// ([`signing::SecretKey`] for Nix, [`signing::GuixSecretKey`] for Guix): what differs
/// between the two for a test of what they share.
pub trait Dialected: UpstreamKey + Clone + Send + Sync + Sized + 'static {
    /// What the proxy answers for a narinfo: a [`NarInfo`] or a [`GuixProxied`].
    type Info: Clone + Debug + PartialEq + Send + 'static;
    /// The other dialect.
    type Other: Dialected;
    /// The narinfo field that holds a signature (`Sig` or `Signature`).
    const SIGNATURE_FIELD: &'static str;

    /// A new key for a fake upstream. Nix keys are all named `upstream-1`, so another one is
    /// a stranger with the right name.
    fn generate() -> Self;

    /// A path `<store_dir>/<hash>-<name>` whose NAR is `nar`, offered as one file in
    /// `compression`, its narinfo signed with this key (over `store_dir`).
    fn item_in(&self, store_dir: &str, hash: &str, name: &str, nar: Vec<u8>, compression: Compression) -> Item;

    /// [`Dialected::item_in`] under this dialect's store dir.
    fn item(&self, hash: &str, name: &str, nar: Vec<u8>, compression: Compression) -> Item {
        self.item_in(Self::STORE_DIR, hash, name, nar, compression)
    }

    /// Asks `proxy` for the narinfo of `hash` in this dialect ([`Proxy::narinfo`] or
    /// [`Proxy::guix_narinfo`]).
    fn narinfo(
        proxy: &Proxy,
        hash: &StorePathHash,
        client: Option<IpAddr>,
    ) -> impl Future<Output = Lookup<Self::Info>> + Send;

    /// Asks `proxy` for `item`'s NAR in `compression` through this dialect's NAR URL
    /// ([`Proxy::nar`] with the item's NarHash, or [`Proxy::guix_nar`]).
    fn nar(proxy: &Proxy, item: &Item, compression: Compression) -> impl Future<Output = Option<NarSource>> + Send;

    /// Where the proxy serves `item`'s NAR in `compression`: Nix's `nar/<hash>-<narhash>.nar<ext>`
    /// in subserve's namespace, or guix publish's `nar/<compression>/<basename>`.
    fn nar_url(item: &Item, compression: Compression) -> String;

    /// What `info` says, in terms both dialects share.
    fn summary(info: &Self::Info) -> Summary;

    /// The narinfo file the proxy's cache directory holds for `info`.
    fn stored_text(info: &Self::Info) -> String;

    /// Whether the upstream's signature that `info` keeps still verifies under `key`.
    fn upstream_signature_verifies(info: &Self::Info, key: &Self) -> bool;
}

impl Dialected for SecretKey {
    type Info = NarInfo;
    type Other = GuixSecretKey;
    const SIGNATURE_FIELD: &'static str = "Sig";

    fn generate() -> Self {
        SecretKey::generate("upstream-1").unwrap()
    }

    fn item_in(&self, store_dir: &str, hash: &str, name: &str, nar: Vec<u8>, compression: Compression) -> Item {
        make_item_in(self, store_dir, hash, name, nar, compression)
    }

    async fn narinfo(proxy: &Proxy, hash: &StorePathHash, client: Option<IpAddr>) -> Lookup<NarInfo> {
        proxy.narinfo(hash, client).await
    }

    async fn nar(proxy: &Proxy, item: &Item, compression: Compression) -> Option<NarSource> {
        proxy.nar(&item.hash, &NarHash::digest(&item.nar), compression, None).await
    }

    fn nar_url(item: &Item, compression: Compression) -> String {
        format!("nar/{}", nar_file_name(&item.hash, &NarHash::digest(&item.nar), compression))
    }

    fn summary(info: &NarInfo) -> Summary {
        Summary {
            store_path: crate::basename(&info.store_path).to_owned(),
            nar_hash: info.nar_hash,
            nar_size: info.nar_size,
            references: info.references.clone(),
            offers: vec![Offer {
                url: info.url.clone(),
                compression: info.compression.clone(),
                file_size: info.file_size,
            }],
        }
    }

    fn stored_text(info: &NarInfo) -> String {
        info.render()
    }

    fn upstream_signature_verifies(info: &NarInfo, key: &Self) -> bool {
        signing::verify_any(&[key.to_public()], &info.fingerprint(Self::STORE_DIR), &info.sigs)
    }
}

impl Dialected for GuixSecretKey {
    type Info = GuixProxied;
    type Other = SecretKey;
    const SIGNATURE_FIELD: &'static str = "Signature";

    fn generate() -> Self {
        GuixSecretKey::generate().unwrap()
    }

    fn item_in(&self, store_dir: &str, hash: &str, name: &str, nar: Vec<u8>, compression: Compression) -> Item {
        let signed = guix_signed_part(store_dir, hash, name, &nar);
        make_guix_item_signed(self, hash, name, nar, &[compression.name()], signed)
    }

    async fn narinfo(proxy: &Proxy, hash: &StorePathHash, client: Option<IpAddr>) -> Lookup<GuixProxied> {
        proxy.guix_narinfo(hash, client).await
    }

    async fn nar(proxy: &Proxy, item: &Item, compression: Compression) -> Option<NarSource> {
        proxy.guix_nar(&item.hash, compression, None).await
    }

    fn nar_url(item: &Item, compression: Compression) -> String {
        let basename = item.nar_url.rsplit('/').next().expect("a URL");
        formats::guix::nar_url(compression, basename)
    }

    fn summary(p: &GuixProxied) -> Summary {
        Summary {
            store_path: p.store_path.to_string(),
            nar_hash: p.nar_hash,
            nar_size: p.nar_size,
            references: p.references.iter().map(ToString::to_string).collect(),
            offers: p
                .urls
                .iter()
                .map(|u| Offer { url: u.url.clone(), compression: u.compression.clone(), file_size: u.file_size })
                .collect(),
        }
    }

    fn stored_text(p: &GuixProxied) -> String {
        p.render(&p.upstream_signature)
    }

    fn upstream_signature_verifies(p: &GuixProxied, key: &Self) -> bool {
        signing::guix::verify(&p.upstream_signature, &p.signed, &[key.to_public()]).is_ok()
    }
}
