//! File-system helpers with explicit durability: the one way a file is
//! replaced, directory syncs, and the store's lock.
#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// Replaces `path` with `contents` so that a crash leaves either the old
/// file or the new one: write a temporary, fdatasync it, rename it over the
/// target, fsync the directory.
pub fn replace_file(path: &Path, contents: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(|e| Error::io("create temporary", &temporary, e))?;
    file.write_all(contents)
        .map_err(|e| Error::io("write temporary", &temporary, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync temporary", &temporary, e))?;
    drop(file);
    fs::rename(&temporary, path).map_err(|e| Error::io("rename", path, e))?;
    sync_directory(path.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory, making the names created or removed in it durable.
pub fn sync_directory(directory: &Path) -> Result<()> {
    let handle = File::open(directory).map_err(|e| Error::io("open directory", directory, e))?;
    handle
        .sync_all()
        .map_err(|e| Error::io("fsync directory", directory, e))
}

/// How a new segment file gets its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Preallocation {
    /// `fallocate`: blocks reserved, no bytes written. Cheap to create; the
    /// first sync of each extent converts it (a journal commit).
    Reserve,
    /// Zeroes written through: costs a pass at creation, but syncs then only
    /// write data (measured ~5× faster group commits on this machine).
    ZeroFill,
}

/// Gives `file` allocated blocks for `offset..offset + len`, so writes
/// through a memory map into that range can never meet a full disk (which
/// would be SIGBUS, not an error).
pub(crate) fn preallocate(
    file: &File,
    path: &Path,
    offset: u64,
    len: u64,
    how: Preallocation,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    if how == Preallocation::Reserve {
        // SAFETY: fallocate on a file descriptor we own, with plain integers.
        let status = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                0,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if status == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(Error::io("fallocate segment", path, error));
        }
    }
    let zeros = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let chunk = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..chunk], offset + done)
            .map_err(|e| Error::io("zero-fill segment", path, e))?;
        done += chunk as u64;
    }
    Ok(())
}

/// An exclusive advisory lock on the store's `LOCK` file, held while open.
#[derive(Debug)]
pub(crate) struct DirectoryLock {
    _file: File,
}

impl DirectoryLock {
    pub(crate) fn acquire(directory: &Path) -> Result<DirectoryLock> {
        let path = directory.join("LOCK");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        // SAFETY: flock on a file descriptor we own.
        let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if status != 0 {
            return Err(Error::Locked {
                path: directory.to_path_buf(),
            });
        }
        Ok(DirectoryLock { _file: file })
    }
}
