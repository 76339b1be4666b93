//! libgcrypt, an implementation no one here wrote, through Debian's guile-3.0 and
//! guile-gcrypt and `signing/tests/guile/gcrypt-check.scm`, which signs and checks narinfos
//! the way `guix publish` and `guix substitute` do.

use std::path::Path;
use std::process::Command;

/// What to install when Guile or guile-gcrypt is missing.
pub const INSTALL_HINT: &str = "the libgcrypt cross-check needs Guile with guile-gcrypt: run \
     `apt-get install guile-3.0 guile-gcrypt` (Debian 12 or later)";

/// Runs the Guile script with `args` (`genkey SECRET PUBLIC`, `sign ...`, `verify PUBLIC
/// NARINFO...`: see the script) and returns its standard output, failing (never skipping)
/// with the install command if Guile or guile-gcrypt is missing.
pub fn gcrypt(args: &[&Path]) -> String {
    let probe = Command::new("guile").args(["--no-auto-compile", "-c", "(use-modules (gcrypt pk-crypto))"]).output();
    match probe {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            panic!("{INSTALL_HINT}\n(gcrypt pk-crypto) did not load: {}", String::from_utf8_lossy(&output.stderr))
        }
        Err(error) => panic!("{INSTALL_HINT}\n(cannot run guile: {error})"),
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../signing/tests/guile/gcrypt-check.scm");
    let output = Command::new("guile").arg("--no-auto-compile").arg(script).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "gcrypt-check.scm {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
