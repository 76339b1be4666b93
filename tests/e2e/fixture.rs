//! The fixture store: built once per target directory by real Nix, shared by every test.
//!
//! A file lock serialises the build when several test processes start at once (nextest runs
//! each test in its own process); a marker file records a finished build.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::harness::{require_nix, NixEnv};

/// Bump when the fixture's contents change.
const VERSION: &str = "v1";

/// What a test needs to know about the fixture store.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Root of the chroot store (`<root>/nix/store`, `<root>/nix/var/nix/db/db.sqlite`).
    pub root: PathBuf,
    /// The top of the closure.
    pub top: String,
    /// Every path in the closure of `top`, sorted.
    pub closure: Vec<String>,
    /// The busybox added with `nix-store --add`: content-addressed (`fixed:r:sha256`).
    pub busybox: String,
    /// The 256 MiB single-file path.
    pub big: String,
    /// The derivation that built `top`.
    pub top_drv: String,
    /// A Nix environment with no substituters, for querying the fixture store.
    pub env: NixEnv,
}

impl Fixture {
    /// `--store <root>`.
    pub fn store_arg(&self) -> String {
        self.root.display().to_string()
    }
}

/// The fixture, built on first use.
pub fn get() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        require_nix();
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fixture-{VERSION}"));
        std::fs::create_dir_all(&base).unwrap();
        let lock = File::create(base.join("lock")).unwrap();
        lock.lock().unwrap();
        let env = NixEnv::new(&base, "");
        let root = base.join("root");
        let done = base.join("done");
        if !done.exists() {
            let _ = std::fs::remove_dir_all(&root);
            build(&env, &base, &root);
            std::fs::write(&done, "").unwrap();
        }
        let text = std::fs::read_to_string(base.join("paths")).unwrap();
        let get = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("{key}")).to_owned()
        };
        let store = root.display().to_string();
        let mut closure: Vec<String> =
            env.run("nix-store", &["--store", &store, "-qR", &get("top")]).lines().map(str::to_owned).collect();
        closure.sort();
        let top_drv = env.run("nix-store", &["--store", &store, "-qd", &get("top")]).trim().to_owned();
        Fixture { top: get("top"), big: get("big"), busybox: get("busybox"), closure, top_drv, root, env }
    })
}

fn build(env: &NixEnv, base: &Path, root: &Path) {
    let store = root.display().to_string();
    let bb_dir = base.join("busybox");
    let _ = std::fs::remove_dir_all(&bb_dir);
    std::fs::create_dir_all(bb_dir.join("bin")).unwrap();
    let busybox_bin = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("static busybox not found: install it with `apt-get install busybox-static`");
    std::fs::copy(busybox_bin, bb_dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", bb_dir.join("bin/sh")).unwrap();
    let busybox = env.run("nix-store", &["--store", &store, "--add", bb_dir.to_str().unwrap()]).trim().to_owned();
    let expr = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/fixture.nix");
    let expr = expr.to_str().unwrap();
    let build = |attr: &str| {
        env.run("nix-build", &["--store", &store, expr, "--argstr", "bb", &busybox, "-A", attr, "--no-out-link"])
            .trim()
            .to_owned()
    };
    let top = build("top");
    let big = build("big");
    std::fs::write(base.join("paths"), format!("top={top}\nbig={big}\nbusybox={busybox}\n")).unwrap();
}

/// A Guix-layout store (`/gnu/store`, DB in `var/guix/db`) made by real Nix in a chroot:
/// the `odd-files` closure of the Nix fixture, rebuilt under `/gnu/store`, and a flat
/// fixed-output file.
#[derive(Debug, Clone)]
pub struct GuixFixture {
    /// The root: `<root>/gnu/store`, `<root>/var/guix/db/db.sqlite`, `<root>/var/log/guix/drvs`.
    pub root: PathBuf,
    /// The `odd-files` path and its closure, sorted.
    pub odd: String,
    /// Every path in the closure of `odd`.
    pub closure: Vec<String>,
    /// A flat fixed-output file added with `nix-store --add-fixed sha256`.
    pub fixed_file: String,
    /// A Nix environment for querying it.
    pub env: NixEnv,
}

impl GuixFixture {
    /// The store URI Nix takes for it.
    pub fn store_uri(&self) -> String {
        guix_store_uri(&self.root)
    }
}

/// A Nix store URI for a Guix-layout chroot store at `root`.
pub fn guix_store_uri(root: &Path) -> String {
    let r = root.display();
    format!("local?store=/gnu/store&real={r}/gnu/store&state={r}/var/guix&log={r}/var/log/guix")
}

/// The Guix-layout fixture, built on first use.
pub fn guix() -> &'static GuixFixture {
    static FIXTURE: OnceLock<GuixFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let nix = get();
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("guix-fixture-{VERSION}"));
        std::fs::create_dir_all(&base).unwrap();
        let lock = File::create(base.join("lock")).unwrap();
        lock.lock().unwrap();
        let env = NixEnv::new(&base, "");
        let root = base.join("root");
        let uri = guix_store_uri(&root);
        let fixed_contents = b"a source tarball, as far as Guix knows\n".to_vec();
        if !base.join("done").exists() {
            let _ = std::fs::remove_dir_all(&root);
            let bb_dir = nix.root.parent().unwrap().join("busybox");
            let busybox = env.run("nix-store", &["--store", &uri, "--add", bb_dir.to_str().unwrap()]).trim().to_owned();
            let expr = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/fixture.nix");
            let odd = env
                .run(
                    "nix-build",
                    &[
                        "--store",
                        &uri,
                        expr.to_str().unwrap(),
                        "--argstr",
                        "bb",
                        &busybox,
                        "-A",
                        "odd",
                        "--no-out-link",
                    ],
                )
                .trim()
                .to_owned();
            let src = base.join("source.tar");
            std::fs::write(&src, &fixed_contents).unwrap();
            let fixed = env
                .run("nix-store", &["--store", &uri, "--add-fixed", "sha256", src.to_str().unwrap()])
                .trim()
                .to_owned();
            std::fs::write(base.join("paths"), format!("odd={odd}\nfixed={fixed}\n")).unwrap();
            std::fs::write(base.join("done"), "").unwrap();
        }
        let text = std::fs::read_to_string(base.join("paths")).unwrap();
        let get = |key: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_owned();
        let mut closure: Vec<String> =
            env.run("nix-store", &["--store", &uri, "-qR", &get("odd")]).lines().map(str::to_owned).collect();
        closure.sort();
        GuixFixture { root, odd: get("odd"), closure, fixed_file: get("fixed"), env }
    })
}
