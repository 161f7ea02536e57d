//! Zero-copy fetch payloads: `sendfile(2)` from the segment file to the
//! client socket, on the shard's own thread.
//!
//! glommio has no sendfile op and its io_uring is private, so (docs/design.md §8):
//! the socket is non-blocking, `sendfile` runs until the socket buffer is
//! full (`EAGAIN`), then one small chunk is copied through glommio's
//! `TcpStream` — which parks this task until the socket is writable, via
//! io_uring — and `sendfile` resumes. Only the chunks written while the
//! client was slow are copied (a fraction of a percent on a fast reader).

// fcntl and sendfile(2) are raw syscalls.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

use futures::AsyncWriteExt;
use glommio::net::TcpStream;
use shards::segment::SegmentFile;

/// Bytes copied through user space when the socket is full, to wait for
/// POLLOUT through io_uring.
pub const PARK_CHUNK_BYTES: usize = 16 << 10;

/// How the bytes of one range went out.
pub struct SendOutcome {
    pub sendfile_bytes: u64,
    pub copied_bytes: u64,
    pub result: io::Result<()>,
}

pub async fn send_file_range(
    stream: &mut TcpStream,
    file: &SegmentFile,
    position: u64,
    len: u64,
) -> SendOutcome {
    let mut outcome = SendOutcome {
        sendfile_bytes: 0,
        copied_bytes: 0,
        result: Ok(()),
    };
    let socket = stream.as_raw_fd();
    if let Err(err) = set_nonblocking(socket) {
        outcome.result = Err(err);
        return outcome;
    }
    let mut offset = position;
    let end = position + len;
    let mut chunk = Vec::new();
    while offset < end {
        let remaining = end - offset;
        match sendfile(socket, file.raw_fd(), &mut offset, remaining) {
            Ok(0) => {
                outcome.result = Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file shorter than the committed range",
                ));
                return outcome;
            }
            Ok(sent) => outcome.sendfile_bytes += sent as u64,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                // Socket full: copy one chunk through glommio, which waits
                // for room without blocking the shard.
                let want = PARK_CHUNK_BYTES.min((end - offset) as usize);
                chunk.resize(want, 0);
                match pread_exact(file.raw_fd(), &mut chunk, offset) {
                    Ok(()) => {}
                    Err(err) => {
                        outcome.result = Err(err);
                        return outcome;
                    }
                }
                if let Err(err) = stream.write_all(&chunk).await {
                    outcome.result = Err(err);
                    return outcome;
                }
                offset += want as u64;
                outcome.copied_bytes += want as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                outcome.result = Err(err);
                return outcome;
            }
        }
    }
    outcome
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL only reads and writes the file
    // status flags of `fd`; an invalid fd is reported as an error.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0
            && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn sendfile(socket: RawFd, file: RawFd, offset: &mut u64, count: u64) -> io::Result<usize> {
    let mut off = *offset as libc::off_t;
    let count = count.min(isize::MAX as u64) as usize;
    // SAFETY: `off` is a valid, exclusive pointer for the call; the kernel
    // copies between the two descriptors and touches no user memory else.
    let sent = unsafe { libc::sendfile(socket, file, &mut off, count) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(sent as usize)
}

/// Fills `buf` from the page cache at `position`.
fn pread_exact(fd: RawFd, buf: &mut [u8], position: u64) -> io::Result<()> {
    if shards::io::pread_full(fd, buf, position)? < buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "segment shorter than expected",
        ));
    }
    Ok(())
}
