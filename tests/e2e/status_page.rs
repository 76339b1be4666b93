//! The status page in a real browser: Debian's Chromium, headless, loads `/` from the
//! `subserve` binary serving the fixture. The page it renders shows the figures `/metrics`
//! shows at the same moment; it logs nothing to the console (no script, and the page's
//! Content-Security-Policy blocks nothing it uses); it renders at a desktop's and a phone's
//! width. A missing Chromium fails the test with the command that installs it.
//!
//! `UPDATE_EXPECT=1` also writes the desktop screenshot to `docs/status-page.png`
//! (`scripts/status-page-screenshot` does that).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::hash_part;
use test_support::http::get;

use crate::fixture;
use crate::harness::{scratch, Server};

/// Fails loudly, with the install command, when Chromium is missing.
fn chromium() -> PathBuf {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        let ok = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
        ok.then(|| PathBuf::from(name))
    });
    found.unwrap_or_else(|| {
        panic!(
            "chromium not found: the status page test needs a real browser.\n\
             Install it with `apt-get install chromium` (or run scripts/test, which does)."
        )
    })
}

/// What headless Chromium made of a URL: the DOM after load, or a screenshot; and its log.
struct Run {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=…`), its profile
/// in `dir`, for at most two minutes.
fn run_chromium(dir: &Path, url: &str, args: &[&str]) -> Run {
    // One profile for the test's runs, which follow each other.
    let profile = dir.join("chromium-profile");
    let mut child = Command::new(chromium())
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium {args:?} {url} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run { stdout: out.join().unwrap(), stderr: err.join().unwrap() };
    assert!(status.success(), "chromium {args:?} {url} failed ({status}):\n{}", run.stderr);
    run
}

/// The text of the element with `id` in `dom`.
fn by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\">")).unwrap_or_else(|| panic!("#{id} missing from:\n{dom}"));
    let text = &dom[start + id.len() + 6..];
    &text[..text.find('<').unwrap()]
}

/// The sum of a metric's samples (every label set) whose labels contain `labels`.
fn metric_sum(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The width and height a PNG file's header gives.
fn png_size(file: &Path) -> (u32, u32) {
    let bytes = std::fs::read(file).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", file.display());
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn the_status_page_renders_in_chromium_with_the_figures_of_metrics() {
    let fx = fixture::get();
    let dir = scratch("status-page");
    // Baking on and an upstream that is down, so that every part of the page has something
    // to show (the upstream on 127.0.0.1 is never reached: nothing listens on port 9).
    let srv = Server::on_fixture(
        &dir,
        &[
            "--compression",
            "none",
            "--bake",
            "zstd",
            "--upstream",
            "http://127.0.0.1:9",
            "--upstream-key",
            "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
        ],
    );

    // Some traffic: every narinfo of the closure, two NARs, one miss (which the down upstream
    // cannot answer either).
    let mut nars = 0u64;
    let mut nar_bytes = 0u64;
    for path in fx.closure.iter().filter(|p| **p != fx.big) {
        let narinfo = get(srv.addr, &format!("/{}.narinfo", hash_part(path)));
        assert_eq!(narinfo.status, 200);
        if nars < 2 {
            let text = String::from_utf8(narinfo.body).unwrap();
            let url = text.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
            let nar = get(srv.addr, &format!("/{url}"));
            assert_eq!(nar.status, 200);
            nars += 1;
            nar_bytes += nar.body.len() as u64;
        }
    }
    assert_eq!(get(srv.addr, "/0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb.narinfo").status, 404);
    let narinfos = fx.closure.len() as u64; // all but the big one, and the miss

    // Bodies are counted when they end, which may be just after the client has read them:
    // wait until /metrics has them all, then take the page at that moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let text = String::from_utf8(get(srv.addr, "/metrics").body).unwrap();
        let audited = text.lines().find_map(|l| l.strip_prefix("subserve_audit_records_written_total "));
        let counted = metric_sum(&text, "subserve_http_requests_total", "kind=\"narinfo\"") == narinfos
            && metric_sum(&text, "subserve_http_requests_total", "kind=\"nar\"") == nars
            && audited.and_then(|n| n.parse::<u64>().ok()) == Some(narinfos + nars);
        if counted {
            break text;
        }
        assert!(Instant::now() < deadline, "the requests never all showed in /metrics:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let url = format!("{}/", srv.url());
    let page = run_chromium(&dir, &url, &["--dump-dom"]);
    let dom = &page.stdout;
    assert_eq!(by_id(dom, "narinfo-requests"), narinfos.to_string(), "narinfos, as /metrics counts them");
    assert_eq!(by_id(dom, "nar-requests"), nars.to_string());
    assert_eq!(by_id(dom, "nar-bytes"), nar_bytes.to_string());
    assert_eq!(
        by_id(dom, "nar-bytes"),
        metric_sum(&metrics, "subserve_http_response_bytes_total", "kind=\"nar\"").to_string(),
        "NAR bytes, as /metrics counts them"
    );
    for shown in [
        format!("substituters = {}", srv.url()),
        "trusted-public-keys = ".into(),
        "Busiest clients".into(),
        "http://127.0.0.1:9".into(),
        "<h3>Cache</h3>".into(),
        "<h3>Baking</h3>".into(),
    ] {
        assert!(dom.contains(&shown), "{shown:?} missing from the rendered page:\n{dom}");
    }
    // No script ran, and nothing was blocked: Chromium logs any console message, CSP
    // violations included, as `CONSOLE`.
    let console: Vec<&str> = page.stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages:\n{}", console.join("\n"));

    // A desktop's and a phone's width.
    for (file, size) in [("desktop.png", "1100,1500"), ("phone.png", "390,844")] {
        let shot = dir.join(file);
        let run =
            run_chromium(&dir, &url, &[&format!("--screenshot={}", shot.display()), &format!("--window-size={size}")]);
        let console: Vec<&str> = run.stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
        assert!(console.is_empty(), "console messages:\n{}", console.join("\n"));
        let (w, h) = png_size(&shot);
        assert!(w > 300 && h > 300, "{file}: {w}x{h}");
    }
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/status-page.png");
        std::fs::copy(dir.join("desktop.png"), &docs).unwrap();
        eprintln!("wrote {}", docs.display());
    }
}
