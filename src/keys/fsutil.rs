//! Secret key files on disk: the permission policy, bounded reads, create-only `0600` writes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

use super::KeyError;

/// Permission bits a secret key file may not have: any access for group or other.
#[cfg(unix)]
const FORBIDDEN_MODE_BITS: u32 = 0o077;

/// The mode of every secret key file we create.
#[cfg(unix)]
const SECRET_FILE_MODE: u32 = 0o600;

/// How long a key file must be.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LengthRule {
    /// Exactly this many bytes (a fixed-size binary format).
    Exactly(u64),
    /// At most this many bytes (a text format; the bound is checked before allocating).
    AtMost(u64),
}

impl LengthRule {
    /// Check `got` against the rule.
    fn check(self, path: &Path, got: u64) -> Result<(), KeyError> {
        match self {
            LengthRule::Exactly(expected) if got != expected => Err(KeyError::WrongLength {
                path: path.to_owned(),
                expected,
                got,
            }),
            LengthRule::AtMost(limit) if got > limit => Err(KeyError::FileTooLarge {
                path: path.to_owned(),
                limit,
                got,
            }),
            _ => Ok(()),
        }
    }

    /// The largest length the rule allows.
    fn max(self) -> u64 {
        match self {
            LengthRule::Exactly(n) | LengthRule::AtMost(n) => n,
        }
    }
}

/// Read a secret key file after checking, on the opened handle, that it is a regular file,
/// that its mode grants nothing to group/other, and that its size obeys `rule`.
///
/// The returned buffer is zeroed on drop.
pub(crate) fn read_secret_file(
    path: &Path,
    rule: LengthRule,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    read_bounded(path, rule, true)
}

/// Read a public key file (any mode) with the same checks otherwise: a regular file, opened
/// without blocking, its size bounded before and after reading.
pub(crate) fn read_public_file(path: &Path, limit: u64) -> Result<Vec<u8>, KeyError> {
    read_bounded(path, LengthRule::AtMost(limit), false).map(|b| b.to_vec())
}

fn read_bounded(
    path: &Path,
    rule: LengthRule,
    secret: bool,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let read_err = |source: io::Error| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    // O_NONBLOCK: opening a FIFO (or a device) for reading must not wait for a writer; the
    // handle is then refused below as not a regular file. For regular files it changes nothing.
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    if secret {
        check_mode(path, &meta)?;
    }
    rule.check(path, meta.len())?;

    // The file may change between fstat and read: never read more than the rule allows + 1,
    // and check again what was actually read.
    let cap = usize::try_from(rule.max()).unwrap_or(usize::MAX);
    let mut buf = Zeroizing::new(Vec::with_capacity(cap.saturating_add(1)));
    file.take(rule.max().saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    rule.check(path, buf.len() as u64)?;
    Ok(buf)
}

/// Refuse a file whose permission bits give group or other any access.
#[cfg(unix)]
fn check_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & FORBIDDEN_MODE_BITS != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Non-unix systems have no mode bits to check.
#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

/// Create `path` with mode `0600` (never replacing an existing file) and write `contents`,
/// atomically: the bytes go to a temporary file beside it, which is synced and then linked into
/// place (a link, unlike a rename, never replaces an existing file), and the directory is
/// synced. A crash leaves either no file or the whole file, never a partial key.
pub(crate) fn write_new_secret_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let write_err = |source: io::Error| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    if path.symlink_metadata().is_ok() {
        return Err(KeyError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}-{:08x}",
        name.as_deref().unwrap_or("key"),
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(SECRET_FILE_MODE);
    }
    let mut file = opts.open(&tmp).map_err(write_err)?;
    let result = (|| {
        // The umask may have removed bits from the creation mode; make it exactly 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(SECRET_FILE_MODE))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::hard_link(&tmp, path)
    })();
    // The temporary name goes in every case (after a successful link, the file lives on).
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(KeyError::AlreadyExists {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(write_err(e)),
    }
    // Make the new name durable too.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn file_with_mode(dir: &Path, name: &str, contents: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, contents).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn modes() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o700, true),
            (0o644, false),
            (0o640, false),
            (0o604, false),
            (0o610, false),
            (0o601, false),
        ] {
            let p = file_with_mode(dir.path(), &format!("k{mode:o}"), b"abc", mode);
            let r = read_secret_file(&p, LengthRule::Exactly(3));
            match (ok, r) {
                (true, Ok(b)) => assert_eq!(&b[..], b"abc"),
                (false, Err(KeyError::InsecurePermissions { mode: m, .. })) => assert_eq!(m, mode),
                (_, r) => panic!("mode {mode:o}: unexpected {r:?}"),
            }
        }
    }

    #[test]
    fn length_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = file_with_mode(dir.path(), "k", &[7; 10], 0o600);
        assert!(matches!(
            read_secret_file(&p, LengthRule::Exactly(11)),
            Err(KeyError::WrongLength {
                expected: 11,
                got: 10,
                ..
            })
        ));
        assert!(matches!(
            read_secret_file(&p, LengthRule::AtMost(9)),
            Err(KeyError::FileTooLarge {
                limit: 9,
                got: 10,
                ..
            })
        ));
        assert_eq!(
            read_secret_file(&p, LengthRule::AtMost(10)).unwrap().len(),
            10
        );
    }

    #[test]
    fn not_a_file_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_secret_file(dir.path(), LengthRule::AtMost(10)),
            Err(KeyError::NotRegularFile { .. })
        ));
        let e = read_secret_file(&dir.path().join("nope"), LengthRule::AtMost(10)).unwrap_err();
        assert!(
            matches!(&e, KeyError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn write_is_0600_and_create_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_new_secret_file(&p, b"first").unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let e = write_new_secret_file(&p, b"second").unwrap_err();
        assert!(matches!(e, KeyError::AlreadyExists { .. }), "{e:?}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        let e = write_new_secret_file(&dir.path().join("no/such/dir"), b"x").unwrap_err();
        assert!(matches!(e, KeyError::Write { .. }), "{e:?}");
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["k".to_string()], "{names:?}");
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let p = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_secret_file(&p, LengthRule::AtMost(100)));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading a FIFO must not block");
        assert!(matches!(r, Err(KeyError::NotRegularFile { .. })), "{r:?}");
    }
}
