//! Narinfo composition: what a narinfo says, in the store's dialect, for a local path (its
//! DB row, the baked files ready for it) or a proxied one (re-signed with our key). The route
//! (`routes::narinfo`) decides where a path comes from and the HTTP around it; this module
//! decides the text, and nothing here knows of requests.

use std::sync::Arc;

use formats::guix::{GuixNarInfo, GuixUrl};
use formats::narinfo::fingerprint;
use formats::NarInfo;
use signing::SecretKey;
use store_reader::PathInfo;
use upstream::GuixProxied;

use crate::compression::Compression;
use crate::error::AppError;
use crate::state::AppState;

/// A local path's narinfo in the store's dialect, signed with the store's keys.
pub(crate) async fn local(state: &Arc<AppState>, info: &PathInfo) -> Result<String, AppError> {
    match state.settings.dialect {
        formats::Dialect::Nix => Ok(local_nix(state, info).await),
        formats::Dialect::Guix => local_guix(state, info).await,
    }
}

/// A proxied Nix narinfo, with our signatures added to the upstream's (which still verify:
/// nothing they cover changed).
pub(crate) fn proxied_nix(state: &AppState, mut info: NarInfo) -> String {
    let fingerprint = info.fingerprint(state.store.store_dir());
    info.sigs.extend(state.signer.nix_keys().iter().map(|k| k.sign(&fingerprint)));
    info.render()
}

/// A proxied Guix narinfo: its signed text kept byte for byte and signed again with our key
/// (Guix reads one `Signature`, so a node that trusts only subserve accepts it), or with the
/// upstream's signature when we have no key.
pub(crate) fn proxied_guix(state: &AppState, proxied: &GuixProxied) -> Result<String, AppError> {
    let signature = match state.signer.guix_key() {
        Some(k) => k.sign_narinfo(&state.host, &proxied.signed)?,
        None => proxied.upstream_signature.clone(),
    };
    Ok(proxied.render(&signature))
}

/// A Nix narinfo of a local path: naming its first ready baked file, with its size and hash;
/// else the first compression it will be baked in (a client that asks before the bake is
/// done follows the bake as it is written); else the compression produced on the fly.
async fn local_nix(state: &Arc<AppState>, info: &PathInfo) -> String {
    let plan = bake_plan(state, info).await;
    let keys = state.signer.nix_keys();
    match (plan.ready.first(), plan.coming.first()) {
        (Some((compression, baked)), _) => {
            render_with(state.store.store_dir(), keys, *compression, info, Some((baked.file_hash, baked.file_size)))
        }
        (None, Some(&compression)) => render(state.store.store_dir(), keys, compression, info),
        (None, None) => render(state.store.store_dir(), keys, state.nix_compression(), info),
    }
}

/// A Guix narinfo of a local path, signed with our Guix key (if any).
async fn local_guix(state: &Arc<AppState>, info: &PathInfo) -> Result<String, AppError> {
    let key = state.signer.guix_key();
    let sign = |text: &str| key.map(|k| k.sign_narinfo(&state.host, text)).transpose();
    let baked = bake_plan(state, info).await.ready;
    if baked.is_empty() {
        return Ok(render_guix(state.store.store_dir(), &state.settings.compressions, info, &sign)?);
    }
    // FileSize on every group or none: the baked files, and the bare NAR (NarSize).
    let mut groups: Vec<(Compression, Option<u64>)> = baked.iter().map(|(c, b)| (*c, Some(b.file_size))).collect();
    groups.push((Compression::None, Some(info.nar_size)));
    Ok(render_guix_groups(state.store.store_dir(), &groups, info, &sign)?)
}

/// What baking offers for a local path: the baked files ready, and the compressions that will
/// be baked (queued now, never waited for). Both empty when baking is off, the path is below
/// the threshold, or it is not worth baking (see `Baker::worth_baking`).
#[derive(Default)]
struct BakePlan {
    ready: Vec<(Compression, upstream::Baked)>,
    coming: Vec<Compression>,
}

async fn bake_plan(state: &Arc<AppState>, info: &PathInfo) -> BakePlan {
    let Some(baker) = state.baker.clone().filter(|b| b.considers(info.nar_size)) else { return BakePlan::default() };
    let (nar_hash, nar_size, root) = (info.nar_hash, info.nar_size, state.store.real_path(&info.path));
    let plan = state
        .admission
        .blocking(move || {
            let mut plan = BakePlan::default();
            let worth = baker.worth_baking(&root, &nar_hash, nar_size);
            for &compression in baker.compressions() {
                match baker.ready(&nar_hash, compression) {
                    Some(baked) => plan.ready.push((compression, baked)),
                    None if worth => {
                        plan.coming.push(compression);
                        baker.request(crate::bake::Job { root: root.clone(), nar_hash, nar_size, compression });
                    }
                    None => {}
                }
            }
            plan
        })
        .await;
    plan.unwrap_or_default()
}

/// Signs the text a Guix signature covers; `None` leaves the narinfo unsigned.
pub(crate) type GuixSigner<'a> = dyn Fn(&str) -> Result<Option<String>, signing::Error> + 'a;

/// Renders a Guix narinfo with one URL group per offered compression, signed by `sign` (which
/// gets the exact text the signature covers). `FileSize` only when every group is the bare
/// NAR: sizes of live compression are unknown, and Guix needs them on all groups or none.
pub(crate) fn render_guix(
    store_dir: &str,
    compressions: &[Compression],
    info: &PathInfo,
    sign: &GuixSigner<'_>,
) -> Result<String, signing::Error> {
    let sized = compressions.iter().all(|c| *c == Compression::None);
    let groups: Vec<(Compression, Option<u64>)> =
        compressions.iter().map(|&c| (c, sized.then_some(info.nar_size))).collect();
    render_guix_groups(store_dir, &groups, info, sign)
}

/// Renders a Guix narinfo with the given URL groups and their `FileSize`s (all or none).
pub(crate) fn render_guix_groups(
    store_dir: &str,
    groups: &[(Compression, Option<u64>)],
    info: &PathInfo,
    sign: &GuixSigner<'_>,
) -> Result<String, signing::Error> {
    let basename = info.path.basename();
    let mut narinfo = GuixNarInfo {
        store_path: info.path.absolute(store_dir),
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: info.references.iter().map(|r| r.basename()).collect(),
        deriver: info.deriver.as_ref().map(|d| d.basename()),
        signature: None,
        urls: groups
            .iter()
            .map(|&(c, file_size)| GuixUrl {
                url: formats::guix::nar_url(c, &basename),
                compression: c.into(),
                file_size,
            })
            .collect(),
    };
    narinfo.signature = sign(&narinfo.signed_part())?;
    Ok(narinfo.render())
}

/// The URL of `info`'s NAR with `compression` (see `formats::compression::nar_file_name`).
pub(crate) fn nar_url(info: &PathInfo, compression: Compression) -> String {
    format!("nar/{}", formats::compression::nar_file_name(info.path.hash(), &info.nar_hash, compression))
}

/// Renders the narinfo, keeping the signatures the DB has and adding one per key in `keys`.
pub(crate) fn render(store_dir: &str, keys: &[SecretKey], compression: Compression, info: &PathInfo) -> String {
    render_with(store_dir, keys, compression, info, None)
}

/// Like [`render`], with the `FileHash` and `FileSize` of a baked file of that compression.
pub(crate) fn render_with(
    store_dir: &str,
    keys: &[SecretKey],
    compression: Compression,
    info: &PathInfo,
    file: Option<(formats::NarHash, u64)>,
) -> String {
    let store_path = info.path.absolute(store_dir);
    let full_refs: Vec<String> = info.references.iter().map(|r| r.absolute(store_dir)).collect();
    let fp = fingerprint(&store_path, &info.nar_hash, info.nar_size, &full_refs);
    let mut sigs = info.sigs.clone();
    sigs.extend(keys.iter().map(|k| k.sign(&fp)));
    // The bare NAR's file is the NAR itself; other sizes are known once baked, and unknown
    // when compressed on the fly.
    let file = file.or((compression == Compression::None).then_some((info.nar_hash, info.nar_size)));
    NarInfo {
        store_path,
        url: nar_url(info, compression),
        compression: compression.into(),
        file_hash: file.map(|f| f.0),
        file_size: file.map(|f| f.1),
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: info.references.iter().map(|r| r.basename()).collect(),
        deriver: info.deriver.as_ref().map(|d| d.basename()),
        sigs,
        ca: info.ca.clone(),
    }
    .render()
}

#[cfg(test)]
mod tests {
    use formats::{NarHash, StorePath};
    use signing::PublicKey;

    use super::*;

    fn info() -> PathInfo {
        let p = |s: &str| StorePath::from_basename(s).unwrap();
        PathInfo {
            path: p("i9pmrzmpshapij2kin22pff6fc2adavx-hello"),
            nar_hash: NarHash::parse("sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw").unwrap(),
            nar_size: 120,
            references: vec![p("0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb-dep"), p("i9pmrzmpshapij2kin22pff6fc2adavx-hello")],
            deriver: Some(p("1b8m03r63zqhnjf7l5wnldhh7c134ap5-hello.drv")),
            sigs: vec!["cache.example.org-1:AAAA".into()],
            ca: None,
            registration_time: 0,
        }
    }

    #[test]
    fn keeps_db_signatures_and_adds_one_per_key() {
        let keys = [SecretKey::generate("first-1").unwrap(), SecretKey::generate("second-1").unwrap()];
        let text = render("/nix/store", &keys, Compression::Zstd, &info());
        let parsed = NarInfo::parse(&text).unwrap();
        assert_eq!(parsed.sigs.len(), 3);
        assert!(parsed.sigs.contains(&"cache.example.org-1:AAAA".to_owned()));
        let fp = parsed.fingerprint("/nix/store");
        for key in &keys {
            let public: PublicKey = key.to_public();
            assert!(signing::verify_any(&[public], &fp, &parsed.sigs), "{}", key.name());
        }
    }

    #[test]
    fn fields_follow_the_compression() {
        let info = info();
        let text = render("/nix/store", &[], Compression::Zstd, &info);
        let want = "StorePath: /nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello\n\
             URL: nar/i9pmrzmpshapij2kin22pff6fc2adavx-04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw.nar.zst\n\
             Compression: zstd\n\
             NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\n\
             NarSize: 120\n\
             References: 0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb-dep i9pmrzmpshapij2kin22pff6fc2adavx-hello\n\
             Deriver: 1b8m03r63zqhnjf7l5wnldhh7c134ap5-hello.drv\n\
             Sig: cache.example.org-1:AAAA\n";
        assert_eq!(text, want);
        let bare = NarInfo::parse(&render("/nix/store", &[], Compression::None, &info)).unwrap();
        assert_eq!(
            (bare.compression.as_str(), bare.file_hash, bare.file_size),
            ("none", Some(info.nar_hash), Some(120))
        );
        assert!(bare.url.ends_with(".nar"));
        let xz = NarInfo::parse(&render("/nix/store", &[], Compression::Xz, &info)).unwrap();
        assert_eq!((xz.compression.as_str(), xz.file_hash, xz.file_size), ("xz", None, None));
        assert!(xz.url.ends_with(".nar.xz"));
    }
}
