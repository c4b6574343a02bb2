//! The store's journal file (a redo log). With it, a group commit is durable once its
//! requests are appended here and fsynced: one sequential write of a few KiB instead of
//! redb's two fsyncs over every dirty page of the commit. The redb commit that applies the
//! batch then skips its fsync (`Durability::None`); a checkpoint (a durable redb commit)
//! every so often makes the applied state durable on its own, after which the journal is
//! emptied. At open, the records past the last checkpoint are applied again, in order
//! ([`super::journal_ops`]).
//!
//! This module owns only the file format. A record is
//!
//! ```text
//! magic "WJR1" | payload length u32 | seq u64 | store id u64 | digest [16] | payload
//! ```
//!
//! (integers little-endian; the digest is SHA-256 over seq, store id and payload, cut to
//! 16 bytes). A cryptographic digest rather than a CRC because payloads are tenant input: a
//! torn record cannot be made to look whole. `seq` counts records over the store's life and
//! never restarts, so a record already applied by a checkpoint is told apart by number.
//! A short or damaged record ends the journal: it was being written when the process
//! stopped, so nobody was told it was stored. So does a record whose number does not follow
//! the one before it, and four zero bytes where a record would start.
//!
//! The file is written over in place, not appended to: it grows in steps of [`GROW`]
//! written as zeros once, and emptying it after a checkpoint only zeroes its first header
//! and writes the next records from the start again. Overwriting blocks the file already
//! has means an fdatasync writes the record's page and nothing else; appending made
//! every fdatasync write the inode as well, for the new file size (on ext4 without a
//! journal, a third of the writer's CPU at 5,000 pushes/s). What older records left after
//! the newest ones is told apart by its numbers, which run on by one only within one run
//! of records, and by the digest, which covers the store id, a secret a tenant cannot
//! learn, so that a tenant's payload cannot pose as a record. A clean stop cuts the file
//! back to nothing.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAGIC: [u8; 4] = *b"WJR1";
const HEADER: usize = 4 + 4 + 8 + 8 + 16;
/// Largest payload a record may have: a full batch (2,048 requests) of the largest pushes
/// fits many times over. A length past this is a damaged header, not a record.
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024;
/// Bytes the file grows by when a record would pass its end (see the module doc).
pub const GROW: u64 = 1024 * 1024;
/// Zeros written to grow the file, a slice at a time.
static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];

/// The journal, open for appending.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of records since the file was last emptied: where the next record goes.
    len: u64,
    /// Bytes the file has (zeros or old records past `len`).
    allocated: u64,
    /// The next record's number.
    next_seq: u64,
    store_id: u64,
    /// Reused for each record's header and payload.
    buf: Vec<u8>,
}

/// A record read back from the file.
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What reading the file found.
pub struct Contents {
    /// Whole records, in file order.
    pub records: Vec<Record>,
    /// Bytes of the whole records.
    pub good_len: u64,
    /// Bytes after the whole records when they are not a clean end (the end of the file,
    /// zeros, or an older whole record): a record cut short, and whatever follows it.
    pub torn_bytes: u64,
}

fn digest(seq: u64, store_id: u64, payload: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(seq.to_le_bytes());
    h.update(store_id.to_le_bytes());
    h.update(payload);
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Reads every whole record of the journal at `path` (none if there is no file). Records of
/// another store (`store_id`) are an error: the file was copied from elsewhere.
///
/// # Errors
/// I/O errors; `InvalidData` for a record of another store.
pub fn read(path: &Path, store_id: u64) -> io::Result<Contents> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Contents {
                records: Vec::new(),
                good_len: 0,
                torn_bytes: 0,
            })
        }
        Err(e) => return Err(e),
    };
    let total = file.metadata()?.len();
    let mut records = Vec::new();
    let mut good_len = 0u64;
    // Whether reading stopped at a clean end rather than at a record cut short.
    let mut clean = true;
    loop {
        if good_len == total {
            break;
        }
        let mut header = [0u8; HEADER];
        let whole_header = read_full(&mut file, &mut header)?;
        if header[..4] == [0u8; 4] {
            // Free space: zeros the file was grown with, or an emptied start.
            break;
        }
        clean = false;
        if !whole_header || header[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default()) as usize;
        let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let id = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
        if len > MAX_PAYLOAD || good_len + (HEADER + len) as u64 > total {
            break;
        }
        let mut payload = vec![0u8; len];
        if !read_full(&mut file, &mut payload)? {
            break;
        }
        if header[24..40] != digest(seq, id, &payload) {
            break;
        }
        // Numbers run on by one; anything else is an older record that the newer ones
        // were written over in front of, never a record of this run.
        if records
            .last()
            .is_some_and(|last: &Record| last.seq + 1 != seq)
        {
            clean = true;
            break;
        }
        clean = true;
        if id != store_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "record {seq} belongs to another store (id {id:016x}, this store is {store_id:016x})"
                ),
            ));
        }
        good_len += (HEADER + len) as u64;
        records.push(Record { seq, payload });
    }
    Ok(Contents {
        records,
        good_len,
        torn_bytes: if clean { 0 } else { total - good_len },
    })
}

/// Fills `buf`; false at a clean or short end of file.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl Journal {
    /// Opens (or creates) the journal empty, cut back to nothing; the next record is number
    /// `next_seq`. Call it once what the file held was applied and checkpointed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(path: &Path, store_id: u64, next_seq: u64) -> io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        if file.metadata()?.len() != 0 {
            file.set_len(0)?;
            file.sync_data()?;
        }
        if !existed {
            // The file's name must survive a crash too, or its records would go with it.
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            File::open(dir.unwrap_or_else(|| Path::new(".")))?.sync_all()?;
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len: 0,
            allocated: 0,
            next_seq,
            store_id,
            buf: Vec::new(),
        })
    }

    /// The next record's number.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes of records since the journal was last emptied.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record. With `sync`, waits for it, and every record written before it,
    /// to be on disk (fdatasync); without, it reaches the disk with the next record
    /// written with `sync`, or the next checkpoint. On failure the record is taken back
    /// (its header zeroed), so that a record nobody was told about is not replayed.
    ///
    /// # Errors
    /// I/O errors, or a payload over [`MAX_PAYLOAD`].
    pub fn append(&mut self, payload: &[u8], sync: bool) -> io::Result<u64> {
        if payload.len() > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("journal record of {} bytes is too large", payload.len()),
            ));
        }
        let seq = self.next_seq;
        self.buf.clear();
        self.buf.extend_from_slice(&MAGIC);
        self.buf.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(&self.store_id.to_le_bytes());
        self.buf
            .extend_from_slice(&digest(seq, self.store_id, payload));
        self.buf.extend_from_slice(payload);
        let end = self.len + self.buf.len() as u64;
        // Zeros where the next record goes end the journal cleanly here, whatever older
        // records the file still holds further on; the next record writes over them.
        self.buf.extend_from_slice(&[0u8; 4]);
        let written = self
            .file
            .write_all_at(&self.buf, self.len)
            .and_then(|()| self.grow_past(end))
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Best effort: a header left in place belongs to a batch that did not commit,
            // which `undo_last` callers treat the same way.
            let _ = self.file.write_all_at(&[0u8; HEADER], self.len);
            return Err(e);
        }
        self.len = end;
        self.next_seq += 1;
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = Vec::new();
        }
        Ok(seq)
    }

    /// Makes sure the file has zeros (or older records) up to a [`GROW`] step past `end`,
    /// so that the next records overwrite blocks the file has and their fdatasync writes
    /// no inode.
    fn grow_past(&mut self, end: u64) -> io::Result<()> {
        if end + HEADER as u64 <= self.allocated {
            return Ok(());
        }
        let to = (end + HEADER as u64).div_ceil(GROW) * GROW;
        let mut at = end.max(self.allocated);
        while at < to {
            let n = usize::try_from(to - at).map_or(ZEROS.len(), |left| left.min(ZEROS.len()));
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        self.allocated = to;
        Ok(())
    }

    /// Takes back the last record written (its batch did not commit): zeroes its header
    /// at `len` and syncs.
    ///
    /// # Errors
    /// I/O errors: the record may then still be replayed at the next start.
    pub fn undo_last(&mut self, len: u64) -> io::Result<()> {
        self.file.write_all_at(&[0u8; HEADER], len)?;
        self.file.sync_data()?;
        self.len = len;
        self.next_seq = self.next_seq.saturating_sub(1);
        Ok(())
    }

    /// Empties the journal once a checkpoint made every record in it redundant: zeroes the
    /// first header, and the next record goes at the start. Not synced: if the zeros are
    /// lost in a crash, the old records come back, and their numbers say they were applied
    /// already.
    ///
    /// # Errors
    /// I/O errors.
    pub fn clear(&mut self) -> io::Result<()> {
        if self.len > 0 {
            self.file.write_all_at(&[0u8; HEADER], 0)?;
        }
        self.len = 0;
        Ok(())
    }

    /// Cuts the emptied file back to nothing (a clean stop, after its checkpoint).
    ///
    /// # Errors
    /// I/O errors.
    pub fn release(&mut self) -> io::Result<()> {
        self.clear()?;
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.allocated = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_ends_the_journal() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 7, 10).expect("open");
        assert_eq!(j.append(b"one", true).expect("append"), 10);
        assert_eq!(j.append(b"", false).expect("append"), 11);
        assert_eq!(j.append(&[9u8; 5000], true).expect("append"), 12);
        let whole = j.len();
        drop(j);
        // The file was grown with zeros past the records, which end it cleanly.
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), GROW);
        let c = read(&path, 7).expect("read");
        let seqs: Vec<u64> = c.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [10, 11, 12]);
        assert_eq!(c.records[0].payload, b"one");
        assert_eq!(c.records[2].payload.len(), 5000);
        assert_eq!((c.good_len, c.torn_bytes), (whole, 0));

        // Every cut inside the last record leaves the first two.
        let bytes = std::fs::read(&path).expect("bytes");
        let second_end = (HEADER * 2 + 3) as u64;
        for cut in [second_end + 1, second_end + 20, whole - 1] {
            let cut_usize = usize::try_from(cut).expect("usize");
            std::fs::write(&path, &bytes[..cut_usize]).expect("write");
            let c = read(&path, 7).expect("read");
            assert_eq!(c.records.len(), 2, "cut at {cut}");
            assert_eq!(c.good_len, second_end);
            assert_eq!(c.torn_bytes, cut - second_end);
        }
    }

    #[test]
    fn a_changed_byte_ends_the_journal_at_that_record() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 1, 1).expect("open");
        j.append(b"first record", true).expect("append");
        j.append(b"second record", true).expect("append");
        let records = usize::try_from(j.len()).expect("usize");
        drop(j);
        let clean = std::fs::read(&path).expect("bytes");
        for i in 0..records {
            let mut bad = clean.clone();
            bad[i] ^= 0x41;
            std::fs::write(&path, &bad).expect("write");
            match read(&path, 1) {
                Ok(c) => {
                    let first_len = HEADER + b"first record".len();
                    let expect = usize::from(i >= first_len);
                    assert_eq!(c.records.len(), expect, "flip at {i}");
                    assert!(c.torn_bytes > 0, "flip at {i}");
                }
                // The digest covers the store id, so a flipped id ends the journal too
                // instead of reading as another store's record.
                Err(e) => panic!("flip at {i}: {e}"),
            }
        }
    }

    #[test]
    fn records_written_over_older_ones_end_where_the_older_ones_start() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 1, 1).expect("open");
        for n in 0..3u8 {
            j.append(&[n; 100], true).expect("append");
        }
        // Emptied by a checkpoint: nothing to read, though the old bytes are still there.
        j.clear().expect("clear");
        let c = read(&path, 1).expect("read");
        assert!(c.records.is_empty());
        assert_eq!(c.torn_bytes, 0);
        let old = std::fs::read(&path).expect("bytes");
        // A later record, as long as the first: the zeros after it end the journal.
        assert_eq!(j.append(&[7; 100], true).expect("append"), 4);
        let c = read(&path, 1).expect("read");
        let seqs: Vec<u64> = c.records.iter().map(|r| r.seq).collect();
        assert_eq!((seqs, c.torn_bytes), (vec![4], 0));
        // Had those zeros not reached the disk, the second old record would follow whole,
        // and its number (2) does not follow 4.
        let mut bytes = std::fs::read(&path).expect("bytes");
        let end = usize::try_from(j.len()).expect("usize");
        bytes[end..end + 4].copy_from_slice(&old[end..end + 4]);
        std::fs::write(&path, &bytes).expect("write");
        let c = read(&path, 1).expect("read");
        let seqs: Vec<u64> = c.records.iter().map(|r| r.seq).collect();
        assert_eq!((seqs, c.torn_bytes), (vec![4], 0));
        // A shorter one lands inside the old records: the zeros written after it end the
        // journal there.
        assert_eq!(j.append(&[8; 10], true).expect("append"), 5);
        let c = read(&path, 1).expect("read");
        let seqs: Vec<u64> = c.records.iter().map(|r| r.seq).collect();
        assert_eq!((seqs, c.torn_bytes), (vec![4, 5], 0));
        // Without those zeros (lost in a crash), the old bytes behind it are no record
        // either: a torn tail, and the two records stand.
        let mut bytes = std::fs::read(&path).expect("bytes");
        let end = usize::try_from(j.len()).expect("usize");
        bytes[end..end + 4].copy_from_slice(&[1; 4]);
        std::fs::write(&path, &bytes).expect("write");
        let c = read(&path, 1).expect("read");
        assert_eq!(c.records.len(), 2);
        assert!(c.torn_bytes > 0);
    }

    #[test]
    fn an_emptying_lost_in_a_crash_brings_back_the_old_records() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 1, 1).expect("open");
        for n in 0..3u8 {
            j.append(&[n; 100], true).expect("append");
        }
        let old = std::fs::read(&path).expect("bytes");
        j.clear().expect("clear");
        drop(j);
        // The zeroed first header did not reach the disk.
        std::fs::write(&path, &old).expect("write");
        let c = read(&path, 1).expect("read");
        let seqs: Vec<u64> = c.records.iter().map(|r| r.seq).collect();
        assert_eq!((seqs, c.torn_bytes), (vec![1, 2, 3], 0));
    }

    #[test]
    fn records_of_another_store_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 1, 1).expect("open");
        j.append(b"x", true).expect("append");
        drop(j);
        let err = read(&path, 2).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("another store"), "{err}");
    }

    #[test]
    fn open_cuts_the_file_and_undo_takes_a_record_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 3, 1).expect("open");
        j.append(b"kept", true).expect("append");
        let kept = j.len();
        j.append(b"taken back", true).expect("append");
        j.undo_last(kept).expect("undo");
        assert_eq!((j.next_seq(), j.len()), (2, kept));
        drop(j);
        let c = read(&path, 3).expect("read");
        assert_eq!((c.records.len(), c.torn_bytes), (1, 0));
        // A header cut short after the record is a torn tail.
        let mut bytes = std::fs::read(&path).expect("bytes");
        let kept_usize = usize::try_from(kept).expect("usize");
        bytes.truncate(kept_usize);
        bytes.extend_from_slice(b"WJR1\x05");
        std::fs::write(&path, &bytes).expect("tail");
        let c = read(&path, 3).expect("read");
        assert_eq!((c.records.len(), c.torn_bytes), (1, 5));

        let mut j = Journal::open(&path, 3, 2).expect("reopen");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
        assert_eq!(j.append(b"next", true).expect("append"), 2);
        j.clear().expect("clear");
        assert!(j.is_empty());
        assert!(read(&path, 3).expect("read").records.is_empty());
        assert_eq!(j.append(b"after", true).expect("append"), 3);
        j.release().expect("release");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
    }
}
