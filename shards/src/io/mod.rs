//! The engine's only direct syscalls, and so its only `unsafe`.
//!
//! Appends use a plain `pwrite` from the shard's own thread: the data lands
//! in the page cache in a few microseconds, where `sendfile` finds it, while
//! glommio's buffered `write_at` is punted by io_uring to a kernel worker and
//! takes ~10× longer (docs/design.md §6). The expensive part, `fdatasync`, still goes
//! through glommio's io_uring so the core keeps serving while the disk works.
//! Small header reads use `pread` for the same reason; both touch only the
//! page cache on the hot path, and a cold read of a few KiB of headers is the
//! one place a shard may briefly wait on the disk.

// The syscall wrappers below are this crate's `unsafe`; the submodules
// `fault` and `replace` deny it again.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::io::RawFd;
use std::path::Path;

pub mod fault;
pub(crate) mod replace;

/// Removes `path`; a file that is already gone is not an error.
pub(crate) async fn remove_if_exists(path: &Path) -> crate::error::LogResult<()> {
    match glommio::io::remove(path).await {
        Ok(()) => Ok(()),
        Err(err) => {
            let err = std::io::Error::from(err);
            if err.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(crate::error::LogError::io("remove file", path, err))
            }
        }
    }
}

/// Makes the directory entries of `dir` durable (creations, renames and
/// removals in it): `fsync` on the directory. Here, not in the log, because
/// `replace` needs it too and `io` is the lowest layer: it depends on no
/// other engine module but `error`.
pub(crate) async fn sync_directory(dir: &Path) -> crate::error::LogResult<()> {
    use crate::error::LogError;
    let directory = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| LogError::glommio("open partition directory", dir, e))?;
    directory
        .sync()
        .await
        .map_err(|e| LogError::glommio("sync partition directory", dir, e))
}

/// Runs `call`, a syscall returning a count or -1 with `errno` set, again
/// for as long as it fails with `EINTR`; returns the count or the error.
fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let count = call();
        if let Ok(count) = usize::try_from(count) {
            return Ok(count);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Writes all of `buf` at `position`, retrying short writes and `EINTR`.
pub(crate) fn pwrite_all(fd: RawFd, mut buf: &[u8], mut position: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let written = retry_eintr(|| {
            // SAFETY: `buf` is a live, initialised slice for the duration of
            // the call and the kernel only reads `buf.len()` bytes from it.
            unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), position as libc::off_t) }
        })?;
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwrite wrote 0 bytes",
            ));
        }
        buf = &buf[written..];
        position += written as u64;
    }
    Ok(())
}

/// Reads into `buf` from `position` until it is full or end of file; returns
/// the number of bytes read.
pub fn pread_full(fd: RawFd, buf: &mut [u8], position: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        let read = retry_eintr(|| {
            // SAFETY: `rest` is a live, writable slice; the kernel writes at
            // most `rest.len()` bytes into it.
            unsafe {
                libc::pread(
                    fd,
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    (position + filled as u64) as libc::off_t,
                )
            }
        })?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

/// Reads exactly `len` bytes at `position` into a new `Vec`, without first
/// zero-filling it (one copy, page cache → vector).
pub fn pread_to_vec(fd: RawFd, len: usize, position: u64) -> io::Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(len);
    let mut filled = 0usize;
    while filled < len {
        let read = retry_eintr(|| {
            // SAFETY: the pointer is `filled` bytes into a buffer of capacity
            // `len`, so the kernel may write the `len - filled` bytes after
            // it; `set_len` below only covers bytes the kernel reported as
            // written.
            unsafe {
                libc::pread(
                    fd,
                    out.as_mut_ptr().add(filled).cast(),
                    len - filled,
                    (position + filled as u64) as libc::off_t,
                )
            }
        })?;
        if read == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        filled += read;
        // SAFETY: the first `filled` bytes were written by pread above.
        unsafe { out.set_len(filled) };
    }
    Ok(out)
}

/// Tells the kernel the range will not be read soon (sealed segments that
/// every consumer has passed), so it stops occupying the page cache.
pub fn fadvise_dont_need(fd: RawFd, position: u64, len: u64) -> io::Result<()> {
    // SAFETY: posix_fadvise only takes plain integers; a bad fd is an error
    // return, not undefined behaviour.
    let rc = unsafe {
        libc::posix_fadvise(
            fd,
            position as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Cuts the file to `len` bytes with a plain `ftruncate` on the calling
/// thread. Used only on error paths that hold a `RefCell` borrow and cannot
/// await (undoing a failed append); shrinking a file needs no free space.
pub(crate) fn ftruncate(fd: RawFd, len: u64) -> io::Result<()> {
    retry_eintr(|| {
        // SAFETY: ftruncate only takes plain integers; a bad fd is an error
        // return, not undefined behaviour.
        let rc = unsafe { libc::ftruncate(fd, len as libc::off_t) };
        rc as isize
    })
    .map(drop)
}

/// Short name of an errno for operators (`EIO`, `ENOSPC`, ...), or `None`
/// for one this table does not list.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EIO => "EIO",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::EROFS => "EROFS",
        libc::EBADF => "EBADF",
        libc::EINVAL => "EINVAL",
        libc::ENOMEM => "ENOMEM",
        libc::EFBIG => "EFBIG",
        libc::ENODEV => "ENODEV",
        libc::ENXIO => "ENXIO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        _ => return None,
    })
}
