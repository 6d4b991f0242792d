//! Producer ids for idempotent producers: unique for the life of the data directory.
//!
//! Ids are reserved in blocks: the file `producer-ids` holds the first id of the next block,
//! and is rewritten (atomically, synced) before any id of a new block is handed out, so a
//! crash can skip ids but never repeat one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use keel_storage::backend::{write_atomically, FileBackend};

const FILE_NAME: &str = "producer-ids";
const BLOCK: i64 = 1000;
/// In a cluster each node hands out ids from its own range, `node id << 40` upwards, so ids
/// are unique across the cluster without asking the controller (2^40 ids per node).
const NODE_SHIFT: u32 = 40;

#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the reserved block), within this node's range.
    range: Mutex<(i64, i64)>,
    /// Added to every id: this node's range in a cluster, 0 on a single node.
    base: i64,
}

impl ProducerIds {
    /// Opens the id reservation of a single node (`node: None`) or of a cluster member.
    pub fn open(data_dir: &Path, node: Option<i32>) -> Result<ProducerIds, String> {
        let base = node.map_or(0, |n| i64::from(n) << NODE_SHIFT);
        let path = data_dir.join(FILE_NAME);
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|_| format!("{} is damaged: {text:?}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(ProducerIds { path, range: Mutex::new((next, next)), base })
    }

    pub fn next(&self) -> Result<i64, String> {
        let mut range = self.range.lock().unwrap_or_else(|p| p.into_inner());
        if range.0 == range.1 {
            let end = range.1 + BLOCK;
            write_atomically(&FileBackend, &self.path, end.to_string().as_bytes())
                .map_err(|e| format!("cannot reserve producer ids in {}: {e}", self.path.display()))?;
            range.1 = end;
        }
        let id = range.0;
        range.0 += 1;
        Ok(self.base + id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path(), None).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.next().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(ids);
        let ids = ProducerIds::open(dir.path(), None).unwrap();
        assert_eq!(ids.next().unwrap(), BLOCK, "a reopened broker starts past the reserved block");
        let other = tempfile::tempdir().unwrap();
        let node_3 = ProducerIds::open(other.path(), Some(3)).unwrap();
        assert_eq!(node_3.next().unwrap(), 3 << NODE_SHIFT, "cluster members never hand out the same id");
    }
}
