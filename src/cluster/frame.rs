//! The one framing used by every cluster file and by the raft RPC transport.
//!
//! ```text
//! frame := payload_len: u32 LE | crc32c(payload): u32 LE | payload
//! ```
//!
//! The payload is JSON (serde_json). Metadata changes are rare and small, and
//! JSON keeps the files inspectable in an incident and tolerates added fields
//! (`#[serde(default)]`) across versions; the length and CRC around it make
//! torn writes and bit rot detectable, which JSON alone would not.
//!
//! A reader checks `payload_len` against the caller's limit before
//! allocating, and the CRC right after reading; a writer checks the length
//! before writing. Neither ever panics on bad input.

use std::io::{self, Read};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes before the payload: length + CRC.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Why bytes are not a valid frame, or a value cannot become one.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("cannot encode payload: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot decode payload: {0}")]
    Decode(#[source] serde_json::Error),
}

/// What reading one frame found.
#[derive(Debug)]
pub enum ReadFrame {
    /// A whole frame whose CRC matched; the payload.
    Frame(Vec<u8>),
    /// End of input exactly at a frame boundary.
    End,
    /// End of input inside a frame: `available` bytes of it were there.
    Torn { available: usize },
}

/// Serialises `value` and appends it as one frame to `out`.
pub fn encode_into<T: Serialize>(
    out: &mut Vec<u8>,
    value: &T,
    payload_max: usize,
) -> Result<(), FrameError> {
    let payload = serde_json::to_vec(value).map_err(FrameError::Encode)?;
    append_payload(out, &payload, payload_max)
}

/// Serialises `value` as one frame.
pub fn encode<T: Serialize>(value: &T, payload_max: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_into(&mut out, value, payload_max)?;
    Ok(out)
}

/// Appends raw `payload` as one frame to `out`.
pub fn append_payload(
    out: &mut Vec<u8>,
    payload: &[u8],
    payload_max: usize,
) -> Result<(), FrameError> {
    if payload.len() > payload_max || payload.len() > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max: payload_max,
        });
    }
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes a verified payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(FrameError::Decode)
}

/// Splits a header into (payload length, stored CRC), checking the length.
fn parse_header(
    header: &[u8; FRAME_HEADER_BYTES],
    payload_max: usize,
) -> Result<(usize, u32), FrameError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > payload_max {
        return Err(FrameError::TooLarge {
            len,
            max: payload_max,
        });
    }
    Ok((len, crc))
}

fn verify(payload: &[u8], stored: u32) -> Result<(), FrameError> {
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Err(FrameError::CrcMismatch { stored, computed });
    }
    Ok(())
}

/// A frame that could not be read: corrupt bytes, or the reader failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Corrupt(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one frame from a blocking reader (files, on a blocking thread).
pub fn read_frame<R: Read>(reader: &mut R, payload_max: usize) -> Result<ReadFrame, ReadError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Ok(ReadFrame::End);
    }
    if got < FRAME_HEADER_BYTES {
        return Ok(ReadFrame::Torn { available: got });
    }
    let (len, crc) = parse_header(&header, payload_max)?;
    let mut payload = vec![0u8; len];
    let got = read_full(reader, &mut payload)?;
    if got < len {
        return Ok(ReadFrame::Torn {
            available: FRAME_HEADER_BYTES + got,
        });
    }
    verify(&payload, crc)?;
    Ok(ReadFrame::Frame(payload))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads one frame from a socket. A connection closed between frames is
/// `Ok(None)`; closed inside a frame is an `UnexpectedEof` error.
pub async fn read_frame_async<R: AsyncRead + Unpin>(
    reader: &mut R,
    payload_max: usize,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    reader.read_exact(&mut header[1..]).await?;
    let (len, crc) = parse_header(&header, payload_max)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    verify(&payload, crc)?;
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, &"hello", 64).unwrap();
        encode_into(&mut bytes, &42u32, 64).unwrap();
        let mut r = &bytes[..];
        let ReadFrame::Frame(p) = read_frame(&mut r, 64).unwrap() else {
            panic!()
        };
        assert_eq!(decode::<String>(&p).unwrap(), "hello");
        let ReadFrame::Frame(p) = read_frame(&mut r, 64).unwrap() else {
            panic!()
        };
        assert_eq!(decode::<u32>(&p).unwrap(), 42);
        assert!(matches!(read_frame(&mut r, 64).unwrap(), ReadFrame::End));

        // Torn: every proper prefix of a frame.
        let one = encode(&"hello", 64).unwrap();
        for cut in 1..one.len() {
            let mut r = &one[..cut];
            assert!(
                matches!(read_frame(&mut r, 64).unwrap(), ReadFrame::Torn { available } if available == cut),
                "cut {cut}"
            );
        }
        // A flipped payload bit fails the CRC.
        let mut flipped = one.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            read_frame(&mut &flipped[..], 64),
            Err(ReadError::Corrupt(FrameError::CrcMismatch { .. }))
        ));
        // A length above the limit is refused before allocating.
        assert!(matches!(
            read_frame(&mut &one[..], 3),
            Err(ReadError::Corrupt(FrameError::TooLarge { len: 7, max: 3 }))
        ));
        assert!(matches!(
            encode(&"hello", 3),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
