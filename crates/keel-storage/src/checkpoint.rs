//! The recovery checkpoint: how far the log is known to be flushed, and whether it was closed
//! cleanly. Written atomically (temporary file, sync, rename, directory sync).

use std::path::Path;

use crate::backend::{read_all, write_atomically, Backend};
use crate::error::{IoContext, IoError};

pub(crate) const FILE_NAME: &str = "recovery-checkpoint";
const MAGIC: &[u8; 8] = b"KEELCKPT";
const VERSION: u16 = 1;
const ENCODED_BYTES: usize = 8 + 2 + 2 + 8 + 8 + 8 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The log was closed cleanly: everything up to `log_end_offset` is flushed and indexed.
    pub(crate) clean: bool,
    /// Every batch below this offset was synced, and so were the index entries for it.
    pub(crate) recovery_point: i64,
    pub(crate) log_start_offset: i64,
    pub(crate) log_end_offset: i64,
}

impl Checkpoint {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ENCODED_BYTES);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&u16::from(self.clean).to_be_bytes());
        b.extend_from_slice(&self.recovery_point.to_be_bytes());
        b.extend_from_slice(&self.log_start_offset.to_be_bytes());
        b.extend_from_slice(&self.log_end_offset.to_be_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Checkpoint, String> {
        if b.len() != ENCODED_BYTES {
            return Err(format!("{} bytes, expected {ENCODED_BYTES}", b.len()));
        }
        let (body, crc) = b.split_at(ENCODED_BYTES - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err("checksum mismatch".to_string());
        }
        if &body[..8] != MAGIC || body[8..10] != VERSION.to_be_bytes() {
            return Err("unknown format or version".to_string());
        }
        let i64_at = |at: usize| i64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        Ok(Checkpoint {
            clean: body[11] & 1 == 1,
            recovery_point: i64_at(12),
            log_start_offset: i64_at(20),
            log_end_offset: i64_at(28),
        })
    }

    pub(crate) fn load(backend: &dyn Backend, dir: &Path) -> Result<Option<Checkpoint>, crate::OpenError> {
        let path = dir.join(FILE_NAME);
        if !backend.exists(&path).io_context("check", &path)? {
            return Ok(None);
        }
        let bytes = read_all(backend, &path).io_context("read", &path)?;
        Checkpoint::decode(&bytes).map(Some).map_err(|reason| crate::OpenError::Corrupt {
            file: path,
            position: 0,
            reason,
        })
    }

    pub(crate) fn store(&self, backend: &dyn Backend, dir: &Path) -> Result<(), IoError> {
        let path = dir.join(FILE_NAME);
        write_atomically(backend, &path, &self.encode()).io_context("write", &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let c = Checkpoint { clean: true, recovery_point: 42, log_start_offset: 7, log_end_offset: 42 };
        let mut b = c.encode();
        assert_eq!(Checkpoint::decode(&b), Ok(c));
        b[14] ^= 1;
        assert!(Checkpoint::decode(&b).is_err());
        assert!(Checkpoint::decode(&b[..10]).is_err());
    }
}
