//! Reading the small files cdwqc keeps beside its work (shard manifests and parts, job
//! plans, Slurm submissions): regular files only, opened without blocking, never read
//! past a size bound, so a FIFO or a link to `/dev/zero` planted under such a name is a
//! plain I/O error instead of a command that hangs holding the store.

use std::io::{self, Read};
use std::path::Path;

use crate::imaging::ImagingError;

/// Opens `path` as a regular file without blocking; returns the reader, bounded by the
/// file's size, and that size.
pub fn open(path: &Path) -> io::Result<(io::Take<std::fs::File>, u64)> {
    match crate::imaging::nifti::open_regular(path) {
        Ok(opened) => Ok(opened),
        Err(ImagingError::Io { source, .. }) => Err(source),
        Err(ImagingError::NotRegularFile { .. }) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a folder, device, FIFO or socket)",
        )),
        Err(ImagingError::Empty { .. }) => {
            Err(io::Error::new(io::ErrorKind::InvalidData, "empty file"))
        }
        Err(other) => Err(io::Error::other(other.reason())),
    }
}

/// The text of a regular file of at most `max_bytes` bytes.
pub fn read_text(path: &Path, max_bytes: u64) -> io::Result<String> {
    let (mut file, size) = open(path)?;
    if size > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{size} bytes, more than the {max_bytes} such a file may hold"),
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_devices_folders_and_large_files_are_errors_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("c");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_text(&fifo, 1 << 20).expect_err("fifo").kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(read_text(Path::new("/dev/zero"), 1 << 20).is_err());
        assert!(read_text(dir.path(), 1 << 20).is_err());
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; 2048]).expect("write");
        assert!(read_text(&big, 1024).is_err());
        assert_eq!(read_text(&big, 4096).expect("read").len(), 2048);
        assert_eq!(
            read_text(&dir.path().join("none"), 10)
                .expect_err("missing")
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
