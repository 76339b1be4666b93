//! Running the tools: the `subserve` binary as a child process, Nix commands with an
//! isolated configuration (own `NIX_CONF_DIR`, own `XDG_CACHE_HOME`), and a static file
//! server for upstream caches.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Path of the binary under test, built by cargo for this test target.
pub const SUBSERVE: &str = env!("CARGO_BIN_EXE_subserve");

/// Fails loudly, with the install command, when the Nix tools are missing.
pub fn require_nix() {
    let ok = Command::new("nix-store").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "nix-store not found: the end-to-end tests need the real Nix client.\n\
         Install it with `apt-get install nix-bin` (or run scripts/test, which does)."
    );
}

/// A scratch directory for one test, under cargo's target dir, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An isolated Nix configuration: its own conf dir and client cache, so neither the host's
/// `/etc/nix/nix.conf` nor an earlier run's cached narinfos change what a test sees.
#[derive(Debug, Clone)]
pub struct NixEnv {
    /// Holds `nix.conf`.
    pub conf_dir: PathBuf,
    /// `XDG_CACHE_HOME`, fresh for every environment.
    pub cache_dir: PathBuf,
}

impl NixEnv {
    /// Creates the environment in `dir` with `extra` appended to a base nix.conf that works
    /// as root without network.
    pub fn new(dir: &Path, extra: &str) -> Self {
        let conf_dir = dir.join("nix-conf");
        let cache_dir = dir.join("xdg-cache");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::create_dir_all(&cache_dir).unwrap();
        let base = "build-users-group =\nexperimental-features = nix-command\nsandbox = true\n\
                    substituters =\nconnect-timeout = 5\n";
        std::fs::write(conf_dir.join("nix.conf"), format!("{base}{extra}\n")).unwrap();
        Self { conf_dir, cache_dir }
    }

    /// A command for `program` with this environment.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("NIX_CONF_DIR", &self.conf_dir)
            .env("XDG_CACHE_HOME", &self.cache_dir)
            .env("HOME", self.cache_dir.parent().unwrap())
            .env_remove("NIX_REMOTE")
            .env_remove("NIX_PATH")
            .stdin(Stdio::null());
        c
    }

    /// Runs `program args`, asserting success; returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(program).args(args).output().unwrap();
        check(program, args, &out);
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Panics with the command's output unless it succeeded.
pub fn check(program: &str, args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `subserve serve`, stopped with SIGTERM on drop.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `subserve serve --listen 127.0.0.1:0 <args>` and waits until it says where it
    /// listens (the kernel picks the port: no pick-then-bind race).
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        // Tests never reach outside 127.0.0.1: no default upstream unless a test names one.
        let no_proxy: &[&str] = if args.contains(&"--upstream") { &[] } else { &["--upstream", "none"] };
        // Baking costs CPU in the background; only the tests about it turn it on.
        let no_bake: &[&str] = if args.contains(&"--bake") { &[] } else { &["--bake", "none"] };
        Self::spawn(&[no_proxy, no_bake, args].concat(), env)
    }

    /// Starts `subserve serve --listen 127.0.0.1:0 --config <file>` with nothing else: for
    /// `[[store]]` tables, which refuse per-store flags. Each table must say `upstream = []`
    /// (or name 127.0.0.1 upstreams), as the file is all the server is told.
    pub fn start_config(config: &Path) -> Self {
        let text = std::fs::read_to_string(config).unwrap();
        let tables = text.matches("[[store]]").count();
        assert!(
            tables > 0 && text.matches("upstream = []").count() + text.matches("[[store.upstream]]").count() >= tables,
            "every [[store]] table of a test config must set its upstreams"
        );
        Self::spawn(&["--config", config.to_str().unwrap()], &[])
    }

    /// [`Server::start`] on the fixture store, its state in `dir/state`, with `extra` flags.
    pub fn on_fixture(dir: &Path, extra: &[&str]) -> Self {
        let root = crate::fixture::get().store_arg();
        let state = dir.join("state");
        Self::start(&[&["--store-root", root.as_str(), "--state-dir", state.to_str().unwrap()], extra].concat())
    }

    /// Like [`Server::start`], under a descriptor limit of `nofile` (soft and hard), as a
    /// service on a default system gets.
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Self {
        let limit = format!("--nofile={nofile}:{nofile}");
        let mut command = Command::new("prlimit");
        command.args([limit.as_str(), "--", SUBSERVE]);
        Self::spawn_command(command, &[&["--upstream", "none", "--bake", "none"], args].concat(), &[])
    }

    /// Like [`Server::start`], as the unprivileged user `nobody`.
    pub fn start_as_nobody(args: &[&str]) -> Self {
        let mut command = Command::new("setpriv");
        command.args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--", SUBSERVE]);
        Self::spawn_command(command, &[&["--upstream", "none", "--bake", "none"], args].concat(), &[])
    }

    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_command(Command::new(SUBSERVE), args, env)
    }

    fn spawn_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("SUBSERVE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn subserve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
                if let Some(addr) = listen_addr(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("subserve did not start:\n{}", log.lock().unwrap());
            }
        };
        Self { child, addr, log }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Peak resident memory of the server so far, in MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib / 1024.0
    }

    /// The server's threads right now (`Threads` of /proc/PID/status).
    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).expect("Threads")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL, as a crash or the OOM killer would, and reaps it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("subserve did not stop on SIGTERM within 10 s");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn listen_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("serving") {
        return None;
    }
    // A text line has listen=ADDR; a JSON one (--log-format json) "listen":"ADDR".
    if let Some(at) = line.find("\"listen\":\"") {
        let rest = &line[at + "\"listen\":\"".len()..];
        return rest.split('"').next()?.parse().ok();
    }
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// `python3 -m http.server` on a directory: a static server no one here wrote. Its request log
/// tells how often each file was fetched.
pub struct StaticServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl StaticServer {
    /// Serves `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, 0)
    }

    /// Serves `dir` on `port` (0: any free port), e.g. again on the port of a stopped one.
    pub fn start_on(dir: &Path, port: u16) -> Self {
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the proxy tests: apt-get install python3");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port: u16 =
            first.split(" port ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, log2) = (child.stderr.take().unwrap(), Arc::clone(&log));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line);
            }
        });
        Self { child, url: format!("http://127.0.0.1:{port}"), log }
    }

    /// How many GETs asked for `path`.
    pub fn gets(&self, path: &str) -> usize {
        let needle = format!("\"GET {path} ");
        self.log.lock().unwrap().iter().filter(|l| l.contains(&needle)).count()
    }

    /// The `/nar/...` paths asked for, in order.
    pub fn nar_gets(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                l.split("\"GET ").nth(1)?.split(' ').next().filter(|p| p.starts_with("/nar/")).map(str::to_owned)
            })
            .collect()
    }

    /// Kills the server.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop();
    }
}
