//! Unit tests of [`resolve`](super::resolve): precedence, defaults, `[[store]]` tables, limits.

use std::path::PathBuf;
use std::time::Duration;

use upstream::ProxyConfig;

use super::*;
use crate::bake;
use crate::compression::Compression;
use formats::Dialect;

/// The one store of settings without `[[store]]` tables.
fn resolve1(args: &Options, env: &Env, file: &FileConfig) -> Result<StoreSettings, SettingsError> {
    resolve(args, env, file).map(|s| {
        assert_eq!(s.stores.len(), 1);
        s.stores.into_iter().next().unwrap()
    })
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env { vars: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), is_root: true, cores: 4 }
}

/// Flags that set store options.
fn flags(store: StoreOptions) -> Options {
    Options { store, ..Default::default() }
}

/// A config file's text, parsed.
fn parse(text: &str) -> FileConfig {
    FileConfig::parse(text, "test.toml").unwrap()
}

#[test]
fn defaults() {
    let all = resolve(&Options::default(), &env(&[]), &FileConfig::default()).unwrap();
    assert_eq!(all.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(all.state_dir, PathBuf::from("/var/lib/subserve"));
    let s = &all.stores[0];
    assert_eq!(s.prefix, "");
    assert_eq!(s.store.store_dir, "/nix/store");
    assert_eq!(s.store.real_store_dir, PathBuf::from("/nix/store"));
    assert_eq!(s.store.db, PathBuf::from("/nix/var/nix/db/db.sqlite"));
    assert_eq!(s.log_dir, PathBuf::from("/nix/var/log/nix/drvs"));
    assert_eq!(s.compressions, vec![Compression::None]);
    assert_eq!(s.dialect, Dialect::Nix);
    assert_eq!(s.priority, DEFAULT_PRIORITY);
    assert!(s.sign_key_files.is_empty());
}

/// The precedence table: each row sets the priority in some of the three sources.
#[test]
fn flag_beats_env_beats_file_beats_default() {
    // (flag, SUBSERVE_PRIORITY, file, expected)
    type Row = (Option<i32>, Option<&'static str>, Option<i32>, i32);
    let rows: [Row; 5] = [
        (Some(1), Some("2"), Some(3), 1),
        (None, Some("2"), Some(3), 2),
        (None, None, Some(3), 3),
        (Some(1), None, Some(3), 1),
        (None, None, None, DEFAULT_PRIORITY),
    ];
    for (flag, var, file, want) in rows {
        let args = flags(StoreOptions { priority: flag, ..Default::default() });
        let e = env(&var.map(|v| vec![("SUBSERVE_PRIORITY", v)]).unwrap_or_default());
        let f = FileConfig { store: StoreOptions { priority: file, ..Default::default() }, ..Default::default() };
        assert_eq!(resolve1(&args, &e, &f).unwrap().priority, want, "{flag:?} {var:?} {file:?}");
    }
}

#[test]
fn store_root_places_everything_under_it() {
    let args = flags(StoreOptions {
        store_root: Some("/tmp/x".into()),
        db: Some("/elsewhere.sqlite".into()),
        ..Default::default()
    });
    let s = resolve1(&args, &env(&[]), &FileConfig::default()).unwrap();
    assert_eq!(s.store.store_dir, "/nix/store");
    assert_eq!(s.store.real_store_dir, PathBuf::from("/tmp/x/nix/store"));
    assert_eq!(s.store.db, PathBuf::from("/elsewhere.sqlite"));
    assert_eq!(s.log_dir, PathBuf::from("/tmp/x/nix/var/log/nix/drvs"));
}

#[test]
fn key_files_from_each_source() {
    let e = env(&[("SUBSERVE_SIGN_KEY_FILE", "/a.sec, /b.sec")]);
    let s = resolve1(&Options::default(), &e, &FileConfig::default()).unwrap();
    assert_eq!(s.sign_key_files, vec![PathBuf::from("/a.sec"), PathBuf::from("/b.sec")]);
    let args = flags(StoreOptions { sign_key_files: Some(vec!["/c.sec".into()]), ..Default::default() });
    assert_eq!(resolve1(&args, &e, &FileConfig::default()).unwrap().sign_key_files, vec![PathBuf::from("/c.sec")]);
}

#[test]
fn bad_values_are_clear_errors() {
    let e = env(&[("SUBSERVE_PRIORITY", "high")]);
    let msg = resolve1(&Options::default(), &e, &FileConfig::default()).unwrap_err().to_string();
    assert!(msg.contains("SUBSERVE_PRIORITY") && msg.contains("high"), "{msg}");
    let e = env(&[("SUBSERVE_COMPRESSION", "gzip")]);
    assert!(resolve1(&Options::default(), &e, &FileConfig::default()).is_err());
    for dir in ["nix/store", "/nix/store/", "/", "/nix//store"] {
        let args = flags(StoreOptions { store_dir: Some(dir.into()), ..Default::default() });
        assert!(resolve1(&args, &env(&[]), &FileConfig::default()).is_err(), "{dir}");
    }
    let args = flags(StoreOptions { zstd_level: Some(30), ..Default::default() });
    assert!(resolve1(&args, &env(&[]), &FileConfig::default()).is_err());
    assert!(FileConfig::parse("listen = \"127.0.0.1:1\"\nbogus = 1\n", "test.toml").is_err());
}

#[test]
fn state_dir_for_non_root() {
    let mut e = env(&[("HOME", "/home/u")]);
    e.is_root = false;
    let s = resolve(&Options::default(), &e, &FileConfig::default()).unwrap();
    assert_eq!(s.state_dir, PathBuf::from("/home/u/.local/state/subserve"));
    e.vars.insert("XDG_STATE_HOME".into(), "/xdg".into());
    let s = resolve(&Options::default(), &e, &FileConfig::default()).unwrap();
    assert_eq!(s.state_dir, PathBuf::from("/xdg/subserve"));
}

#[test]
fn sizes() {
    assert_eq!(parse_size("1024"), Some(1024));
    assert_eq!(parse_size("50G"), Some(50 << 30));
    assert_eq!(parse_size("512m"), Some(512 << 20));
    assert_eq!(parse_size("2TiB"), Some(2 << 40));
    assert_eq!(parse_size("1KB"), Some(1024));
    for bad in ["", "G", "1.5G", "-1", "10X", "99999999999T"] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn upstreams_default_to_cache_nixos_org_and_can_be_turned_off() {
    let s = resolve1(&Options::default(), &env(&[]), &FileConfig::default()).unwrap();
    let proxy = s.proxy.unwrap();
    assert_eq!(proxy.upstreams.len(), 1);
    assert_eq!(proxy.upstreams[0].url, upstream::CACHE_NIXOS_ORG);
    assert_eq!(nix_keys(&proxy.upstreams[0])[0].to_string(), upstream::CACHE_NIXOS_ORG_KEY);
    assert_eq!(proxy.cache_dir, PathBuf::from("/var/lib/subserve/cache"));
    assert_eq!(proxy.max_size, ProxyConfig::DEFAULT_MAX_SIZE);
    let off = flags(StoreOptions { upstreams: Some(vec!["none".into()]), ..Default::default() });
    let upstreams = |s: StoreSettings| s.proxy.map(|p| p.upstreams.len());
    // The cache area stays, for baking, with no upstream.
    assert_eq!(upstreams(resolve1(&off, &env(&[]), &FileConfig::default()).unwrap()), Some(0));
    let off_and_no_bake = flags(StoreOptions { bake: Some("none".parse().unwrap()), ..off.store.clone() });
    assert_eq!(resolve1(&off_and_no_bake, &env(&[]), &FileConfig::default()).unwrap().proxy, None);
    let off = parse("upstream = []\n");
    assert_eq!(upstreams(resolve1(&Options::default(), &env(&[]), &off).unwrap()), Some(0));
    let e = env(&[("SUBSERVE_UPSTREAM", "none")]);
    assert_eq!(upstreams(resolve1(&Options::default(), &e, &FileConfig::default()).unwrap()), Some(0));
}

#[test]
fn flag_upstreams_take_flag_keys_and_need_one() {
    let key = "test-cache-1:gsudXaK4y8xy+ayOZ1frBxOQCDoQJ3kPKP1MMBKdb0g=";
    let args = flags(StoreOptions {
        upstreams: Some(vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2/".into()]),
        upstream_keys: Some(vec![key.into()]),
        cache_max_size: Some("1G".into()),
        ..Default::default()
    });
    let proxy = resolve1(&args, &env(&[]), &FileConfig::default()).unwrap().proxy.unwrap();
    assert_eq!(proxy.upstreams.len(), 2);
    assert!(proxy.upstreams.iter().all(|u| nix_keys(u)[0].to_string() == key));
    assert_eq!((proxy.upstreams[0].priority, proxy.upstreams[1].priority), (0, 1));
    assert_eq!(proxy.max_size, 1 << 30);
    let no_key = flags(StoreOptions { upstreams: Some(vec!["http://127.0.0.1:1".into()]), ..Default::default() });
    let msg = resolve1(&no_key, &env(&[]), &FileConfig::default()).unwrap_err().to_string();
    assert!(msg.contains("no trusted key"), "{msg}");
    let bad_url = flags(StoreOptions {
        upstreams: Some(vec!["ftp://x".into()]),
        upstream_keys: Some(vec![key.into()]),
        ..Default::default()
    });
    assert!(resolve1(&bad_url, &env(&[]), &FileConfig::default()).is_err());
    let bad_key = flags(StoreOptions {
        upstreams: Some(vec!["http://x".into()]),
        upstream_keys: Some(vec!["nope".into()]),
        ..Default::default()
    });
    assert!(resolve1(&bad_key, &env(&[]), &FileConfig::default()).is_err());
    let file =
        parse(&format!("[[upstream]]\nurl = \"http://127.0.0.1:3\"\nkeys = [\"{key}\"]\npriority = 5\ntimeout = 2\n"));
    let up = &resolve1(&Options::default(), &env(&[]), &file).unwrap().proxy.unwrap().upstreams[0];
    assert_eq!((up.priority, up.timeout), (5, Duration::from_secs(2)));
}

#[test]
fn example_config_parses() {
    let text = include_str!("../../../docs/subserve.example.toml");
    let file = parse(text);
    assert!(file.global.listen.is_some() && file.store.compression.is_some() && file.store.sign_key_files.is_some());
    let settings = resolve(&Options::default(), &env(&[]), &file).unwrap();
    assert_eq!(settings.listen.to_string(), "127.0.0.1:5000");
    let proxy = settings.stores[0].proxy.clone().expect("the example proxies cache.nixos.org");
    assert_eq!(proxy.upstreams[0].url, upstream::CACHE_NIXOS_ORG);
    assert_eq!(proxy.max_size, 50 << 30);
}

const TWO_STORES: &str = r#"
listen = "0.0.0.0:5000"
state-dir = "/srv/subserve"

[[store]]
prefix = "/nix"
store-root = "/srv/nix-root"
compression = "zstd"
upstream = []

[[store]]
prefix = "/guix"
store-dir = "/gnu/store"
narinfo-ttl = 600
"#;

#[test]
fn store_tables_serve_stores_side_by_side() {
    let file = parse(TWO_STORES);
    let s = resolve(&Options::default(), &env(&[]), &file).unwrap();
    assert_eq!(s.listen.to_string(), "0.0.0.0:5000");
    assert_eq!(s.stores.len(), 2);
    let (nix, guix) = (&s.stores[0], &s.stores[1]);
    assert_eq!((nix.prefix.as_str(), nix.dialect), ("/nix", Dialect::Nix));
    assert_eq!(nix.store.real_store_dir, PathBuf::from("/srv/nix-root/nix/store"));
    assert_eq!(nix.compressions, vec![Compression::Zstd]);
    assert!(nix.proxy.as_ref().unwrap().upstreams.is_empty());
    assert_eq!((guix.prefix.as_str(), guix.dialect), ("/guix", Dialect::Guix));
    assert_eq!(guix.store.db, PathBuf::from("/var/guix/db/db.sqlite"));
    assert_eq!(guix.narinfo_ttl, Duration::from_secs(600));
    // Each table starts from the defaults, not from the other table.
    assert_eq!(nix.narinfo_ttl, DEFAULT_NARINFO_TTL);
}

#[test]
fn store_tables_reject_ambiguity() {
    let file = parse(TWO_STORES);
    let flag = flags(StoreOptions { priority: Some(1), ..Default::default() });
    let msg = resolve(&flag, &env(&[]), &file).unwrap_err().to_string();
    assert!(msg.contains("--priority") && msg.contains("each table"), "{msg}");
    let msg = resolve(&Options::default(), &env(&[("SUBSERVE_DB", "/x")]), &file).unwrap_err().to_string();
    assert!(msg.contains("SUBSERVE_DB"), "{msg}");
    // Global settings still come from anywhere.
    let listen = Options {
        global: GlobalOptions { listen: Some("127.0.0.1:9".parse().unwrap()), ..Default::default() },
        ..Default::default()
    };
    assert_eq!(resolve(&listen, &env(&[]), &file).unwrap().listen.port(), Some(9));
    let cases = [
        (
            "compression = \"zstd\"\n[[store]]\nprefix = \"/a\"\nupstream = []\n",
            "test.toml: compression: a store's setting at the top level",
        ),
        (
            "[[store]]\nupstream = []\n[[store]]\nupstream = []\nstore-dir = \"/gnu/store\"\n",
            "test.toml: store[1].prefix: missing",
        ),
        (
            "[[store]]\nprefix = \"/a\"\nupstream = []\n[[store]]\nprefix = \"/a\"\nupstream = []\n",
            "store[2].prefix: two",
        ),
        ("[[store]]\nprefix = \"a/\"\n", "URL prefix"),
        ("[[store]]\nprefix = \"/a/../b\"\n", "URL prefix"),
        ("store = []\n", "serves nothing"),
        ("[[store]]\nprefix = \"/a\"\ncache-dir = \"/c\"\n[[store]]\nprefix = \"/b\"\ncache-dir = \"/c\"\n", "share"),
    ];
    for (text, want) in cases {
        let file = parse(text);
        let msg = resolve(&Options::default(), &env(&[]), &file).unwrap_err().to_string();
        assert!(msg.contains(want), "{text:?}: {msg}");
    }
    // A key of the wrong scope is refused as the file is read.
    let cases = [
        (
            "[[store]]\nprefix = \"/a\"\nlisten = \"127.0.0.1:1\"\n",
            "test.toml: store[1].listen: belongs at the top level",
        ),
        ("prefix = \"/a\"\n", "test.toml: prefix: belongs in a [[store]] table"),
        (
            "[[store]]\nprefix = \"/a\"\n[[store]]\nprefix = \"/b\"\nmax-streams = 3\n",
            "store[2].max-streams: belongs at the top level",
        ),
        ("[[store]]\nprefix = \"/a\"\nbogus = 1\n", "store[1].bogus: unknown key"),
    ];
    for (text, want) in cases {
        let msg = FileConfig::parse(text, "test.toml").unwrap_err().to_string();
        assert!(msg.contains(want), "{text:?}: {msg}");
    }
}

#[test]
fn each_store_gets_its_own_proxy_cache() {
    let text = "[[store]]\nprefix = \"/nix\"\n[[store]]\nprefix = \"/nix2\"\nstore-root = \"/r\"\n";
    let s = resolve(&Options::default(), &env(&[]), &parse(text)).unwrap();
    let dirs: Vec<_> = s.stores.iter().map(|s| s.proxy.as_ref().unwrap().cache_dir.clone()).collect();
    assert_eq!(dirs, [PathBuf::from("/var/lib/subserve/cache-nix"), PathBuf::from("/var/lib/subserve/cache-nix2")]);
    // One table needs no prefix, and keeps the unprefixed cache dir.
    let one = resolve(&Options::default(), &env(&[]), &parse("[[store]]\n")).unwrap();
    assert_eq!(one.stores[0].prefix, "");
    assert_eq!(one.stores[0].proxy.as_ref().unwrap().cache_dir, PathBuf::from("/var/lib/subserve/cache"));
}

#[test]
fn stream_caps_are_global() {
    let s = resolve(&Options::default(), &env(&[]), &FileConfig::default()).unwrap();
    assert_eq!(s.max_streams, crate::admission::default_max_streams(4));
    let e = env(&[("SUBSERVE_MAX_COMPRESSED_STREAMS", "3")]);
    let file = parse("max-streams = 7\n[[store]]\nprefix = \"/a\"\n");
    let s = resolve(&Options::default(), &e, &file).unwrap();
    assert_eq!((s.max_streams, s.max_compressed_streams), (7, 3));
    let zero = Options { global: GlobalOptions { max_streams: Some(0), ..Default::default() }, ..Default::default() };
    assert!(resolve(&zero, &env(&[]), &FileConfig::default()).is_err());
    assert!(FileConfig::parse("[[store]]\nmax-streams = 7\n", "test.toml").is_err());
}

#[test]
fn baking_defaults_and_limits() {
    let s = resolve1(&Options::default(), &env(&[]), &FileConfig::default()).unwrap();
    assert_eq!(s.bake.compressions, vec![Compression::Zstd]);
    assert_eq!(s.bake.min_size, bake::DEFAULT_BAKE_MIN_SIZE);
    assert_eq!(s.bake.levels.zstd, bake::DEFAULT_BAKE_ZSTD_LEVEL);
    assert!(s.bake.workers >= 1 && s.bake.roots.is_empty());
    let file = parse(
        "bake = \"zstd,xz\"\nbake-min-size = \"16M\"\nbake-workers = 3\nbake-zstd-level = 19\n\
         bake-roots = [\"/nix/store/00000000000000000000000000000000-a\"]\n",
    );
    let s = resolve1(&Options::default(), &env(&[]), &file).unwrap();
    assert_eq!(s.bake.compressions, vec![Compression::Zstd, Compression::Xz]);
    assert_eq!((s.bake.min_size, s.bake.workers, s.bake.levels.zstd), (16 << 20, 3, 19));
    assert_eq!(s.bake.roots.len(), 1);
    let e = env(&[("SUBSERVE_BAKE", "none")]);
    assert!(resolve1(&Options::default(), &e, &FileConfig::default()).unwrap().bake.compressions.is_empty());
    for (args, want) in [
        (flags(StoreOptions { bake: Some("gzip".parse().unwrap()), ..Default::default() }), "--bake"),
        (flags(StoreOptions { bake: Some("none,zstd".parse().unwrap()), ..Default::default() }), "--bake"),
        (flags(StoreOptions { bake_workers: Some(0), ..Default::default() }), "--bake-workers"),
        (flags(StoreOptions { bake_zstd_level: Some(22), ..Default::default() }), "--bake-zstd-level"),
        (flags(StoreOptions { bake_min_size: Some("big".into()), ..Default::default() }), "--bake-min-size"),
        (flags(StoreOptions { bake_roots: Some(vec!["/gnu/store/x".into()]), ..Default::default() }), "--bake-root"),
    ] {
        let msg = resolve1(&args, &env(&[]), &FileConfig::default()).unwrap_err().to_string();
        assert!(msg.contains(want), "{msg}");
    }
}

#[test]
fn a_guix_store_proxies_the_guix_build_farms() {
    let args = flags(StoreOptions { store_dir: Some("/gnu/store".into()), ..Default::default() });
    let proxy = resolve1(&args, &env(&[]), &FileConfig::default()).unwrap().proxy.unwrap();
    assert_eq!(proxy.dialect, formats::Dialect::Guix);
    let urls: Vec<&str> = proxy.upstreams.iter().map(|u| u.url.as_str()).collect();
    assert_eq!(urls, [upstream::GUIX_BORDEAUX, upstream::GUIX_CI]);
    assert!(proxy.upstreams.iter().all(|u| guix_keys(u).len() == 1));
    // A named farm implies its key; another upstream needs a sexp key.
    let farm = flags(StoreOptions { upstreams: Some(vec![format!("{}/", upstream::GUIX_CI)]), ..args.store.clone() });
    let up = &resolve1(&farm, &env(&[]), &FileConfig::default()).unwrap().proxy.unwrap().upstreams[0];
    assert_eq!(guix_keys(up)[0], signing::GuixPublicKey::parse(upstream::GUIX_CI_KEY).unwrap());
    let nix_key = flags(StoreOptions {
        upstreams: Some(vec!["http://127.0.0.1:1".into()]),
        upstream_keys: Some(vec!["test-cache-1:gsudXaK4y8xy+ayOZ1frBxOQCDoQJ3kPKP1MMBKdb0g=".into()]),
        ..args.store.clone()
    });
    let msg = resolve1(&nix_key, &env(&[]), &FileConfig::default()).unwrap_err().to_string();
    assert!(msg.contains("sexp"), "{msg}");
    let sexp = flags(StoreOptions {
        upstreams: Some(vec!["http://127.0.0.1:1".into()]),
        upstream_keys: Some(vec![upstream::GUIX_BORDEAUX_KEY.into()]),
        ..args.store
    });
    let up = &resolve1(&sexp, &env(&[]), &FileConfig::default()).unwrap().proxy.unwrap().upstreams[0];
    assert_eq!(guix_keys(up).len(), 1);
}

#[test]
fn listen_takes_tcp_addresses_and_unix_sockets() {
    assert_eq!("[::]:5000".parse::<ListenAddr>().unwrap().port(), Some(5000));
    assert_eq!("unix:/run/subserve.sock".parse::<ListenAddr>().unwrap(), ListenAddr::Unix("/run/subserve.sock".into()));
    assert!("unix:relative.sock".parse::<ListenAddr>().unwrap_err().contains("absolute"));
    assert!("head:5000".parse::<ListenAddr>().is_err());
    let file = parse("listen = \"unix:/run/s.sock\"\n");
    assert_eq!(file.global.listen.unwrap().to_string(), "unix:/run/s.sock");
}

/// A bad value is reported under the name the operator wrote: the flag, the variable, or the
/// file key with its `[[store]]` table.
#[test]
fn errors_name_the_flag_the_variable_or_the_file_key() {
    let error = |flags: &Options, env: &Env, file: &FileConfig| resolve(flags, env, file).unwrap_err().to_string();
    let none = Options::default();
    let no_file = FileConfig::default();
    let level = flags(StoreOptions { zstd_level: Some(30), ..Default::default() });
    assert_eq!(error(&level, &env(&[]), &no_file), "--zstd-level: 30 is not in 1..=19");
    assert_eq!(
        error(&none, &env(&[("SUBSERVE_ZSTD_LEVEL", "30")]), &no_file),
        "SUBSERVE_ZSTD_LEVEL: 30 is not in 1..=19"
    );
    assert_eq!(error(&none, &env(&[]), &parse("zstd-level = 30\n")), "test.toml: zstd-level: 30 is not in 1..=19");
    let tables = parse("[[store]]\nprefix = \"/a\"\n[[store]]\nprefix = \"/b\"\nzstd-level = 30\n");
    assert_eq!(error(&none, &env(&[]), &tables), "test.toml: store[2].zstd-level: 30 is not in 1..=19");
    let upstream = parse("[[store]]\n[[store.upstream]]\nurl = \"ftp://x\"\nkeys = []\n");
    assert_eq!(
        error(&none, &env(&[]), &upstream),
        "test.toml: store[1].upstream[1].url: \"ftp://x\" is not an http:// or https:// URL"
    );

    // A value of the wrong type: the variable's value, the file's key (flags: clap's own error).
    let msg = error(&none, &env(&[("SUBSERVE_NARINFO_TTL", "a day")]), &no_file);
    assert!(msg.starts_with("environment variable SUBSERVE_NARINFO_TTL: invalid value \"a day\": "), "{msg}");
    let msg = FileConfig::parse("[[store]]\nnarinfo-ttl = \"a day\"\n", "test.toml").unwrap_err().to_string();
    assert!(msg.starts_with("test.toml: store[1].narinfo-ttl: invalid type: string \"a day\""), "{msg}");
    let msg = FileConfig::parse("priority = 1\nnarinfo-ttl = -1\n", "test.toml").unwrap_err().to_string();
    assert!(msg.starts_with("test.toml: narinfo-ttl: invalid value: integer `-1`"), "{msg}");
    let msg = FileConfig::parse("priority = 1\nnarinfo-ttl = \n", "test.toml").unwrap_err().to_string();
    assert!(msg.starts_with("test.toml: line 2: "), "{msg}");

    // A setting that needs another names it in the same terms.
    let cert = |tls_cert| Options { global: GlobalOptions { tls_cert, ..Default::default() }, ..Default::default() };
    assert_eq!(error(&cert(Some("/c".into())), &env(&[]), &no_file), "--tls-cert: needs --tls-key too");
    assert_eq!(
        error(&none, &env(&[("SUBSERVE_TLS_KEY", "/k")]), &no_file),
        "SUBSERVE_TLS_KEY: needs SUBSERVE_TLS_CERT too"
    );
    assert_eq!(error(&none, &env(&[]), &parse("tls-cert = \"/c\"\n")), "test.toml: tls-cert: needs tls-key too");
}

/// Every option's flag and variable are in docs/config.md, so that adding one without
/// documenting it fails here.
#[test]
fn every_option_is_documented() {
    use clap::Args as _;
    let doc = include_str!("../../../docs/config.md");
    let command = StoreOptions::augment_args(GlobalOptions::augment_args(clap::Command::new("subserve")));
    for arg in command.get_arguments() {
        let long = arg.get_long().expect("every option has a long flag");
        let var = format!("SUBSERVE_{}", long.to_ascii_uppercase().replace('-', "_"));
        assert!(doc.contains(&format!("`--{long}")), "--{long} is not in docs/config.md");
        assert!(doc.contains(&var), "{var} is not in docs/config.md");
    }
}

fn nix_keys(up: &upstream::UpstreamConfig) -> &[signing::PublicKey] {
    match &up.trust {
        upstream::Trust::Nix(keys) => keys,
        upstream::Trust::Guix(_) => panic!("{} has Guix keys", up.url),
    }
}

fn guix_keys(up: &upstream::UpstreamConfig) -> &[signing::GuixPublicKey] {
    match &up.trust {
        upstream::Trust::Guix(keys) => keys,
        upstream::Trust::Nix(_) => panic!("{} has Nix keys", up.url),
    }
}

/// The audit trail: on by default in STATE_DIR/audit.sqlite; off by the flag (with or without
/// a value), the variable or the file; its retention and size cap checked.
#[test]
fn the_audit_trail_is_on_unless_turned_off() {
    use clap::Parser as _;
    let resolve_audit = |args: &[&str], vars: &[(&str, &str)], file: &str| {
        let cli =
            crate::cli::Cli::try_parse_from([&["subserve", "serve"], args].concat()).map_err(|e| e.to_string())?;
        let crate::cli::Command::Serve(serve) = cli.command else { unreachable!() };
        resolve(&serve.options, &env(vars), &parse(file)).map(|s| s.audit).map_err(|e| e.to_string())
    };
    let on = resolve_audit(&[], &[], "").unwrap().unwrap();
    assert_eq!(on.path, PathBuf::from("/var/lib/subserve/audit.sqlite"));
    assert_eq!(on.retention, Duration::from_secs(90 * 86_400));
    assert_eq!(on.max_bytes, 1 << 30);
    for (args, vars, file) in [
        (&["--audit=off"][..], &[][..], ""),
        (&["--audit", "false"], &[], ""),
        (&[], &[("SUBSERVE_AUDIT", "off")], ""),
        (&[], &[], "audit = false\n"),
        // The flag beats the file.
        (&["--audit=no"], &[], "audit = true\n"),
    ] {
        assert_eq!(resolve_audit(args, vars, file), Ok(None), "{args:?} {vars:?} {file:?}");
    }
    assert!(resolve_audit(&["--audit"], &[], "audit = false\n").unwrap().is_some(), "a bare --audit is on");
    let kept =
        resolve_audit(&["--audit-retention", "7", "--state-dir", "/srv/s"], &[("SUBSERVE_AUDIT_MAX_SIZE", "64M")], "")
            .unwrap()
            .unwrap();
    assert_eq!(
        (kept.path, kept.retention, kept.max_bytes),
        ("/srv/s/audit.sqlite".into(), Duration::from_secs(7 * 86_400), 64 << 20)
    );
    assert_eq!(
        resolve_audit(&["--audit-retention", "0"], &[], ""),
        Err("--audit-retention: must be at least 1 day".into())
    );
    assert_eq!(
        resolve_audit(&[], &[], "audit-max-size = \"10K\"\n"),
        Err("test.toml: audit-max-size: \"10K\" is too small: at least 1M".into())
    );
    let e = resolve_audit(&["--audit=maybe"], &[], "").unwrap_err();
    assert!(e.contains("maybe"), "{e}");
}

/// `--admin-allow` and `--trusted-proxy`: ranges or addresses, from each source; this host is
/// the admin by default.
#[test]
fn admin_and_proxy_ranges() {
    let all = resolve(&Options::default(), &env(&[]), &FileConfig::default()).unwrap();
    assert_eq!(all.access, crate::access::Access::default());
    let vars = env(&[("SUBSERVE_ADMIN_ALLOW", "10.0.0.0/8, ::1"), ("SUBSERVE_TRUSTED_PROXY", "127.0.0.1")]);
    let s = resolve(&Options::default(), &vars, &FileConfig::default()).unwrap();
    let text = |list: &[crate::access::Cidr]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(text(&s.access.admin_allow), ["10.0.0.0/8", "::1/128"]);
    assert_eq!(text(&s.access.trusted_proxies), ["127.0.0.1/32"]);
    let file = parse("admin-allow = [\"192.0.2.0/24\"]\ntrusted-proxies = [\"fd00::/8\"]\n");
    let s = resolve(&Options::default(), &env(&[]), &file).unwrap();
    assert_eq!(
        (text(&s.access.admin_allow), text(&s.access.trusted_proxies)),
        (vec!["192.0.2.0/24".to_owned()], vec!["fd00::/8".to_owned()])
    );
    let msg = FileConfig::parse("admin-allow = [\"everyone\"]\n", "test.toml").unwrap_err().to_string();
    assert!(msg.contains("admin-allow") && msg.contains("\"everyone\" is not an address range"), "{msg}");
    let vars = env(&[("SUBSERVE_TRUSTED_PROXY", "10.0.0.0/40")]);
    let msg = resolve(&Options::default(), &vars, &FileConfig::default()).unwrap_err().to_string();
    assert!(msg.starts_with("environment variable SUBSERVE_TRUSTED_PROXY: invalid value"), "{msg}");
}

/// `--allow`: everyone by default; else the ranges given, and the admins.
#[test]
fn allowed_readers() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let all = resolve(&Options::default(), &env(&[]), &FileConfig::default()).unwrap();
    assert!(all.access.allow.is_none() && all.access.may_read(ip("203.0.113.9")));
    let vars = env(&[("SUBSERVE_ALLOW", "10.1.0.0/16, 192.0.2.7")]);
    let s = resolve(&Options::default(), &vars, &FileConfig::default()).unwrap();
    let text: Vec<_> = s.access.allow.iter().flatten().map(ToString::to_string).collect();
    assert_eq!(text, ["10.1.0.0/16", "192.0.2.7/32"]);
    assert!(s.access.may_read(ip("10.1.200.3")) && s.access.may_read(ip("::ffff:192.0.2.7")));
    assert!(!s.access.may_read(ip("10.2.0.1")) && !s.access.may_read(ip("192.0.2.8")));
    assert!(s.access.may_read(ip("127.0.0.1")), "the admins may read too");
    use clap::Parser as _;
    let cli = crate::cli::Cli::try_parse_from(["subserve", "serve", "--allow", "fd00::/8", "--allow", "10.0.0.0/8"]);
    let crate::cli::Command::Serve(serve) = cli.unwrap().command else { unreachable!() };
    let s = resolve(&serve.options, &env(&[]), &parse("allow = [\"192.0.2.0/24\"]\n")).unwrap();
    assert_eq!(s.access.allow.iter().flatten().count(), 2, "flags win over the file");
    let s = resolve(&Options::default(), &env(&[]), &parse("allow = [\"192.0.2.0/24\"]\n")).unwrap();
    assert!(s.access.may_read(ip("192.0.2.200")) && !s.access.may_read(ip("198.51.100.1")));
}

/// `--publish`: all by default; `signed` with its trusted keys, and refused without keys, for
/// a Guix store, or with keys that do not parse; keys alone are refused too.
#[test]
fn publishing_policy() {
    use crate::settings::Publish;
    let key = signing::SecretKey::generate("farm-1").unwrap().to_public().to_string();
    let publish = |vars: &[(&str, &str)], file: &str| {
        resolve(&Options::default(), &env(vars), &parse(file))
            .map(|s| s.stores[0].publish.clone())
            .map_err(|e| e.to_string())
    };
    assert_eq!(publish(&[], ""), Ok(Publish::All));
    assert_eq!(publish(&[("SUBSERVE_PUBLISH", "all")], ""), Ok(Publish::All));
    let signed = publish(&[("SUBSERVE_PUBLISH", "signed"), ("SUBSERVE_PUBLISH_TRUSTED_KEY", &key)], "").unwrap();
    assert!(matches!(&signed, Publish::Signed(keys) if keys.len() == 1 && keys[0].to_string() == key));
    let file = format!("publish = \"signed\"\npublish-trusted-keys = [{key:?}]\n");
    assert_eq!(publish(&[], &file), Ok(signed));

    let err = publish(&[("SUBSERVE_PUBLISH", "signed")], "").unwrap_err();
    assert!(err.contains("SUBSERVE_PUBLISH") && err.contains("SUBSERVE_PUBLISH_TRUSTED_KEY"), "{err}");
    let err = publish(&[("SUBSERVE_PUBLISH_TRUSTED_KEY", &key)], "").unwrap_err();
    assert!(err.contains("only has a use with SUBSERVE_PUBLISH signed"), "{err}");
    let err = publish(&[], "publish = \"signed\"\npublish-trusted-keys = [\"farm-1:nonsense\"]\n").unwrap_err();
    assert!(err.contains("publish-trusted-keys") && err.contains("farm-1:nonsense"), "{err}");
    let err = FileConfig::parse("publish = \"some\"\n", "test.toml").unwrap_err().to_string();
    assert!(err.contains("publish") && err.contains("\"some\" is not a publishing policy: all or signed"), "{err}");
    let guix = format!("store-dir = \"/gnu/store\"\npublish = \"signed\"\npublish-trusted-keys = [{key:?}]\n");
    let err = publish(&[], &guix).unwrap_err();
    assert!(err.contains("a Guix store's DB keeps no signatures"), "{err}");
}
