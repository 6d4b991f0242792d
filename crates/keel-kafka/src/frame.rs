//! Kafka framing: every request and response is a 4-byte big-endian size and that many bytes.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

pub const FRAME_LENGTH_BYTES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The size prefix exceeds `socket.request.max.bytes`; the connection must close.
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({limit})")]
    TooLarge { size: i64, limit: usize },
    #[error("negative frame size {0}")]
    Negative(i32),
}

/// Splits a byte stream into frames. Feed it what the socket delivered; take whole frames.
#[derive(Debug)]
pub struct FrameDecoder {
    limit: usize,
}

impl FrameDecoder {
    pub fn new(limit: usize) -> FrameDecoder {
        FrameDecoder { limit }
    }

    /// The next whole frame (without its size prefix) from `buffer`, if one has arrived. The
    /// size is checked as soon as the prefix is in, before the body is buffered.
    pub fn decode(&self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buffer.len() < FRAME_LENGTH_BYTES {
            return Ok(None);
        }
        let size = i32::from_be_bytes(buffer[..FRAME_LENGTH_BYTES].try_into().expect("4 bytes"));
        if size < 0 {
            return Err(FrameError::Negative(size));
        }
        let size = size as usize;
        if size > self.limit {
            return Err(FrameError::TooLarge { size: size as i64, limit: self.limit });
        }
        if buffer.len() < FRAME_LENGTH_BYTES + size {
            buffer.reserve(FRAME_LENGTH_BYTES + size - buffer.len());
            return Ok(None);
        }
        buffer.advance(FRAME_LENGTH_BYTES);
        Ok(Some(buffer.split_to(size).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_and_back_to_back() {
        let decoder = FrameDecoder::new(100);
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&[0, 0, 0, 3, b'a']);
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        buffer.extend_from_slice(&[b'b', b'c', 0, 0, 0, 1, b'd', 0]);
        assert_eq!(decoder.decode(&mut buffer), Ok(Some(Bytes::from_static(b"abc"))));
        assert_eq!(decoder.decode(&mut buffer), Ok(Some(Bytes::from_static(b"d"))));
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        assert_eq!(buffer.len(), 1);
    }

    #[test]
    fn oversized_and_negative_frames_are_refused_before_buffering() {
        let decoder = FrameDecoder::new(100);
        let mut huge = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(decoder.decode(&mut huge), Err(FrameError::TooLarge { .. })));
        let mut negative = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(decoder.decode(&mut negative), Err(FrameError::Negative(-1)));
        let mut exact = BytesMut::from(&[0, 0, 0, 100][..]);
        exact.extend_from_slice(&[0; 100]);
        assert!(decoder.decode(&mut exact).unwrap().is_some());
    }
}
