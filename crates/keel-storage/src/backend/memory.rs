//! In-memory file systems: a volatile one for fast tests and a crash-simulating one.
//!
//! Both keep inodes (file contents) apart from names, as a real file system does, so a file
//! that is unlinked while open stays readable through its handle. The crash-simulating one also
//! keeps, per inode, the durable contents and the writes since the last sync, and per name
//! whether it reached the durable directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use keel_types::Rng;

use super::{Backend, StorageFile};

#[derive(Debug, Clone)]
enum PendingOp {
    Write { position: u64, data: Vec<u8> },
    SetLen(u64),
}

impl PendingOp {
    fn apply(&self, contents: &mut Vec<u8>) {
        match self {
            PendingOp::Write { position, data } => write_into(contents, *position, data),
            PendingOp::SetLen(len) => contents.resize(*len as usize, 0),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Mutations since the last sync, oldest first (only with durability tracking).
    pending: Vec<PendingOp>,
}

#[derive(Debug, Default)]
struct Fs {
    track_durability: bool,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Mutating operations so far (writes, truncations, syncs, renames, creations, removals).
    mutations: u64,
    /// After this many mutations every further operation fails, as after a power loss.
    fail_after: Option<u64>,
}

impl Fs {
    fn new(track_durability: bool) -> Fs {
        Fs { track_durability, ..Fs::default() }
    }

    /// Counts a mutation and fails it if the simulated power is gone.
    fn mutate(&mut self) -> io::Result<()> {
        if let Some(limit) = self.fail_after {
            if self.mutations >= limit {
                return Err(io::Error::other("simulated power loss"));
            }
        }
        self.mutations += 1;
        Ok(())
    }

    fn check_alive(&self) -> io::Result<()> {
        match self.fail_after {
            Some(limit) if self.mutations >= limit => Err(io::Error::other("simulated power loss")),
            _ => Ok(()),
        }
    }

    fn inode(&mut self, id: u64) -> &mut Inode {
        self.inodes.get_mut(&id).expect("open handles keep their inode")
    }

    fn record(&mut self, id: u64, op: PendingOp) {
        let track = self.track_durability;
        let inode = self.inode(id);
        op.apply(&mut inode.live);
        if track {
            inode.pending.push(op);
        }
    }

    fn not_found(path: &Path) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()))
    }
}

fn write_into(contents: &mut Vec<u8>, position: u64, data: &[u8]) {
    let end = position as usize + data.len();
    if contents.len() < end {
        contents.resize(end, 0);
    }
    contents[position as usize..end].copy_from_slice(data);
}

#[derive(Debug, Clone)]
struct Shared(Arc<Mutex<Fs>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Fs> {
        // A panic while holding the lock already failed the test; keep going for its report.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug)]
struct MemFile {
    fs: Shared,
    inode: u64,
}

impl StorageFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        let mut fs = self.fs.lock();
        fs.check_alive()?;
        Ok(fs.inode(self.inode).live.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.check_alive()?;
        let live = &fs.inode(self.inode).live;
        let end = position as usize + buf.len();
        if end > live.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file"));
        }
        buf.copy_from_slice(&live[position as usize..end]);
        Ok(())
    }

    fn write_all_at(&self, data: &[u8], position: u64) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.mutate()?;
        fs.record(self.inode, PendingOp::Write { position, data: data.to_vec() });
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.mutate()?;
        fs.record(self.inode, PendingOp::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.mutate()?;
        let inode = fs.inode(self.inode);
        inode.durable.clone_from(&inode.live);
        inode.pending.clear();
        Ok(())
    }
}

fn list(fs: &Fs, dir: &Path) -> io::Result<Vec<String>> {
    fs.check_alive()?;
    if !fs.dirs.contains(dir) {
        return Err(Fs::not_found(dir));
    }
    // BTreeMap keys are sorted, so the names come out sorted.
    Ok(fs
        .names
        .keys()
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect())
}

fn backend_op(shared: &Shared, op: Op<'_>) -> io::Result<Option<Arc<dyn StorageFile>>> {
    let mut fs = shared.lock();
    match op {
        Op::CreateDirAll(dir) => {
            fs.mutate()?;
            // Directories are treated as durable at once; the log's files are what matter.
            for ancestor in dir.ancestors() {
                fs.dirs.insert(ancestor.to_path_buf());
            }
        }
        Op::Open(path, create) => {
            fs.check_alive()?;
            let id = match fs.names.get(path) {
                Some(&id) => id,
                None if create => {
                    let parent = path.parent().unwrap_or(Path::new("/"));
                    if !fs.dirs.contains(parent) {
                        return Err(Fs::not_found(parent));
                    }
                    fs.mutate()?;
                    let id = fs.next_inode;
                    fs.next_inode += 1;
                    fs.inodes.insert(id, Inode::default());
                    fs.names.insert(path.to_path_buf(), id);
                    id
                }
                None => return Err(Fs::not_found(path)),
            };
            return Ok(Some(Arc::new(MemFile { fs: shared.clone(), inode: id })));
        }
        Op::RemoveFile(path) => {
            fs.mutate()?;
            fs.names.remove(path).ok_or_else(|| Fs::not_found(path))?;
        }
        Op::Rename(from, to) => {
            fs.mutate()?;
            let id = fs.names.remove(from).ok_or_else(|| Fs::not_found(from))?;
            fs.names.insert(to.to_path_buf(), id);
        }
        Op::RemoveDirAll(dir) => {
            fs.mutate()?;
            fs.names.retain(|p, _| !p.starts_with(dir));
            fs.dirs.retain(|d| !d.starts_with(dir));
            // Removing a whole directory is treated as durable at once.
            fs.durable_names.retain(|p, _| !p.starts_with(dir));
        }
        Op::SyncDir(dir) => {
            fs.mutate()?;
            if fs.track_durability {
                for (path, _) in entries_of(&fs.durable_names, dir) {
                    fs.durable_names.remove(&path);
                }
                let live = entries_of(&fs.names, dir);
                fs.durable_names.extend(live);
            }
        }
    }
    Ok(None)
}

/// The names directly in `dir`. Paths order by their components, so everything under `dir`
/// follows it in one run: a sync looks at that run only, not at every name on the disk.
fn entries_of(names: &BTreeMap<PathBuf, u64>, dir: &Path) -> Vec<(PathBuf, u64)> {
    names
        .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
        .take_while(|(path, _)| path.starts_with(dir))
        .filter(|(path, _)| path.parent() == Some(dir))
        .map(|(path, id)| (path.clone(), *id))
        .collect()
}

enum Op<'a> {
    CreateDirAll(&'a Path),
    Open(&'a Path, bool),
    RemoveFile(&'a Path),
    Rename(&'a Path, &'a Path),
    RemoveDirAll(&'a Path),
    SyncDir(&'a Path),
}

macro_rules! impl_backend {
    ($ty:ty) => {
        impl Backend for $ty {
            fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
                backend_op(&self.0, Op::CreateDirAll(dir)).map(drop)
            }
            fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
                list(&self.0.lock(), dir)
            }
            fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
                backend_op(&self.0, Op::Open(path, create)).map(|f| f.expect("open yields a file"))
            }
            fn exists(&self, path: &Path) -> io::Result<bool> {
                let fs = self.0.lock();
                fs.check_alive()?;
                Ok(fs.names.contains_key(path) || fs.dirs.contains(path))
            }
            fn remove_file(&self, path: &Path) -> io::Result<()> {
                backend_op(&self.0, Op::RemoveFile(path)).map(drop)
            }
            fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
                backend_op(&self.0, Op::Rename(from, to)).map(drop)
            }
            fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
                backend_op(&self.0, Op::RemoveDirAll(dir)).map(drop)
            }
            fn sync_dir(&self, dir: &Path) -> io::Result<()> {
                backend_op(&self.0, Op::SyncDir(dir)).map(drop)
            }
        }
    };
}

/// A volatile in-memory file system. Syncs are no-ops; nothing survives the process.
#[derive(Debug, Clone)]
pub struct MemoryBackend(Shared);

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend(Shared(Arc::new(Mutex::new(Fs::new(false)))))
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl_backend!(MemoryBackend);

/// A file system that can lose power.
///
/// It keeps a live image (what reads see) and a durable image: file contents become durable on
/// `sync_data`, names (creations, renames, removals) on `sync_dir` of their directory. After
/// [`CrashBackend::crash`] only the durable image remains, except that a random prefix of each
/// file's unsynced writes may also have reached the disk, the last of them possibly torn.
#[derive(Debug, Clone)]
pub struct CrashBackend(Shared);

impl CrashBackend {
    pub fn new() -> CrashBackend {
        CrashBackend(Shared(Arc::new(Mutex::new(Fs::new(true)))))
    }

    /// Mutating operations performed so far; crash tests pick crash points in this range.
    pub fn mutations(&self) -> u64 {
        self.0.lock().mutations
    }

    /// Makes the `limit`-th mutation and everything after it fail, as if power was lost there.
    pub fn fail_after(&self, limit: u64) {
        self.0.lock().fail_after = Some(limit);
    }

    /// The file system as it is found after power returns. `rng` decides how much of each
    /// file's unsynced writes reached the disk, and where the last of them tore.
    pub fn crash(&self, rng: &mut Rng) -> CrashBackend {
        let fs = self.0.lock();
        let mut after = Fs::new(true);
        after.dirs = fs.dirs.clone();
        after.next_inode = fs.next_inode;
        for (path, id) in &fs.durable_names {
            if after.inodes.contains_key(id) {
                after.names.insert(path.clone(), *id);
                continue;
            }
            let inode = &fs.inodes[id];
            let mut contents = inode.durable.clone();
            let survived = rng.below(inode.pending.len() as u64 + 1) as usize;
            for (i, op) in inode.pending[..survived].iter().enumerate() {
                let last = i + 1 == survived;
                match op {
                    PendingOp::Write { position, data } if last && rng.chance(1, 2) => {
                        let torn = rng.below(data.len() as u64 + 1) as usize;
                        write_into(&mut contents, *position, &data[..torn]);
                    }
                    op => op.apply(&mut contents),
                }
            }
            after.inodes.insert(*id, Inode { live: contents.clone(), durable: contents, pending: Vec::new() });
            after.names.insert(path.clone(), *id);
        }
        after.durable_names = after.names.clone();
        CrashBackend(Shared(Arc::new(Mutex::new(after))))
    }

    /// Flips one byte of a file's durable and live contents, as a bad disk sector would.
    pub fn corrupt_byte(&self, path: &Path, position: u64) {
        let mut fs = self.0.lock();
        let id = fs.names[path];
        let inode = fs.inode(id);
        inode.live[position as usize] ^= 0xA5;
        inode.durable[position as usize] ^= 0xA5;
    }
}

impl Default for CrashBackend {
    fn default() -> Self {
        CrashBackend::new()
    }
}

impl_backend!(CrashBackend);

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (CrashBackend, Arc<dyn StorageFile>) {
        let b = CrashBackend::new();
        b.create_dir_all(Path::new("/d")).unwrap();
        let f = b.open(Path::new("/d/f"), true).unwrap();
        (b, f)
    }

    #[test]
    fn synced_data_and_names_survive_unsynced_names_do_not() {
        let (b, f) = setup();
        f.write_all_at(b"abc", 0).unwrap();
        f.sync_data().unwrap();
        b.sync_dir(Path::new("/d")).unwrap();
        b.open(Path::new("/d/new"), true).unwrap();
        for seed in 0..20 {
            let after = b.crash(&mut Rng::new(seed));
            assert_eq!(super::super::read_all(&after, Path::new("/d/f")).unwrap(), b"abc");
            assert!(!after.exists(Path::new("/d/new")).unwrap(), "unsynced creation survived");
        }
    }

    #[test]
    fn unsynced_writes_survive_as_a_possibly_torn_prefix() {
        let (b, f) = setup();
        b.sync_dir(Path::new("/d")).unwrap();
        f.write_all_at(b"1111", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b"2222", 4).unwrap();
        f.write_all_at(b"3333", 8).unwrap();
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let after = b.crash(&mut Rng::new(seed));
            let got = super::super::read_all(&after, Path::new("/d/f")).unwrap();
            assert!(got.starts_with(b"1111"), "synced prefix lost: {got:?}");
            assert!(b"111122223333".starts_with(&got[..]) || got.len() == 12, "not a prefix: {got:?}");
            outcomes.insert(got.len());
        }
        assert!(outcomes.contains(&4) && outcomes.contains(&12), "{outcomes:?}");
        assert!(outcomes.iter().any(|&l| l != 4 && l != 8 && l != 12), "never tore: {outcomes:?}");
    }

    #[test]
    fn power_loss_fails_every_later_operation() {
        let (b, f) = setup();
        let done = b.mutations();
        b.fail_after(done + 1);
        f.write_all_at(b"x", 0).unwrap();
        assert!(f.write_all_at(b"y", 1).is_err());
        assert!(f.sync_data().is_err());
        assert!(b.list(Path::new("/d")).is_err());
    }
}
