//! The controller's Raft state on disk: term and vote, the latest snapshot, and the log.
//!
//! Raft's safety rests on these writes being durable before the messages that depend on them
//! leave, so every write here is synced before [`RaftStore::persist`] returns. Metadata is small
//! and infrequent; the cost is a few fsyncs per change, not per produced record.
//!
//! Layout, in `<data_dir>/__cluster_metadata/`:
//! - `format`: the format version of the files below ([`FORMAT_VERSION`]), written before any
//!   of them; a directory holding Raft state without it was written by an older keel (bincode);
//! - `state`: term, vote and whether the node trusts its state ([`Recovery`]), replaced
//!   atomically (write temp, sync, rename, sync dir). A directory without it belongs to a voter
//!   that has never written its term: a first start, or a replaced disk, which cannot be told
//!   apart, so the voter recovers (asks every other voter before it votes; docs/raft.md);
//! - `snapshot`: the latest snapshot, replaced the same way;
//! - `log`: entries after the snapshot, each framed as `[len u32][crc32c u32][postcard entry]`.
//!   A torn or corrupt frame at the tail (a crash mid-append) is cut off at recovery; a corrupt
//!   frame followed by valid ones is reported as an error instead of silently dropping entries.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use keel_raft::{Durable, Entry, HardState, LogIndex, Persist, Recovery, Snapshot};

use crate::error::DiskError;

const FRAME_HEADER: usize = 8;

/// The format of the files in the directory. Version 1 (no `format` file) was bincode; version
/// 2 is postcard (its stable 1.0 wire format).
pub const FORMAT_VERSION: u8 = 2;
const FORMAT_FILE: &str = "format";
const STATE_FILES: [&str; 3] = ["state", "snapshot", "log"];

/// The files of one node's Raft state.
#[derive(Debug)]
pub struct RaftStore {
    dir: PathBuf,
    log: File,
    /// What is on disk, mirrored in memory.
    durable: Durable,
    /// Byte offset of each entry's frame in `log`, parallel to `durable.entries`.
    offsets: Vec<u64>,
    log_len: u64,
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
    let path = dir.join(name);
    let temp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temp).map_err(|e| DiskError::io("create", &temp, e))?;
    file.write_all(bytes).map_err(|e| DiskError::io("write", &temp, e))?;
    file.sync_all().map_err(|e| DiskError::io("sync", &temp, e))?;
    std::fs::rename(&temp, &path).map_err(|e| DiskError::io("rename into", &path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| DiskError::io("sync directory", dir, e))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, DiskError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DiskError::io("read", path, e)),
    }
}

/// Checks the directory's format version, writing it into a directory that holds no Raft state
/// yet. An older or newer format is refused with what to do.
fn check_format(dir: &Path) -> Result<(), DiskError> {
    let path = dir.join(FORMAT_FILE);
    match read_optional(&path)? {
        Some(bytes) if bytes == [FORMAT_VERSION] => Ok(()),
        Some(bytes) => Err(DiskError::refused(
            &path,
            format!(
                "says format {bytes:?}; this keel reads Raft state of format version {FORMAT_VERSION} only: \
                 run the keel release that wrote it"
            ),
        )),
        None => {
            let written = STATE_FILES.iter().any(|name| dir.join(name).metadata().is_ok_and(|m| m.len() > 0));
            if written {
                return Err(DiskError::refused(
                    dir,
                    format!(
                        "holds Raft state written by an older keel (format 1, bincode); this keel reads format \
                         {FORMAT_VERSION} and cannot convert a cluster's metadata in place: start the cluster on \
                         empty data directories"
                    ),
                ));
            }
            write_atomically(dir, FORMAT_FILE, &[FORMAT_VERSION])
        }
    }
}

/// A file whose content is one postcard value followed by its CRC-32C.
fn encode_checked<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = postcard::to_stdvec(value).expect("in-memory serialization cannot fail");
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode_checked<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, DiskError> {
    if bytes.len() < 4 {
        return Err(DiskError::damaged(path, format!("truncated ({} bytes)", bytes.len())));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(DiskError::damaged(path, "it fails its CRC check"));
    }
    postcard::from_bytes(body).map_err(|e| DiskError::damaged(path, format!("it cannot be decoded: {e}")))
}

fn frame(entry: &Entry) -> Vec<u8> {
    let body = postcard::to_stdvec(entry).expect("in-memory serialization cannot fail");
    let mut bytes = Vec::with_capacity(FRAME_HEADER + body.len());
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

impl RaftStore {
    /// Opens (creating if needed) the Raft state in `dir` and recovers it.
    pub fn open(dir: &Path) -> Result<RaftStore, DiskError> {
        std::fs::create_dir_all(dir).map_err(|e| DiskError::io("create", dir, e))?;
        check_format(dir)?;
        let state_path = dir.join("state");
        let (hard_state, recovery): (HardState, Recovery) = match read_optional(&state_path)? {
            Some(bytes) => decode_checked(&state_path, &bytes)?,
            None => (HardState::default(), Durable::lost().recovery),
        };
        let snapshot_path = dir.join("snapshot");
        let snapshot: Option<Snapshot> = match read_optional(&snapshot_path)? {
            Some(bytes) => Some(decode_checked(&snapshot_path, &bytes)?),
            None => None,
        };
        let log_path = dir.join("log");
        let mut bytes = Vec::new();
        if let Some(mut file) = match File::open(&log_path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(DiskError::io("open", &log_path, e)),
        } {
            file.read_to_end(&mut bytes).map_err(|e| DiskError::io("read", &log_path, e))?;
        }
        let (entries, offsets, valid_len) = scan_log(&log_path, &bytes, snapshot.as_ref())?;
        let log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| DiskError::io("open", &log_path, e))?;
        if valid_len < bytes.len() as u64 {
            tracing::warn!(
                path = %log_path.display(),
                kept = valid_len,
                dropped = bytes.len() as u64 - valid_len,
                "cutting a torn tail off the Raft log"
            );
            log.set_len(valid_len).map_err(|e| DiskError::io("truncate", &log_path, e))?;
            log.sync_all().map_err(|e| DiskError::io("sync", &log_path, e))?;
        }
        let durable = Durable { hard_state, snapshot, entries, recovery };
        Ok(RaftStore { dir: dir.to_path_buf(), log, durable, offsets, log_len: valid_len })
    }

    /// Everything on disk, for [`keel_raft::Raft::restart`].
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// Makes one persist operation durable.
    pub fn persist(&mut self, persist: &Persist) -> Result<(), DiskError> {
        if persist.hard_state.is_some() || persist.recovery.is_some() {
            let hard_state = persist.hard_state.unwrap_or(self.durable.hard_state);
            let recovery = persist.recovery.unwrap_or(self.durable.recovery);
            write_atomically(&self.dir, "state", &encode_checked(&(hard_state, recovery)))?;
        }
        let rewrite = persist.snapshot.is_some();
        if let Some(after) = persist.truncate_after {
            if !rewrite {
                self.truncate_after(after)?;
            }
        }
        self.durable.apply(persist);
        if let Some(snapshot) = &persist.snapshot {
            write_atomically(&self.dir, "snapshot", &encode_checked(snapshot))?;
            self.rewrite_log()?;
        } else if !persist.append.is_empty() {
            self.append(&persist.append)?;
        }
        Ok(())
    }

    fn truncate_after(&mut self, after: LogIndex) -> Result<(), DiskError> {
        let keep = self.durable.entries.iter().take_while(|e| e.index <= after).count();
        if keep == self.offsets.len() {
            return Ok(());
        }
        let len = self.offsets[keep];
        let path = self.dir.join("log");
        self.log.set_len(len).map_err(|e| DiskError::io("truncate", &path, e))?;
        self.log.sync_all().map_err(|e| DiskError::io("sync", &path, e))?;
        self.offsets.truncate(keep);
        self.log_len = len;
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), DiskError> {
        let path = self.dir.join("log");
        let mut bytes = Vec::new();
        for entry in entries {
            self.offsets.push(self.log_len + bytes.len() as u64);
            bytes.extend_from_slice(&frame(entry));
        }
        use std::io::{Seek, SeekFrom};
        self.log.seek(SeekFrom::Start(self.log_len)).map_err(|e| DiskError::io("seek", &path, e))?;
        self.log.write_all(&bytes).map_err(|e| DiskError::io("append to", &path, e))?;
        self.log.sync_data().map_err(|e| DiskError::io("sync", &path, e))?;
        self.log_len += bytes.len() as u64;
        Ok(())
    }

    /// Replaces the log file with the entries after the snapshot (after a snapshot install or
    /// compaction, which are rare).
    fn rewrite_log(&mut self) -> Result<(), DiskError> {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(self.durable.entries.len());
        for entry in &self.durable.entries {
            offsets.push(bytes.len() as u64);
            bytes.extend_from_slice(&frame(entry));
        }
        write_atomically(&self.dir, "log", &bytes)?;
        let path = self.dir.join("log");
        self.log =
            OpenOptions::new().read(true).write(true).open(&path).map_err(|e| DiskError::io("reopen", &path, e))?;
        self.offsets = offsets;
        self.log_len = bytes.len() as u64;
        Ok(())
    }
}

/// Reads the log's frames: the entries after the snapshot, their offsets, and the length of the
/// valid prefix.
fn scan_log(path: &Path, bytes: &[u8], snapshot: Option<&Snapshot>) -> Result<(Vec<Entry>, Vec<u64>, u64), DiskError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut offsets = Vec::new();
    let mut at = 0usize;
    let after = snapshot.map_or(0, |s| s.index);
    while at < bytes.len() {
        let frame_start = at;
        let decoded = (|| {
            let header = bytes.get(at..at + FRAME_HEADER)?;
            let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
            let body = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len)?;
            if crc32c::crc32c(body) != crc {
                return None;
            }
            let entry: Entry = postcard::from_bytes(body).ok()?;
            Some((entry, FRAME_HEADER + len))
        })();
        let Some((entry, frame_len)) = decoded else {
            if frame_start + FRAME_HEADER < bytes.len() && has_valid_frame_after(bytes, frame_start + 1) {
                return Err(DiskError::damaged(
                    path,
                    format!("corrupt at byte {frame_start} with valid entries after it; refusing to drop them"),
                ));
            }
            return Ok((entries, offsets, frame_start as u64));
        };
        let expected = entries.last().map_or(after + 1, |e| e.index + 1);
        if entry.index > after {
            if entry.index != expected {
                return Err(DiskError::damaged(
                    path,
                    format!("it holds entry {} where entry {expected} was expected", entry.index),
                ));
            }
            offsets.push(frame_start as u64);
            entries.push(entry);
        }
        at += frame_len;
    }
    Ok((entries, offsets, at as u64))
}

/// Whether any offset from `from` starts a frame that checks out: tells a torn tail (nothing
/// valid after) from corruption in the middle.
fn has_valid_frame_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len().saturating_sub(FRAME_HEADER)).any(|at| {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        len > 0 && bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len).is_some_and(|body| crc32c::crc32c(body) == crc)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft::{Payload, Term};
    use keel_types::NodeId;

    fn entry(index: LogIndex, term: u64) -> Entry {
        Entry { index, term: Term(term), payload: Payload::Command(vec![index as u8; 10]) }
    }

    fn persist(id: u64) -> Persist {
        Persist { id, hard_state: None, recovery: None, snapshot: None, truncate_after: None, append: Vec::new() }
    }

    #[test]
    fn persists_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RaftStore::open(dir.path()).unwrap();
        let hard_state = HardState { term: Term(3), voted_for: Some(NodeId(2)) };
        store
            .persist(&Persist { hard_state: Some(hard_state), append: vec![entry(1, 1), entry(2, 1)], ..persist(1) })
            .unwrap();
        store
            .persist(&Persist { truncate_after: Some(1), append: vec![entry(2, 3), entry(3, 3)], ..persist(2) })
            .unwrap();
        let expected = store.durable().clone();
        drop(store);
        let store = RaftStore::open(dir.path()).unwrap();
        assert_eq!(store.durable(), &expected);
        assert_eq!(expected.entries, vec![entry(1, 1), entry(2, 3), entry(3, 3)]);
        assert_eq!(expected.hard_state, hard_state);
    }

    #[test]
    fn snapshot_compacts_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RaftStore::open(dir.path()).unwrap();
        store.persist(&Persist { append: (1..=5).map(|i| entry(i, 1)).collect(), ..persist(1) }).unwrap();
        let snapshot = Snapshot { index: 3, term: Term(1), data: b"image".to_vec() };
        store.persist(&Persist { snapshot: Some(snapshot.clone()), ..persist(2) }).unwrap();
        drop(store);
        let store = RaftStore::open(dir.path()).unwrap();
        assert_eq!(store.durable().snapshot, Some(snapshot));
        assert_eq!(store.durable().entries, vec![entry(4, 1), entry(5, 1)]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_mid_log_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RaftStore::open(dir.path()).unwrap();
        store.persist(&Persist { append: (1..=3).map(|i| entry(i, 1)).collect(), ..persist(1) }).unwrap();
        drop(store);
        let path = dir.path().join("log");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let mut store = RaftStore::open(dir.path()).unwrap();
        assert_eq!(store.durable().entries.len(), 2, "the torn third entry is gone");
        store.persist(&Persist { append: vec![entry(3, 2)], ..persist(2) }).unwrap();
        drop(store);
        assert_eq!(RaftStore::open(dir.path()).unwrap().durable().entries.last(), Some(&entry(3, 2)));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FRAME_HEADER + 2] ^= 0xff; // inside the first entry
        std::fs::write(&path, &bytes).unwrap();
        let error = RaftStore::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("corrupt at byte 0"), "{error}");
    }

    #[test]
    fn a_directory_without_state_is_not_trusted_until_recovery_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RaftStore::open(dir.path()).unwrap();
        assert_eq!(store.durable(), &Durable::lost(), "a fresh or replaced disk");
        let caught_up = Recovery::CatchingUp { last_log_index: 4, last_log_term: Term(2) };
        let hard_state = HardState { term: Term(2), voted_for: Some(NodeId(1)) };
        store.persist(&Persist { hard_state: Some(hard_state), recovery: Some(caught_up), ..persist(1) }).unwrap();
        drop(store);
        let mut store = RaftStore::open(dir.path()).unwrap();
        assert_eq!((store.durable().hard_state, store.durable().recovery), (hard_state, caught_up));
        store.persist(&Persist { recovery: Some(Recovery::Trusted), ..persist(2) }).unwrap();
        drop(store);
        let store = RaftStore::open(dir.path()).unwrap();
        assert_eq!((store.durable().hard_state, store.durable().recovery), (hard_state, Recovery::Trusted));
    }

    #[test]
    fn a_corrupt_state_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RaftStore::open(dir.path()).unwrap();
        store
            .persist(&Persist { hard_state: Some(HardState { term: Term(1), voted_for: None }), ..persist(1) })
            .unwrap();
        drop(store);
        let path = dir.path().join("state");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(RaftStore::open(dir.path()).unwrap_err().to_string().contains("CRC"));
    }

    #[test]
    fn raft_state_of_another_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RaftStore::open(dir.path()).unwrap();
        store.persist(&Persist { append: vec![entry(1, 1)], ..persist(1) }).unwrap();
        drop(store);
        assert_eq!(std::fs::read(dir.path().join(FORMAT_FILE)).unwrap(), [FORMAT_VERSION]);
        // What an older keel left: Raft state without a format file.
        std::fs::remove_file(dir.path().join(FORMAT_FILE)).unwrap();
        let error = RaftStore::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("older keel") && error.contains("empty data directories"), "{error}");
        std::fs::write(dir.path().join(FORMAT_FILE), [FORMAT_VERSION + 1]).unwrap();
        let error = RaftStore::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("keel release that wrote it"), "{error}");
        std::fs::write(dir.path().join(FORMAT_FILE), [FORMAT_VERSION]).unwrap();
        assert_eq!(RaftStore::open(dir.path()).unwrap().durable().entries, vec![entry(1, 1)]);
    }
}
