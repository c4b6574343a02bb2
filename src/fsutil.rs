//! Crash-safe filesystem helpers: atomic file replacement and private directory creation.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Distinguishes temp files created by concurrent writers within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many unique temp names to try before giving up.
const MAX_TEMP_ATTEMPTS: u32 = 16;

/// Atomically replaces `path` with `contents`.
///
/// The data goes to a uniquely named temp file in the same directory whose
/// permissions are set to `mode` before any content is written; the file is
/// flushed with `sync_all`, renamed over `path`, and the parent directory is
/// fsynced so the rename itself survives a crash. Readers see either the old
/// file or the complete new one, never a partial write. On failure the temp
/// file is removed and `path` is left untouched.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let parent = parent_dir(path);

    let (tmp_path, mut file) = create_temp(parent, file_name, mode)?;
    let result = (|| {
        // The umask may have stripped bits at creation; set the exact mode
        // before the content lands in the file.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp_path, path)
    })();
    if let Err(err) = result {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&tmp_path);
        return Err(err);
    }

    File::open(parent)?.sync_all()
}

/// Creates `path` (and any missing parents) with mode 0700 if it does not exist.
///
/// An existing directory is left as it is; an existing non-directory is an error.
pub fn ensure_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    if fs::metadata(path)?.is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", path.display()),
        ))
    }
}

/// The directory containing `path`, treating a bare file name as relative to `.`.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates a fresh hidden temp file next to the target, never reusing an existing one.
fn create_temp(
    parent: &Path,
    file_name: &std::ffi::OsStr,
    mode: u32,
) -> io::Result<(PathBuf, File)> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last_err = None;
    for _ in 0..MAX_TEMP_ATTEMPTS {
        let counter = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = OsString::from(".");
        name.push(file_name);
        name.push(format!(".{}.{counter}.{nanos:09}.tmp", std::process::id()));
        let tmp_path = parent.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp_path)
        {
            Ok(file) => return Ok((tmp_path, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last_err = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            "could not pick a unique temp file name",
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_creates_and_replaces_with_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");

        write_atomic(&path, b"first", 0o600).expect("first write");
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(mode_of(&path), 0o600);

        write_atomic(&path, b"second, longer", 0o644).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"second, longer");
        assert_eq!(mode_of(&path), 0o644);

        // No temp files are left behind.
        assert_eq!(dir_entries(dir.path()), vec!["secret.key".to_string()]);
    }

    #[test]
    fn write_atomic_failure_leaves_target_and_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Renaming a file over a non-empty directory fails after the temp
        // file was written, exercising the cleanup path.
        let target = dir.path().join("occupied");
        fs::create_dir(&target).expect("mkdir");
        fs::write(target.join("inner"), b"x").expect("write inner");

        assert!(write_atomic(&target, b"data", 0o600).is_err());
        assert!(target.is_dir());
        assert_eq!(dir_entries(dir.path()), vec!["occupied".to_string()]);
    }

    #[test]
    fn write_atomic_rejects_missing_parent_and_bad_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(write_atomic(&dir.path().join("nope/file"), b"x", 0o600).is_err());
        assert!(write_atomic(Path::new("/"), b"x", 0o600).is_err());
    }

    #[test]
    fn ensure_private_dir_creates_parents_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b/tls");
        ensure_private_dir(&nested).expect("create");
        assert!(nested.is_dir());
        assert_eq!(mode_of(&nested), 0o700);
        ensure_private_dir(&nested).expect("idempotent");

        let file = dir.path().join("plain");
        fs::write(&file, b"x").expect("write");
        assert!(ensure_private_dir(&file).is_err());
    }
}
