//! `SHA256SUMS` files (the format `sha256sum` writes and `sha256sum -c`
//! checks: one `<64 hex digits>  <file name>` per line) beside a dataset's
//! files: the data shipped in the repository carries one, and the loaders
//! check every file it lists before reading any.

use std::io::Read;
use std::path::Path;

use sha2::Digest;

use crate::error::{Error, Result, io};

/// The name of the checksum list in a dataset folder.
pub const SHA256SUMS: &str = "SHA256SUMS";

/// Hex SHA-256 of the file at `path`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut h = sha2::Sha256::new();
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// When `dir` holds a [`SHA256SUMS`] file, checks every file it lists;
/// returns how many were checked (0 without a list).
///
/// # Errors
/// [`Error::Format`] naming the line of a malformed list,
/// [`Error::MissingFile`] for a listed file that is absent, and
/// [`Error::Modified`] for a file whose checksum differs from the list's.
pub fn verify_sha256sums(dir: &Path) -> Result<usize> {
    let list = dir.join(SHA256SUMS);
    let text = match std::fs::read_to_string(&list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::Io { path: list, source: e }),
    };
    let mut checked = 0;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = || Error::Format {
            path: list.clone(),
            reason: format!("line {}: expected `<64 hex digits>  <file name>`, found `{line}`", i + 1),
        };
        let (hash, name) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
        let name = name.trim_start().trim_start_matches('*');
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        let path = dir.join(name);
        if !path.is_file() {
            return Err(Error::MissingFile { path, hint: format!("listed in {}", list.display()) });
        }
        let actual = sha256_file(&path)?;
        if !actual.eq_ignore_ascii_case(hash) {
            return Err(Error::Modified { path, list, expected: hash.to_ascii_lowercase(), actual });
        }
        checked += 1;
    }
    Ok(checked)
}
