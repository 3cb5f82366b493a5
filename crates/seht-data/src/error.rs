//! The crate's error type: every error names the file, URL or value at fault.

use std::path::PathBuf;

/// Errors of loading, augmenting and fetching data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file the dataset needs is missing.
    #[error("{path}: missing ({hint})")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// Where it comes from.
        hint: String,
    },
    /// A binary file's size is not a whole number of records.
    #[error(
        "{path}: {size} bytes is not a whole number of {record}-byte records (the file is damaged or not this dataset's: restore it, or fetch the dataset again with `cargo xtask fetch-data`)"
    )]
    BadSize {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The record size.
        record: usize,
    },
    /// A label is outside the dataset's classes.
    #[error(
        "{path}: record {record} has label {label}, but the dataset has {classes} classes (the file is damaged or not this dataset's: restore it, or fetch the dataset again with `cargo xtask fetch-data`)"
    )]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Index of the record in the file.
        record: usize,
        /// The label found.
        label: u32,
        /// Number of classes.
        classes: usize,
    },
    /// A file does not follow its format (IDX header, gzip stream, …).
    #[error(
        "{path}: {reason} (the file is damaged or not this dataset's: restore it, or fetch the dataset again with `cargo xtask fetch-data`)"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A text split holds no tokens.
    #[error(
        "{path}: the split is empty (no tokens); every split of a corpus needs text: restore the file, or give a corpus folder whose three files all hold text"
    )]
    EmptySplit {
        /// The file.
        path: PathBuf,
    },
    /// An argument is out of range (batch size, subset size, …).
    #[error("invalid {name} = {value}: {reason}")]
    Invalid {
        /// The argument.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A download failed.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What happened, with what to do about it.
        reason: String,
    },
    /// A downloaded file does not have the published checksum.
    #[error(
        "{path}: {algorithm} checksum {actual} does not match the published {expected} (file removed; download again)"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// `"SHA-256"` or `"MD5"`.
        algorithm: &'static str,
        /// The published checksum.
        expected: String,
        /// The checksum of the file.
        actual: String,
    },
    /// A file differs from the checksum its folder's `SHA256SUMS` lists.
    #[error(
        "{path}: SHA-256 {actual} differs from {expected} listed in {list}: the file was changed or damaged (restore it, e.g. `git checkout -- {path}`)"
    )]
    Modified {
        /// The file.
        path: PathBuf,
        /// The checksum list.
        list: PathBuf,
        /// The listed checksum.
        expected: String,
        /// The checksum of the file.
        actual: String,
    },
    /// An error from candle while building tensors.
    #[cfg(feature = "tensors")]
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

pub(crate) fn invalid(name: &'static str, value: impl std::fmt::Display, reason: impl Into<String>) -> Error {
    Error::Invalid { name, value: value.to_string(), reason: reason.into() }
}

/// Reads a whole file, turning "not found" into [`Error::MissingFile`].
pub(crate) fn read_file(path: &std::path::Path, hint: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile { path: path.to_path_buf(), hint: hint.to_string() }
        } else {
            Error::Io { path: path.to_path_buf(), source }
        }
    })
}
