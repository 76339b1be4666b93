//! The deployment files in `docker/`: systemd accepts the units as written (pointed at the
//! freshly built binary), their sandbox stays tight, and the command line and environment a
//! service unit gives subserve really serve a store with the key handed over as a credential.
//!
//! `systemd-analyze` (Debian's `systemd` package) checks the files offline: no running systemd
//! is needed. A missing `systemd-analyze` fails the tests with the install command.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use test_support::http::get;

use crate::fixture;
use crate::harness::{check, scratch, Server, SUBSERVE};

/// Where the units expect the binary (`cargo install … --root /usr/local`).
const INSTALLED_BINARY: &str = "/usr/local/bin/subserve";
/// The units `systemd-analyze verify` must accept without a word.
const UNITS: [&str; 3] = ["subserve.service", "subserve-guix.service", "subserve.socket"];
/// The service units and the worst `systemd-analyze security` exposure they may have
/// (0 is a fully sandboxed service, 10 an unprotected one; 2 is what a network daemon that
/// needs IP sockets and the store can reach).
const SERVICES: [&str; 2] = ["subserve.service", "subserve-guix.service"];
const MAX_EXPOSURE: f64 = 2.0;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker")
}

fn read_unit(name: &str) -> String {
    let path = docker_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Copies the units into a scratch directory with `ExecStart` pointing at the binary under
/// test, since `systemd-analyze verify` refuses a command that does not exist.
fn units_under_test(test: &str) -> PathBuf {
    let dir = scratch(test);
    for name in UNITS {
        let text = read_unit(name);
        std::fs::write(dir.join(name), text.replace(INSTALLED_BINARY, SUBSERVE)).unwrap();
    }
    dir
}

fn systemd_analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run systemd-analyze ({e}): the unit tests need it.\n\
             Install it with `apt-get install systemd` (or run scripts/test, which does)."
        ),
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = units_under_test("deploy-verify");
    let paths: Vec<String> = UNITS.iter().map(|name| dir.join(name).display().to_string()).collect();
    let args: Vec<&str> = ["verify"].into_iter().chain(paths.iter().map(String::as_str)).collect();
    let out = systemd_analyze(&args);
    check("systemd-analyze", &args, &out);
    // An unknown or misspelt key is only a warning (exit status 0), but it means a setting
    // the unit relies on silently does nothing. Other units' noise is not ours to judge.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|line| UNITS.iter().any(|name| line.contains(name))).collect();
    assert!(ours.is_empty(), "systemd-analyze verify complains about the units:\n{}", ours.join("\n"));
}

#[test]
fn services_are_sandboxed() {
    let dir = units_under_test("deploy-security");
    for name in SERVICES {
        let path = dir.join(name).display().to_string();
        let args = ["security", "--offline=true", path.as_str()];
        let out = systemd_analyze(&args);
        check("systemd-analyze", &args, &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let marker = format!("Overall exposure level for {name}:");
        let exposure: f64 = stdout
            .lines()
            .find_map(|line| line.split_once(&marker))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in the output of systemd-analyze security:\n{stdout}"));
        eprintln!("systemd-analyze security {name}: exposure {exposure}");
        let weak: Vec<&str> = stdout.lines().filter(|line| line.starts_with('✗')).collect();
        assert!(
            exposure <= MAX_EXPOSURE,
            "{name}: exposure {exposure} > {MAX_EXPOSURE}; unprotected:\n{}",
            weak.join("\n")
        );
    }
}

/// What subserve gets from one service unit: `ExecStart`'s arguments after `serve`,
/// `Environment=`, and the directories and credential systemd sets up for it.
struct ServiceUnit {
    args: Vec<String>,
    env: HashMap<String, String>,
    state_directory: String,
    cache_directory: String,
    /// `LoadCredential=ID:PATH`: the name the service sees, and the file it is read from.
    credential: (String, String),
}

impl ServiceUnit {
    fn parse(name: &str) -> Self {
        let text = read_unit(name);
        let values = |key: &str| -> Vec<String> {
            text.lines().filter_map(|line| line.strip_prefix(key)?.strip_prefix('=')).map(str::to_owned).collect()
        };
        let one = |key: &str| -> String {
            let found = values(key);
            assert_eq!(found.len(), 1, "{name}: expected one {key}=, found {found:?}");
            found[0].clone()
        };
        let exec_start = one("ExecStart");
        let mut words = exec_start.split_whitespace().map(str::to_owned);
        assert_eq!(words.next().as_deref(), Some(INSTALLED_BINARY), "{name}: ExecStart runs another binary");
        // The harness supplies the subcommand.
        assert_eq!(words.next().as_deref(), Some("serve"), "{name}: ExecStart is not `subserve serve`");
        let env = values("Environment")
            .iter()
            .map(|assignment| {
                let (key, value) = assignment.split_once('=').unwrap_or_else(|| panic!("{name}: {assignment}"));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        let load = one("LoadCredential");
        let (id, path) = load.split_once(':').unwrap_or_else(|| panic!("{name}: LoadCredential={load}"));
        ServiceUnit {
            args: words.collect(),
            env,
            state_directory: one("StateDirectory"),
            cache_directory: one("CacheDirectory"),
            credential: (id.to_owned(), path.to_owned()),
        }
    }

    /// Runs subserve as systemd would start this unit, in `dir`: the credential (`secret`)
    /// in a private directory in one of the two forms systemd makes it, the unit's state and
    /// cache directories under `dir`, against the chroot store at `store_root`.
    fn start(&self, dir: &Path, secret: &Path, store_root: &Path, form: Credential) -> Server {
        let credentials = dir.join("credentials");
        std::fs::create_dir(&credentials).unwrap();
        std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o500)).unwrap();
        let credential = credentials.join(&self.credential.0);
        std::fs::copy(secret, &credential).unwrap();
        std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o400)).unwrap();
        if form == Credential::Acl {
            grant_read_by_acl(&credential);
        }

        // The paths systemd makes for StateDirectory= and CacheDirectory= (as a system
        // service) are the ones the unit must give subserve.
        let state = (format!("/var/lib/{}", self.state_directory), dir.join("state"));
        let cache = (format!("/var/cache/{}", self.cache_directory), dir.join("cache"));
        assert_eq!(self.env.get("SUBSERVE_STATE_DIR"), Some(&state.0), "the state dir is not StateDirectory=");
        assert_eq!(self.env.get("SUBSERVE_CACHE_DIR"), Some(&cache.0), "the cache dir is not CacheDirectory=");
        let env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(key, value)| {
                let local = [&state, &cache].into_iter().find(|(unit_path, _)| unit_path == value);
                (key.clone(), local.map_or_else(|| value.clone(), |(_, path)| path.display().to_string()))
            })
            .collect();
        let args: Vec<String> = self
            .args
            .iter()
            .map(|arg| arg.replace("${CREDENTIALS_DIRECTORY}", &credentials.display().to_string()))
            .chain(["--store-root".to_owned(), store_root.display().to_string()])
            // Baking opens the cache directory, so the test sees it used.
            .chain(["--bake".to_owned(), "zstd".to_owned()])
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // The harness adds `--listen 127.0.0.1:0`, which beats the unit's SUBSERVE_LISTEN (still
        // parsed, so a malformed one fails the start).
        Server::start_with_env(&args, &env)
    }
}

/// The two forms of a `LoadCredential=` copy: mode 0400 owned by the service's user
/// (systemd 252, Debian 12, where the credentials file system has no ACLs), or mode 0400 owned
/// by root with a POSIX ACL entry that lets the service's user read it, which `stat` shows as
/// mode 0440 (newer systemd on kernels 6.4 and later). The test runs as one user, so the ACL
/// names that user, as systemd names the service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    Owned,
    Acl,
}

/// Adds `user:<this uid>:r--` and `mask::r--` to `path`'s access ACL, as systemd's
/// `write_credential` does, through the kernel's `system.posix_acl_access` attribute.
fn grant_read_by_acl(path: &Path) {
    let me = rustix::process::geteuid().as_raw();
    let mut raw = 2_u32.to_le_bytes().to_vec();
    // user::r--, user:<me>:r--, group::---, mask::r--, other::---
    for (tag, perm, id) in
        [(0x01_u16, 4_u16, u32::MAX), (0x02, 4, me), (0x04, 0, u32::MAX), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)]
    {
        raw.extend(tag.to_le_bytes());
        raw.extend(perm.to_le_bytes());
        raw.extend(id.to_le_bytes());
    }
    rustix::fs::setxattr(path, "system.posix_acl_access", &raw, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setting an ACL on {} (its file system needs POSIX ACLs): {e}", path.display()));
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o440, "the kernel shows the ACL's mask in the group bits");
}

fn keygen(dir: &Path, format: &str) -> (PathBuf, PathBuf) {
    let (secret, public) = (dir.join("key.sec"), dir.join("key.pub"));
    let mut command = Command::new(SUBSERVE);
    command.args(["keygen", "--format", format, "--secret-out"]).arg(&secret).arg("--public-out").arg(&public);
    if format == "nix" {
        command.args(["--name", "head-1"]);
    }
    check("subserve keygen", &[], &command.output().unwrap());
    (secret, public)
}

/// The state directory gets no generated key (the credential is the key) and the cache
/// directory is where the unit says.
fn assert_directories_used(dir: &Path) {
    assert!(dir.join("cache/index.sqlite").is_file(), "the cache directory was not used");
    assert!(dir.join("state/audit.sqlite").is_file(), "the state directory holds the audit trail");
    let generated: Vec<_> = std::fs::read_dir(dir.join("state"))
        .map(|d| {
            d.flatten().map(|e| e.file_name()).filter(|n| !n.to_string_lossy().starts_with("audit.sqlite")).collect()
        })
        .unwrap_or_default();
    assert!(generated.is_empty(), "subserve generated a key instead of using the credential: {generated:?}");
}

#[test]
fn nix_service_serves_with_its_credential() {
    let fx = fixture::get();
    let unit = ServiceUnit::parse("subserve.service");
    assert_eq!(unit.credential.1, "/etc/subserve/key.sec", "the README's key path");
    for form in [Credential::Owned, Credential::Acl] {
        let dir = scratch(&format!("deploy-nix-service-{form:?}"));
        let (secret, public) = keygen(&dir, "nix");
        let srv = unit.start(&dir, &secret, &fx.root, form);

        let hash = &fx.top["/nix/store/".len()..][..32];
        let narinfo = get(srv.addr, &format!("/{hash}.narinfo"));
        assert_eq!(narinfo.status, 200, "{form:?}");
        let public = std::fs::read_to_string(&public).unwrap();
        let (name, _) = public.trim().split_once(':').unwrap();
        let text = String::from_utf8(narinfo.body).unwrap();
        assert!(
            text.lines().any(|l| l.starts_with(&format!("Sig: {name}:"))),
            "{form:?}: not signed with the credential:\n{text}"
        );
        assert_directories_used(&dir);
    }
}

#[test]
fn guix_service_serves_with_its_credential() {
    let fx = fixture::guix();
    let unit = ServiceUnit::parse("subserve-guix.service");
    assert_eq!(unit.credential.1, "/etc/guix/signing-key.sec", "the key Guix nodes already trust");
    for form in [Credential::Owned, Credential::Acl] {
        let dir = scratch(&format!("deploy-guix-service-{form:?}"));
        let (secret, public) = keygen(&dir, "guix");
        let srv = unit.start(&dir, &secret, &fx.root, form);

        assert_eq!(get(srv.addr, "/signing-key.pub").body, std::fs::read(&public).unwrap(), "{form:?}");
        let hash = &fx.odd["/gnu/store/".len()..][..32];
        assert_eq!(get(srv.addr, &format!("/{hash}.narinfo")).status, 200, "{form:?}");
        assert_directories_used(&dir);
    }
}
