//! `GET /<hash>.narinfo`: the path's metadata in the store's dialect (Nix or Guix), signed
//! with our keys, with a `Cache-Control` that Guix clients honour for hits and misses.
//!
//! Local answers, rendered and signed, are kept for a short while in the state's
//! `NarinfoCache`, so a repeated request costs no signature, no DB read and no hop to the
//! blocking pool. Narinfo requests never wait for NAR admission.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use formats::guix::{GuixNarInfo, GuixUrl, MIME_GUIX_NARINFO};
use formats::narinfo::{fingerprint, MIME_NARINFO};
use formats::{NarInfo, StorePathHash};
use signing::SecretKey;
use store_reader::PathInfo;
use upstream::Lookup;

use crate::compression::Compression;
use crate::error::AppError;
use crate::state::AppState;
use formats::Dialect;

/// `max-age` of a narinfo 404 that reflects upstream trouble rather than a real miss, so that
/// Guix clients ask again soon. (Nix 2.8 keeps every 404 for its own
/// `narinfo-cache-negative-ttl`, whatever it is told.)
const NOT_FOUND_FOR_NOW_MAX_AGE: u64 = 5;

/// `client` is the requester's IP address, for the proxy's per-client cap.
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    hash: &str,
    client: Option<IpAddr>,
) -> Result<Response, AppError> {
    let (body, mime) = match state.settings.dialect {
        Dialect::Nix => (nix_body(&state, hash, client).await, MIME_NARINFO),
        Dialect::Guix => (guix_body(&state, hash, client).await, MIME_GUIX_NARINFO),
    };
    let cache_control = |hit| HeaderValue::from_str(&state.cache_control(hit)).expect("ascii");
    match body {
        Ok(body) => Ok((
            [(header::CONTENT_TYPE, HeaderValue::from_static(mime)), (header::CACHE_CONTROL, cache_control(true))],
            body,
        )
            .into_response()),
        Err(AppError::NotFound) => {
            let mut response = AppError::NotFound.into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, cache_control(false));
            Ok(response)
        }
        Err(AppError::NotFoundForNow) => {
            let mut response = AppError::NotFoundForNow.into_response();
            let max_age = NOT_FOUND_FOR_NOW_MAX_AGE.min(state.settings.negative_ttl.as_secs());
            let value = HeaderValue::from_str(&format!("max-age={max_age}")).expect("ascii");
            response.headers_mut().insert(header::CACHE_CONTROL, value);
            Ok(response)
        }
        Err(e) => Err(e),
    }
}

/// What the proxy found, or the kind of 404 its answer calls for.
pub(super) fn proxied<T>(lookup: Lookup<T>) -> Result<T, AppError> {
    match lookup {
        Lookup::Found(t) => Ok(t),
        Lookup::Absent => Err(AppError::NotFound),
        Lookup::Unavailable => Err(AppError::NotFoundForNow),
    }
}

/// The local store first; on a miss, the proxy (which answers "absent" or "absent for now"
/// for any upstream trouble, so a narinfo is never a 5xx because of an upstream).
async fn nix_body(state: &Arc<AppState>, hash: &str, client: Option<IpAddr>) -> Result<Bytes, AppError> {
    if let Some(body) = local_body(state, hash).await? {
        return Ok(body);
    }
    let proxy = state.proxy.as_ref().ok_or(AppError::NotFound)?;
    let hash = StorePathHash::parse(hash).map_err(|_| AppError::BadRequest("invalid store path hash"))?;
    let mut info = proxied(proxy.narinfo(&hash, client).await)?;
    let fingerprint = info.fingerprint(state.store.store_dir());
    info.sigs.extend(state.signer.nix_keys().iter().map(|k| k.sign(&fingerprint)));
    Ok(info.render().into())
}

/// A Guix narinfo: of a local path, or else of a path the proxy fetched from a build farm,
/// whose signed text is kept byte for byte and signed again with our key (Guix reads one
/// `Signature`, so a node that trusts only subserve accepts it).
async fn guix_body(state: &Arc<AppState>, hash: &str, client: Option<IpAddr>) -> Result<Bytes, AppError> {
    if let Some(body) = local_body(state, hash).await? {
        return Ok(body);
    }
    let proxy = state.proxy.as_ref().ok_or(AppError::NotFound)?;
    let hash = StorePathHash::parse(hash).map_err(|_| AppError::BadRequest("invalid store path hash"))?;
    let proxied = proxied(proxy.guix_narinfo(&hash, client).await)?;
    let key = state.signer.guix_key();
    let signature = match key {
        Some(k) => k.sign_narinfo(&state.host, &proxied.signed)?,
        None => proxied.upstream_signature.clone(),
    };
    Ok(proxied.render(&signature).into())
}

/// The narinfo of a local path in the store's dialect, signed, or `None` if the store lacks
/// the path: from the narinfo cache while its entry is fresh (see `crate::narinfo_cache`),
/// else looked up, rendered and cached.
///
/// Narinfos of paths the baker wants are never cached: they change as soon as a baked file
/// is ready or evicted, and nothing tells the cache when.
async fn local_body(state: &Arc<AppState>, hash: &str) -> Result<Option<Bytes>, AppError> {
    if let Some(cached) = state.narinfo_cache.get(hash) {
        return Ok(cached);
    }
    let body = match super::lookup(state, hash).await {
        Ok(info) => {
            let body = Bytes::from(match state.settings.dialect {
                Dialect::Nix => render_nix_local(state, &info).await,
                Dialect::Guix => render_guix_local(state, &info).await?,
            });
            if state.baker.as_ref().is_some_and(|b| b.wants(info.nar_size)) {
                return Ok(Some(body));
            }
            Some(body)
        }
        Err(AppError::NotFound) => None,
        Err(e) => return Err(e),
    };
    state.narinfo_cache.insert(hash, body.clone());
    Ok(body)
}

/// A Nix narinfo of a local path: naming its first ready baked file, if any, else the
/// compression produced on the fly.
async fn render_nix_local(state: &Arc<AppState>, info: &PathInfo) -> String {
    match baked_offers(state, info).await.into_iter().next() {
        // A baked file, once ready, is what the narinfo names: with its size and hash.
        Some((compression, baked)) => render_with(
            state.store.store_dir(),
            state.signer.nix_keys(),
            compression,
            info,
            Some((baked.file_hash, baked.file_size)),
        ),
        None => render(state.store.store_dir(), state.signer.nix_keys(), state.nix_compression(), info),
    }
}

/// A Guix narinfo of a local path, signed with our first Guix key (if any).
async fn render_guix_local(state: &Arc<AppState>, info: &PathInfo) -> Result<String, AppError> {
    let key = state.signer.guix_key();
    let sign = |text: &str| key.map(|k| k.sign_narinfo(&state.host, text)).transpose();
    let baked = baked_offers(state, info).await;
    if baked.is_empty() {
        return Ok(render_guix(state.store.store_dir(), &state.settings.compressions, info, &sign)?);
    }
    // FileSize on every group or none: the baked files, and the bare NAR (NarSize).
    let mut groups: Vec<(Compression, Option<u64>)> = baked.iter().map(|(c, b)| (*c, Some(b.file_size))).collect();
    groups.push((Compression::None, Some(info.nar_size)));
    Ok(render_guix_groups(state.store.store_dir(), &groups, info, &sign)?)
}

/// The baked files of a local path that are ready, in the configured order; queues the
/// missing ones for baking (never waiting for them). Empty when baking is off or the path is
/// below the threshold.
pub(super) async fn baked_offers(state: &Arc<AppState>, info: &PathInfo) -> Vec<(Compression, upstream::Baked)> {
    let Some(baker) = state.baker.clone().filter(|b| b.considers(info.nar_size)) else { return Vec::new() };
    let (nar_hash, nar_size, root) = (info.nar_hash, info.nar_size, state.store.real_path(&info.path));
    let offers = state
        .admission
        .blocking(move || {
            let mut ready = Vec::new();
            for &compression in baker.compressions() {
                match baker.ready(&nar_hash, compression) {
                    Some(baked) => ready.push((compression, baked)),
                    None => baker.request(crate::bake::Job { root: root.clone(), nar_hash, nar_size, compression }),
                }
            }
            ready
        })
        .await;
    offers.unwrap_or_default()
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
                compression: c.name().to_owned(),
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
        compression: compression.name().to_owned(),
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
