//! Reading and writing key files, where the secret touches the disk and permissions matter.
//!
//! A secret key file is refused if its group or others have any access, and a new one is
//! created with mode 0600 from the first byte, so there is no moment when it is readable.
//! Nix keys (`name:base64`) and Guix keys (libgcrypt sexps) follow the same rules.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

use crate::{Error, GuixPublicKey, GuixSecretKey, PublicKey, SecretKey};

/// A secret key of either kind, as [`read_any_secret_key_file`] found it.
#[derive(Debug, Clone)]
pub enum AnySecretKey {
    /// A Nix `name:base64` Ed25519 key, which signs `Sig:` lines.
    Nix(SecretKey),
    /// A Guix libgcrypt key (ECDSA on Ed25519), which signs `Signature:` lines.
    Guix(GuixSecretKey),
}

/// Reads a secret key file as written by `nix key generate-secret` or [`write_key_pair`].
///
/// On unix, a file whose mode gives its group or others any access (`mode & 0o077 != 0`) is
/// refused with an error naming the path, the mode and the `chmod 600` that fixes it.
/// The mode is checked on the opened file, so it cannot change between the check and the read.
pub fn read_secret_key_file(path: &Path) -> Result<SecretKey, Error> {
    let text = utf8(read_secret_bytes(path)?, path)?;
    SecretKey::parse(&text).map_err(|source| key_file_error(path, source))
}

/// Reads a secret key file of either kind, telling them apart by content: a Guix key is an
/// S-expression, so its first non-blank character is `(` (or `{` for the transport form);
/// anything else is read as a Nix key.
///
/// The permission rule of [`read_secret_key_file`] applies to both kinds.
pub fn read_any_secret_key_file(path: &Path) -> Result<AnySecretKey, Error> {
    let bytes = read_secret_bytes(path)?;
    if looks_like_sexp(&bytes) {
        return GuixSecretKey::parse(&*bytes).map(AnySecretKey::Guix).map_err(|source| key_file_error(path, source));
    }
    let text = utf8(bytes, path)?;
    SecretKey::parse(&text).map(AnySecretKey::Nix).map_err(|source| key_file_error(path, source))
}

/// Reads a Guix `signing-key.sec`, `(private-key (ecc (curve Ed25519) (q #…#) (d #…#)))`,
/// with the permission rule of [`read_secret_key_file`].
pub fn read_guix_secret_key_file(path: &Path) -> Result<GuixSecretKey, Error> {
    let bytes = read_secret_bytes(path)?;
    GuixSecretKey::parse(&*bytes).map_err(|source| key_file_error(path, source))
}

/// The bytes of a secret key file: refused when they are a public key (a common slip, which
/// deserves that name rather than advice about its mode), then when the file's mode lets its
/// group or others in.
fn read_secret_bytes(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    let file = File::open(path).map_err(|source| read_error(path, source))?;
    #[cfg(unix)]
    let mode_check = check_private(&file, path);
    let bytes = read_bytes(file, path)?;
    if is_public_key(&bytes) {
        return Err(Error::PublicKeyGiven { path: path.to_owned() });
    }
    #[cfg(unix)]
    mode_check?;
    Ok(bytes)
}

/// Whether `bytes` parse as a Nix or Guix public key.
fn is_public_key(bytes: &[u8]) -> bool {
    if looks_like_sexp(bytes) {
        return GuixPublicKey::parse(bytes).is_ok();
    }
    std::str::from_utf8(bytes).is_ok_and(|text| PublicKey::parse(text).is_ok())
}

/// Reads a Guix `signing-key.pub`, `(public-key (ecc (curve Ed25519) (q #…#)))`.
pub fn read_guix_public_key_file(path: &Path) -> Result<GuixPublicKey, Error> {
    let file = File::open(path).map_err(|source| read_error(path, source))?;
    let bytes = read_bytes(file, path)?;
    GuixPublicKey::parse(&*bytes).map_err(|source| key_file_error(path, source))
}

fn looks_like_sexp(bytes: &[u8]) -> bool {
    matches!(bytes.iter().find(|b| !b.is_ascii_whitespace()), Some(b'(' | b'{'))
}

/// Reads a public key file, `name:base64` with optional surrounding whitespace.
pub fn read_public_key_file(path: &Path) -> Result<PublicKey, Error> {
    let file = File::open(path).map_err(|source| read_error(path, source))?;
    let text = read_all(file, path)?;
    PublicKey::parse(&text).map_err(|source| key_file_error(path, source))
}

/// Writes `secret` to `secret_out` (mode 0600) and its public key to `public_out` (mode 0644),
/// refusing to replace either file if it exists, and syncs both to disk.
///
/// The secret file has no trailing newline, like `nix key generate-secret`; the public file
/// ends in one, like `nix key convert-secret-to-public`. If anything fails after the files were
/// created, both are removed again so that no half-written key is left behind.
pub fn write_key_pair(secret: &SecretKey, secret_out: &Path, public_out: &Path) -> Result<(), Error> {
    let secret_text = Zeroizing::new(secret.to_nix_string());
    let public_text = format!("{}\n", secret.to_public());
    write_pair(secret_out, secret_text.as_bytes(), public_out, public_text.as_bytes())
}

/// Writes a Guix key pair as `guix archive --generate-key` does, `secret` to `secret_out`
/// and its public key to `public_out`, both in libgcrypt's advanced format (newline-terminated).
///
/// Files are created as by [`write_key_pair`]: never replacing an existing file, the secret
/// 0600 from the start and the public one 0644, both synced, and both removed again if
/// anything fails. (Guix itself makes them 0400 and 0444; tighten them afterwards if wanted.)
pub fn write_guix_key_pair(secret: &GuixSecretKey, secret_out: &Path, public_out: &Path) -> Result<(), Error> {
    let secret_text = secret.to_sexp_string();
    write_pair(secret_out, secret_text.as_bytes(), public_out, secret.public_sexp().as_bytes())
}

fn write_pair(secret_out: &Path, secret: &[u8], public_out: &Path, public: &[u8]) -> Result<(), Error> {
    // Missing directories are created 0700: a key directory is nobody else's business.
    for path in [secret_out, public_out] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            create_private_dir(dir).map_err(|source| write_error(dir, source))?;
        }
    }
    let secret_file = create_new(secret_out, 0o600)?;
    let public_file = match create_new(public_out, 0o644) {
        Ok(file) => file,
        Err(error) => {
            drop(secret_file);
            let _ = fs::remove_file(secret_out);
            return Err(error);
        }
    };
    let written = write_synced(secret_file, secret_out, secret)
        .and_then(|()| write_synced(public_file, public_out, public))
        .and_then(|()| sync_parent(secret_out))
        .and_then(|()| sync_parent(public_out));
    if written.is_err() {
        let _ = fs::remove_file(secret_out);
        let _ = fs::remove_file(public_out);
    }
    written
}

/// Creates `dir` and its missing parents with mode 0700.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Refuses a secret key file that its group or others can access in any way.
///
/// One exception, for systemd's `LoadCredential=`: systemd writes a credential mode 0400,
/// owned by root, and grants the service's user read access with a POSIX ACL entry where the
/// file system has ACLs (tmpfs on current kernels). `stat` then shows the ACL's mask in the
/// group bits (mode 0440) although no group can read the file. So when the group bits are set
/// and the file carries an access ACL, the ACL decides: the key is private when no group (the
/// owning group included) and no user other than this process's own gets any access through
/// it. Others' bits are never allowed.
#[cfg(unix)]
fn check_private(file: &File, path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;

    let mode = file.metadata().map_err(|source| read_error(path, source))?.permissions().mode() & 0o7777;
    let insecure = || Error::InsecurePermissions { path: path.to_owned(), mode };
    if mode & 0o007 != 0 {
        return Err(insecure());
    }
    if mode & 0o070 == 0 {
        return Ok(());
    }
    match access_acl(file) {
        Some(acl) => match acl::stranger(&acl, rustix::process::geteuid().as_raw()) {
            Ok(None) => Ok(()),
            Ok(Some(grantee)) => Err(Error::AclGrantsAccess { path: path.to_owned(), grantee }),
            Err(acl::Malformed) => Err(insecure()),
        },
        None => Err(insecure()),
    }
}

/// The raw `system.posix_acl_access` attribute of `file`, if it has one.
#[cfg(unix)]
fn access_acl(file: &File) -> Option<Vec<u8>> {
    // An access ACL has a 4-byte header and 8 bytes per entry; 64 KiB is the xattr size limit.
    let mut buffer = vec![0_u8; 65_536];
    let length = rustix::fs::fgetxattr(file, "system.posix_acl_access", &mut buffer[..]).ok()?;
    buffer.truncate(length);
    Some(buffer)
}

/// Reading the kernel's binary form of a POSIX access ACL (`system.posix_acl_access`): a
/// little-endian `u32` version (2), then entries of `u16` tag, `u16` permissions, `u32` id.
#[cfg(unix)]
mod acl {
    const VERSION: u32 = 2;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;

    /// The attribute is not an ACL this reader knows.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Malformed;

    /// Who other than the owner and `me` the ACL lets in (`"group 100"`, `"user 1001"`), or
    /// `None` when nobody is.
    pub(super) fn stranger(raw: &[u8], me: u32) -> Result<Option<String>, Malformed> {
        let (header, body) = raw.split_first_chunk::<4>().ok_or(Malformed)?;
        if u32::from_le_bytes(*header) != VERSION || body.len() % 8 != 0 {
            return Err(Malformed);
        }
        let entries: Vec<(u16, u16, u32)> = body
            .chunks_exact(8)
            .map(|e| {
                let tag = u16::from_le_bytes([e[0], e[1]]);
                let perm = u16::from_le_bytes([e[2], e[3]]);
                (tag, perm, u32::from_le_bytes([e[4], e[5], e[6], e[7]]))
            })
            .collect();
        // Without a mask entry the group-class entries are not masked (a minimal ACL).
        let mask = entries.iter().find(|(tag, ..)| *tag == MASK).map_or(0o7, |&(_, perm, _)| perm);
        for &(tag, perm, id) in &entries {
            let effective = perm & mask & 0o7;
            let grantee = match tag {
                USER if id != me && effective != 0 => format!("user {id}"),
                GROUP_OBJ if effective != 0 => "its owning group".to_owned(),
                GROUP if effective != 0 => format!("group {id}"),
                OTHER if perm & 0o7 != 0 => "others".to_owned(),
                _ => continue,
            };
            return Ok(Some(grantee));
        }
        Ok(None)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
            let mut raw = VERSION.to_le_bytes().to_vec();
            for &(tag, perm, id) in entries {
                raw.extend(tag.to_le_bytes());
                raw.extend(perm.to_le_bytes());
                raw.extend(id.to_le_bytes());
            }
            raw
        }

        const USER_OBJ: u16 = 0x01;
        const NONE: u32 = u32::MAX;

        #[test]
        fn systemds_credential_acl_is_private_to_its_reader() {
            // user::r--, user:1234:r--, group::---, mask::r--, other::---
            let raw =
                acl(&[(USER_OBJ, 4, NONE), (USER, 4, 1234), (GROUP_OBJ, 0, NONE), (MASK, 4, NONE), (OTHER, 0, NONE)]);
            assert_eq!(stranger(&raw, 1234), Ok(None));
            assert_eq!(stranger(&raw, 1000), Ok(Some("user 1234".to_owned())));
        }

        #[test]
        fn groups_and_others_are_strangers_unless_masked() {
            let group = acl(&[(USER_OBJ, 6, NONE), (GROUP_OBJ, 4, NONE), (MASK, 4, NONE), (OTHER, 0, NONE)]);
            assert_eq!(stranger(&group, 0), Ok(Some("its owning group".to_owned())));
            let named =
                acl(&[(USER_OBJ, 6, NONE), (GROUP_OBJ, 0, NONE), (GROUP, 4, 100), (MASK, 4, NONE), (OTHER, 0, NONE)]);
            assert_eq!(stranger(&named, 0), Ok(Some("group 100".to_owned())));
            let masked =
                acl(&[(USER_OBJ, 6, NONE), (GROUP_OBJ, 4, NONE), (GROUP, 4, 100), (MASK, 0, NONE), (OTHER, 0, NONE)]);
            assert_eq!(stranger(&masked, 0), Ok(None));
            let others = acl(&[(USER_OBJ, 6, NONE), (GROUP_OBJ, 0, NONE), (OTHER, 4, NONE)]);
            assert_eq!(stranger(&others, 0), Ok(Some("others".to_owned())));
        }

        #[test]
        fn what_is_not_an_acl_is_malformed() {
            assert_eq!(stranger(&[], 0), Err(Malformed));
            assert_eq!(stranger(&[1, 0, 0, 0], 0), Err(Malformed));
            assert_eq!(stranger(&[2, 0, 0, 0, 1], 0), Err(Malformed));
        }
    }
}

/// Reads a whole key file as text, in memory that is wiped when dropped.
fn read_all(file: File, path: &Path) -> Result<Zeroizing<String>, Error> {
    utf8(read_bytes(file, path)?, path)
}

/// Reads a whole key file into memory that is wiped when dropped, since it may hold a secret.
/// (A Guix key may be in libgcrypt's binary canonical form, so this is bytes, not text.)
fn read_bytes(mut file: File, path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    // Reserving the size up front avoids reallocations that would leave unwiped copies.
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1)));
    file.read_to_end(&mut bytes).map_err(|source| read_error(path, source))?;
    Ok(bytes)
}

fn utf8(mut bytes: Zeroizing<Vec<u8>>, path: &Path) -> Result<Zeroizing<String>, Error> {
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(error) => {
            drop(Zeroizing::new(error.into_bytes()));
            let source = io::Error::new(io::ErrorKind::InvalidData, "key file is not valid UTF-8");
            Err(read_error(path, source))
        }
    }
}

/// Creates a file that must not exist yet, with `mode` applied at creation on unix.
fn create_new(path: &Path, mode: u32) -> Result<File, Error> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            Error::AlreadyExists { path: path.to_owned() }
        } else {
            write_error(path, source)
        }
    })
}

fn write_synced(mut file: File, path: &Path, contents: &[u8]) -> Result<(), Error> {
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(|source| write_error(path, source))
}

/// Syncs the directory holding `path`, so that the new directory entry survives a crash too.
fn sync_parent(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        File::open(&dir).and_then(|dir| dir.sync_all()).map_err(|source| write_error(&dir, source))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn read_error(path: &Path, source: io::Error) -> Error {
    Error::Read { path: path.to_owned(), source }
}

fn write_error(path: &Path, source: io::Error) -> Error {
    Error::Write { path: path.to_owned(), source }
}

fn key_file_error(path: &Path, source: Error) -> Error {
    Error::KeyFile { path: path.to_owned(), source: Box::new(source) }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const SECRET: &str =
        "test-cache-1:3RYTN0JwkMRMunJQdy82GW+lwR/u9TwtXAntnBfvdqyCy51dorjLzHL5rI5nV+sHE5AIOhAneQ8o/UwwEp1vSA==";

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn write_with_mode(path: &Path, contents: &str, mode: u32) {
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn written_pair_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (secret_path, public_path) = (dir.path().join("key.sec"), dir.path().join("key.pub"));
        let key = SecretKey::generate("cache.example.org-1").unwrap();
        write_key_pair(&key, &secret_path, &public_path).unwrap();

        let secret = read_secret_key_file(&secret_path).unwrap();
        let public = read_public_key_file(&public_path).unwrap();
        assert_eq!(secret.to_nix_string(), key.to_nix_string());
        assert_eq!(public, key.to_public());
        assert!(public.verify("fp", &secret.sign("fp")));

        assert_eq!(fs::read_to_string(&secret_path).unwrap(), key.to_nix_string());
        assert_eq!(fs::read_to_string(&public_path).unwrap(), format!("{}\n", key.to_public()));
    }

    #[test]
    fn written_secret_file_has_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (secret_path, public_path) = (dir.path().join("key.sec"), dir.path().join("key.pub"));
        let key = SecretKey::generate("k").unwrap();
        write_key_pair(&key, &secret_path, &public_path).unwrap();
        assert_eq!(mode(&secret_path), 0o600);
        // The public file is created 0644, less whatever the umask removes.
        assert_eq!(mode(&public_path) & !0o644, 0);
    }

    #[test]
    fn write_key_pair_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (secret_path, public_path) = (dir.path().join("key.sec"), dir.path().join("key.pub"));
        write_with_mode(&secret_path, SECRET, 0o600);
        let key = SecretKey::generate("k").unwrap();

        let err = write_key_pair(&key, &secret_path, &public_path).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { ref path } if *path == secret_path));
        assert!(err.to_string().contains(&secret_path.display().to_string()));
        assert_eq!(fs::read_to_string(&secret_path).unwrap(), SECRET);
        assert!(!public_path.exists());
    }

    #[test]
    fn existing_public_file_leaves_no_secret_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (secret_path, public_path) = (dir.path().join("key.sec"), dir.path().join("key.pub"));
        fs::write(&public_path, "old").unwrap();
        let key = SecretKey::generate("k").unwrap();

        let err = write_key_pair(&key, &secret_path, &public_path).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { ref path } if *path == public_path));
        assert!(!secret_path.exists());
        assert_eq!(fs::read_to_string(&public_path).unwrap(), "old");
    }

    #[test]
    fn secret_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.sec");
        for bad in [0o644, 0o640, 0o604, 0o610, 0o601] {
            write_with_mode(&path, SECRET, bad);
            let err = read_secret_key_file(&path).unwrap_err();
            assert!(matches!(err, Error::InsecurePermissions { mode, .. } if mode == bad), "{bad:o}: {err:?}");
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(&format!("chmod 600 {}", path.display())), "{message}");
            assert!(message.contains(&format!("{bad:04o}")), "{message}");
        }
    }

    #[test]
    fn secret_file_private_to_owner_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.sec");
        for good in [0o600, 0o400] {
            write_with_mode(&path, SECRET, good);
            assert_eq!(read_secret_key_file(&path).unwrap().to_nix_string(), SECRET);
        }
    }

    /// Sets a real access ACL on `path` through the kernel, as `setfacl` (and systemd for a
    /// credential) does: `user::r--`, `user:<reader>:r--`, `group::<group>`, `mask::r--`,
    /// `other::---`. The kernel then shows the mask in the group bits.
    fn set_acl(path: &Path, reader: u32, group: u16) {
        let mut raw = 2_u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01_u16, 4_u16, u32::MAX),
            (0x02, 4, reader),
            (0x04, group, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            raw.extend(tag.to_le_bytes());
            raw.extend(perm.to_le_bytes());
            raw.extend(id.to_le_bytes());
        }
        rustix::fs::setxattr(path, "system.posix_acl_access", &raw, rustix::fs::XattrFlags::empty()).unwrap_or_else(
            |e| {
                panic!(
                    "setting an ACL on {} (does its file system support POSIX ACLs? TMPDIR picks another): {e}",
                    path.display()
                )
            },
        );
    }

    #[test]
    fn systemd_credential_with_an_acl_for_this_user_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.sec");
        let me = rustix::process::geteuid().as_raw();
        write_with_mode(&path, SECRET, 0o400);
        set_acl(&path, me, 0);
        assert_eq!(mode(&path), 0o440, "the kernel shows the ACL's mask in the group bits");
        assert_eq!(read_secret_key_file(&path).unwrap().to_nix_string(), SECRET);
    }

    #[test]
    fn an_acl_that_lets_in_another_user_or_the_group_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.sec");
        let me = rustix::process::geteuid().as_raw();
        for (reader, group, grantee) in
            [(me.wrapping_add(1), 0, format!("user {}", me.wrapping_add(1))), (me, 4, "its owning group".to_owned())]
        {
            let _ = fs::remove_file(&path);
            write_with_mode(&path, SECRET, 0o400);
            set_acl(&path, reader, group);
            let err = read_secret_key_file(&path).unwrap_err();
            assert!(matches!(&err, Error::AclGrantsAccess { grantee: g, .. } if *g == grantee), "{err:?}");
            assert!(err.to_string().contains(&format!("setfacl -b {}", path.display())), "{err}");
        }
    }

    #[test]
    fn nix_style_file_with_trailing_newline_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.sec");
        write_with_mode(&path, &format!("{SECRET}\n"), 0o600);
        assert_eq!(read_secret_key_file(&path).unwrap().to_nix_string(), SECRET);
    }

    #[test]
    fn bad_key_in_file_names_the_file_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.sec");
        let data = SECRET.split_once(':').unwrap().1;
        write_with_mode(&path, &format!("{data}:test-cache-1"), 0o600);

        let err = read_secret_key_file(&path).unwrap_err();
        let Error::KeyFile { path: ref named, ref source } = err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(*named, path);
        assert!(matches!(**source, Error::Base64 { .. }));
        let printed = format!("{err:?} {err} {source}");
        assert!(!printed.contains(&data[..16]), "{printed}");
    }

    #[test]
    fn missing_directories_are_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("etc/subserve");
        let key = SecretKey::generate("test-1").unwrap();
        write_key_pair(&key, &keys.join("key.sec"), &keys.join("key.pub")).unwrap();
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(mode(&dir.path().join("etc")), 0o700);
        assert_eq!(read_secret_key_file(&keys.join("key.sec")).unwrap().to_public(), key.to_public());
    }

    #[test]
    fn a_public_key_given_as_the_secret_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate("test-1").unwrap();
        let (secret, public) = (dir.path().join("k.sec"), dir.path().join("k.pub"));
        write_key_pair(&key, &secret, &public).unwrap();
        // Mode 0644, as written: the key's kind is what is wrong, not its mode.
        for err in
            [read_secret_key_file(&public).unwrap_err(), read_any_secret_key_file(&public).map(drop).unwrap_err()]
        {
            assert!(matches!(err, Error::PublicKeyGiven { .. }), "{err}");
            assert!(err.to_string().contains("holds a public key"), "{err}");
        }
        let guix = GuixSecretKey::generate().unwrap();
        let (gsecret, gpublic) = (dir.path().join("g.sec"), dir.path().join("g.pub"));
        write_guix_key_pair(&guix, &gsecret, &gpublic).unwrap();
        let err = read_guix_secret_key_file(&gpublic).unwrap_err();
        assert!(matches!(err, Error::PublicKeyGiven { .. }), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.pub");
        let err = read_public_key_file(&path).unwrap_err();
        assert!(matches!(err, Error::Read { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
    }
}
