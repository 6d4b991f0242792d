//! The small file-system interface every byte of keel's logs goes through.
//!
//! Three implementations: [`FileBackend`] (real files), [`MemoryBackend`] (volatile, fast tests)
//! and [`CrashBackend`] (keeps a live image and a durable image, so a simulated power loss keeps
//! only what was synced, with the last unsynced writes possibly torn).

mod file;
mod memory;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use file::FileBackend;
pub use memory::{CrashBackend, MemoryBackend};

/// An open file. Positions are explicit: the log never relies on a file cursor.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + Debug {
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `position`; a file shorter than `position + buf.len()` is an
    /// `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
    fn write_all_at(&self, data: &[u8], position: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's contents durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
}

/// A directory tree of [`StorageFile`]s.
///
/// Durability of names follows POSIX: creating, renaming or removing a file is durable only
/// after [`Backend::sync_dir`] on its directory.
pub trait Backend: Send + Sync + Debug {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) directly inside `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for reading and writing, creating it (empty) if `create` and it is missing.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    fn exists(&self, path: &Path) -> io::Result<bool>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Writes `data` to `path` so that after a crash the file holds either its old contents or
/// `data`, never a mix: write a temporary file, sync it, rename it over, sync the directory.
pub fn write_atomically(backend: &dyn Backend, path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let file = backend.open(&tmp, true)?;
    file.set_len(0)?;
    file.write_all_at(data, 0)?;
    file.sync_data()?;
    backend.rename(&tmp, path)?;
    backend.sync_dir(dir)
}

/// Reads a whole file.
pub fn read_all(backend: &dyn Backend, path: &Path) -> io::Result<Vec<u8>> {
    let file = backend.open(path, false)?;
    let mut buf = vec![0; file.len()? as usize];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(backend: &dyn Backend, root: &Path) {
        let dir = root.join("p-0");
        backend.create_dir_all(&dir).unwrap();
        let f = backend.open(&dir.join("a.log"), true).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.write_all_at(b"world", 5).unwrap();
        assert_eq!(f.len().unwrap(), 10);
        let mut buf = [0; 4];
        f.read_exact_at(&mut buf, 3).unwrap();
        assert_eq!(&buf, b"lowo");
        let mut past_end = [0; 4];
        let err = f.read_exact_at(&mut past_end, 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        f.set_len(5).unwrap();
        f.sync_data().unwrap();
        assert_eq!(read_all(backend, &dir.join("a.log")).unwrap(), b"hello");
        assert!(backend.open(&dir.join("missing"), false).is_err());
        write_atomically(backend, &dir.join("cp"), b"one").unwrap();
        write_atomically(backend, &dir.join("cp"), b"two!").unwrap();
        assert_eq!(read_all(backend, &dir.join("cp")).unwrap(), b"two!");
        assert_eq!(backend.list(&dir).unwrap(), vec!["a.log".to_string(), "cp".to_string()]);
        backend.remove_file(&dir.join("a.log")).unwrap();
        assert!(!backend.exists(&dir.join("a.log")).unwrap());
        backend.remove_dir_all(&dir).unwrap();
        assert!(backend.list(&dir).map(|l| l.is_empty()).unwrap_or(true));
    }

    #[test]
    fn file_backend_contract() {
        let tmp = tempfile::tempdir().unwrap();
        exercise(&FileBackend, tmp.path());
    }

    #[test]
    fn memory_backend_contract() {
        exercise(&MemoryBackend::new(), Path::new("/data"));
    }

    #[test]
    fn crash_backend_contract() {
        exercise(&CrashBackend::new(), Path::new("/data"));
    }
}
