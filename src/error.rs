//! The crate's one error type, and the one place where errnos are chosen.
//!
//! Every error names the file it is about (a layer tar, an index file, a path in
//! the merged view) so that a message printed to a user says what to look at.

use std::io;
use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in unionfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The layer tar is malformed at `offset`; the layer is refused.
    #[error("{}: corrupt tar at offset {offset}: {reason}", path.display())]
    CorruptTar {
        /// The layer tar.
        path: PathBuf,
        /// Byte offset of the header (or record) that is wrong.
        offset: u64,
        /// What is wrong, in words.
        reason: String,
    },
    /// The file is not a layer tar we can serve (compressed, empty, a directory...).
    #[error("{}: {reason}", path.display())]
    NotATar {
        /// The file given as a layer.
        path: PathBuf,
        /// Why it was refused, and what to do about it.
        reason: String,
    },
    /// A persisted index is unusable (it is then rebuilt; this is only shown by `--no-rebuild`).
    #[error("{}: bad index file: {reason}", path.display())]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// A path does not exist in the merged view.
    #[error("{0}: no such file or directory in the merged view")]
    NotFound(String),
    /// Reassembly produced a digest other than the one expected.
    #[error("{}: digest mismatch: expected {expected}, got {actual}", path.display())]
    DigestMismatch {
        /// The layer tar.
        path: PathBuf,
        /// The digest asked for.
        expected: String,
        /// The digest computed.
        actual: String,
    },
    /// An image (archive, layout, manifest, config, blob) is unusable.
    #[error("{}: {reason}", path.display())]
    Image {
        /// The archive, directory or member (`ARCHIVE:PATH`) at fault.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A registry refused or failed a request (the message names the
    /// reference).
    #[error("{0}")]
    Registry(String),
    /// Bad command-line usage that clap cannot catch.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Wraps an `io::Error` with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The errno a FUSE reply should carry for this error.
    ///
    /// I/O errors pass their OS error through; anything else that reaches a FUSE
    /// reply is an internal inconsistency and becomes `EIO` (the kernel's
    /// `WARN_ON → -EIO` rule).
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::NotFound(_) => libc::ENOENT,
            Error::Usage(_) => libc::EINVAL,
            Error::CorruptTar { .. }
            | Error::NotATar { .. }
            | Error::BadIndex { .. }
            | Error::Image { .. }
            | Error::Registry(_)
            | Error::DigestMismatch { .. } => libc::EIO,
        }
    }
}
