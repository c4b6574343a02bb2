//! Backup archives: a tar holding a consistent snapshot of the store (`warbler.redb`), the
//! TLS material (`tls/…`) and a manifest (`BACKUP.json`). `create` runs while the service
//! serves; `restore` rebuilds an empty data dir from one, offline.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

const FORMAT: &str = "warbler-backup";
const VERSION: u32 = 1;
const DB: &str = "warbler.redb";
const MANIFEST: &str = "BACKUP.json";
const TLS_FILES: [&str; 4] = [
    "tls/ca.crt",
    "tls/ca.key",
    "tls/server.crt",
    "tls/server.key",
];

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub created_at: String,
    pub rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} is not empty; restore needs an empty or new data dir")]
    NotEmpty(String),
    #[error("not a Warbler backup: {0}")]
    NotABackup(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a backup archive of the running store and its TLS material to `out`.
///
/// # Errors
/// I/O or store errors; nothing is left behind in the data dir either way.
pub fn create(store: &Store, data_dir: &Path, out: &Path) -> Result<Manifest, ArchiveError> {
    let work = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(data_dir)
        .map_err(io(data_dir))?;
    let db = work.path().join(DB);
    let rows = store.snapshot_to(&db)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        created_at: crate::domain::format_rfc3339_ms(crate::domain::now_ms()),
        rows,
    };
    let file = File::create(out).map_err(io(out))?;
    let mut tar = tar::Builder::new(file);
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ArchiveError::NotABackup(e.to_string()))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, json.as_slice())
        .map_err(io(out))?;
    tar.append_path_with_name(&db, DB).map_err(io(&db))?;
    for name in TLS_FILES {
        let path = data_dir.join(name);
        if path.exists() {
            tar.append_path_with_name(&path, name).map_err(io(&path))?;
        }
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .map_err(io(out))?;
    Ok(manifest)
}

/// What a restore produced.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub files: Vec<PathBuf>,
}

/// Rebuilds `data_dir` (new or empty) from a backup archive, offline.
///
/// # Errors
/// A non-empty target, an archive that is not a Warbler backup (or holds anything else),
/// or a store that does not open.
pub fn restore(archive: &Path, data_dir: &Path) -> Result<Restored, ArchiveError> {
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir).map_err(io(data_dir))?;
        if entries.next().is_some() {
            return Err(ArchiveError::NotEmpty(data_dir.display().to_string()));
        }
    }
    crate::fsutil::ensure_private_dir(data_dir).map_err(io(data_dir))?;
    crate::fsutil::ensure_private_dir(&data_dir.join("tls")).map_err(io(data_dir))?;
    let file = File::open(archive).map_err(io(archive))?;
    let mut tar = tar::Archive::new(file);
    let mut manifest = None;
    let mut files = Vec::new();
    for entry in tar.entries().map_err(io(archive))? {
        let mut entry = entry.map_err(io(archive))?;
        let name = entry
            .path()
            .map_err(io(archive))?
            .to_string_lossy()
            .into_owned();
        if name == MANIFEST {
            let m: Manifest = serde_json::from_reader(&mut entry)
                .map_err(|e| ArchiveError::NotABackup(format!("bad manifest: {e}")))?;
            if m.format != FORMAT || m.version > VERSION {
                return Err(ArchiveError::NotABackup(format!(
                    "format {} version {}",
                    m.format, m.version
                )));
            }
            manifest = Some(m);
            continue;
        }
        // Only the names a backup holds: no path from the archive is trusted.
        let Some(known) = std::iter::once(DB).chain(TLS_FILES).find(|k| *k == name) else {
            return Err(ArchiveError::NotABackup(format!(
                "unexpected entry {name:?}"
            )));
        };
        let target = data_dir.join(known);
        let mut out = File::create(&target).map_err(io(&target))?;
        std::io::copy(&mut entry, &mut out).map_err(io(&target))?;
        out.sync_all().map_err(io(&target))?;
        let private = known == DB || known == "tls/ca.key" || known == "tls/server.key";
        let mode = if private { 0o600 } else { 0o644 };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(io(&target))?;
        files.push(target);
    }
    let manifest = manifest.ok_or_else(|| ArchiveError::NotABackup("no BACKUP.json".into()))?;
    let db_path = data_dir.join(DB);
    if !db_path.exists() {
        return Err(ArchiveError::NotABackup("no warbler.redb".into()));
    }
    let db = redb::Database::open(&db_path)
        .map_err(|e| StoreError::Open(db_path.display().to_string(), e.into()))?;
    crate::store::tables::initialize(&db)?;
    Ok(Restored { manifest, files })
}
