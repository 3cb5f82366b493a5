//! Downloads against a local HTTP server on 127.0.0.1 serving fixture
//! archives: a good one, a corrupt one, a truncated one, a server that ignores
//! ranges, a missing file, and no server at all. Never touches the internet.
#![cfg(feature = "fetch")]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::*;
use seht_data::Error;
use seht_data::fetch::{Archive, ArchiveKind, Checksum, FetchOptions, fetch_archive};
use sha2::Digest;

#[derive(Clone)]
enum Route {
    /// Serve the bytes, honouring `Range: bytes=N-`.
    Normal(Vec<u8>),
    /// Announce the full length, send only the first `n` bytes, close.
    Truncate(Vec<u8>, usize),
    /// Serve the bytes with status 200, ignoring any range.
    IgnoreRange(Vec<u8>),
}

struct Server {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    requests: Arc<Mutex<Vec<(String, Option<String>)>>>,
}

impl Server {
    /// Serves at most 16 connections, then its thread ends.
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let requests: Arc<Mutex<Vec<(String, Option<String>)>>> = Arc::default();
        let (r, q) = (routes.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(16) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut range = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("range: ").or_else(|| h.strip_prefix("Range: ")) {
                        range = Some(v.trim().to_string());
                    }
                }
                q.lock().expect("lock").push((path.clone(), range.clone()));
                let route = r.lock().expect("lock").get(&path).cloned();
                let from = range
                    .as_deref()
                    .and_then(|v| v.strip_prefix("bytes="))
                    .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok());
                let _ = match route {
                    None => {
                        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    }
                    Some(Route::Normal(b)) => match from {
                        Some(n) if n < b.len() => {
                            let head = format!(
                                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nConnection: close\r\n\r\n",
                                b.len() - n,
                                n,
                                b.len() - 1,
                                b.len()
                            );
                            stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&b[n..]))
                        }
                        Some(_) => stream.write_all(
                            b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        ),
                        None => {
                            let head =
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len());
                            stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&b))
                        }
                    },
                    Some(Route::Truncate(b, n)) => {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len());
                        stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&b[..n]))
                    }
                    Some(Route::IgnoreRange(b)) => {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len());
                        stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&b))
                    }
                };
                let _ = stream.flush();
            }
        });
        Self { port, routes, requests }
    }

    fn route(&self, path: &str, r: Route) {
        self.routes.lock().expect("lock").insert(path.to_string(), r);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.requests.lock().expect("lock").clone()
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A `.tar.gz` of a fixture CIFAR-10 folder.
fn cifar10_targz() -> Vec<u8> {
    let tmp = temp_dir("targz-src");
    write_cifar10(tmp.path(), 2);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    t.append_dir_all("cifar-10-batches-bin", tmp.path().join("cifar-10-batches-bin")).expect("tar");
    t.into_inner().expect("tar").finish().expect("gz")
}

fn cifar_archive(bytes: &[u8]) -> Archive {
    Archive {
        name: "CIFAR-10 fixture",
        url: "https://example.invalid/never-used",
        file: "cifar-10-binary.tar.gz",
        checksum: Checksum::Sha256(leak(format!("{:x}", sha2::Sha256::digest(bytes)))),
        kind: ArchiveKind::TarGz,
        folder: "cifar-10-batches-bin",
        marker: "test_batch.bin",
    }
}

fn opts(url: String) -> FetchOptions {
    FetchOptions { progress: false, connect_timeout: std::time::Duration::from_secs(5), url_override: Some(url) }
}

#[test]
fn downloads_verifies_unpacks_and_then_skips() {
    let server = Server::start();
    let bytes = cifar10_targz();
    server.route("/c10.tar.gz", Route::Normal(bytes.clone()));
    let data = temp_dir("fetch-ok");
    let archive = cifar_archive(&bytes);
    let folder = fetch_archive(&archive, data.path(), &opts(server.url("/c10.tar.gz"))).expect("fetch");
    let ds = seht_data::load_cifar10(&folder).expect("load what was fetched");
    assert_eq!((ds.train.len(), ds.test.len()), (10, 2));
    assert_eq!(server.requests().len(), 1);
    fetch_archive(&archive, data.path(), &opts(server.url("/c10.tar.gz"))).expect("second call");
    assert_eq!(server.requests().len(), 1, "an unpacked dataset is not downloaded again");
}

#[test]
fn corrupt_archive_fails_its_checksum_and_is_removed() {
    let server = Server::start();
    let bytes = cifar10_targz();
    let mut bad = bytes.clone();
    bad[100] ^= 0xff;
    server.route("/bad.tar.gz", Route::Normal(bad));
    let data = temp_dir("fetch-bad");
    match fetch_archive(&cifar_archive(&bytes), data.path(), &opts(server.url("/bad.tar.gz"))) {
        Err(Error::Checksum { path, algorithm, .. }) => {
            assert_eq!(algorithm, "SHA-256");
            assert!(!path.exists(), "a file with the wrong checksum is removed");
        }
        other => panic!("expected Checksum, got {other:?}"),
    }
    // MD5 (as published for CIFAR) is checked the same way.
    let mut md5_archive = cifar_archive(&bytes);
    md5_archive.checksum = Checksum::Md5("00000000000000000000000000000000");
    server.route("/good.tar.gz", Route::Normal(bytes));
    assert!(matches!(
        fetch_archive(&md5_archive, data.path(), &opts(server.url("/good.tar.gz"))),
        Err(Error::Checksum { algorithm: "MD5", .. })
    ));
}

#[test]
fn truncated_download_resumes_with_a_range_request() {
    let server = Server::start();
    let bytes = cifar10_targz();
    let half = bytes.len() / 2;
    server.route("/c10.tar.gz", Route::Truncate(bytes.clone(), half));
    let data = temp_dir("fetch-resume");
    let archive = cifar_archive(&bytes);
    let err = fetch_archive(&archive, data.path(), &opts(server.url("/c10.tar.gz"))).expect_err("truncated");
    let msg = err.to_string();
    assert!(msg.contains("resume") && msg.contains("/c10.tar.gz"), "{msg}");
    let part = data.path().join("cifar-10-binary.tar.gz.part");
    assert_eq!(std::fs::metadata(&part).expect("partial file kept").len(), half as u64);
    server.route("/c10.tar.gz", Route::Normal(bytes.clone()));
    let folder = fetch_archive(&archive, data.path(), &opts(server.url("/c10.tar.gz"))).expect("resumed");
    assert!(folder.join("data_batch_5.bin").is_file());
    let reqs = server.requests();
    assert_eq!(reqs[1].1.as_deref(), Some(format!("bytes={half}-").as_str()), "second request resumes: {reqs:?}");
    assert!(!part.exists());
}

#[test]
fn a_server_that_ignores_ranges_restarts_the_download() {
    let server = Server::start();
    let bytes = cifar10_targz();
    server.route("/c10.tar.gz", Route::Truncate(bytes.clone(), 1000));
    let data = temp_dir("fetch-restart");
    let archive = cifar_archive(&bytes);
    assert!(fetch_archive(&archive, data.path(), &opts(server.url("/c10.tar.gz"))).is_err());
    server.route("/c10.tar.gz", Route::IgnoreRange(bytes));
    fetch_archive(&archive, data.path(), &opts(server.url("/c10.tar.gz"))).expect("restarted from scratch");
}

#[test]
fn offline_fails_at_once_naming_the_url_and_the_manual_route() {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port(); // closed on drop
    let data = temp_dir("fetch-offline");
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let t0 = std::time::Instant::now();
    let err = fetch_archive(&seht_data::fetch::CIFAR10, data.path(), &opts(url.clone())).expect_err("no server");
    assert!(t0.elapsed().as_secs() < 5, "fails at once");
    let msg = err.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(
        msg.contains("by hand") && msg.contains("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"),
        "{msg}"
    );
}

#[test]
fn missing_remote_file_is_an_http_error() {
    let server = Server::start();
    let data = temp_dir("fetch-404");
    let err = fetch_archive(&cifar_archive(b"x"), data.path(), &opts(server.url("/nope"))).expect_err("404");
    assert!(err.to_string().contains("HTTP status 404"), "{err}");
}

#[test]
fn an_archive_placed_by_hand_is_used_without_a_download() {
    let bytes = cifar10_targz();
    let data = temp_dir("fetch-manual");
    std::fs::write(data.path().join("cifar-10-binary.tar.gz"), &bytes).expect("place");
    let folder = fetch_archive(&cifar_archive(&bytes), data.path(), &opts("http://127.0.0.1:9/unused".into()))
        .expect("no download");
    assert!(folder.join("test_batch.bin").is_file());
}

#[test]
fn wikitext_zip_unpacks_into_its_folder() {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default();
    for (name, text) in [("train", "a b\nc\n"), ("valid", "a\n"), ("test", "b c\n")] {
        z.start_file(format!("wikitext-2/wiki.{name}.tokens"), o).expect("zip");
        z.write_all(text.as_bytes()).expect("zip");
    }
    let bytes = z.finish().expect("zip").into_inner();
    let server = Server::start();
    server.route("/wt2.zip", Route::Normal(bytes.clone()));
    let archive = Archive {
        checksum: Checksum::Sha256(leak(format!("{:x}", sha2::Sha256::digest(&bytes)))),
        ..seht_data::fetch::WIKITEXT2
    };
    let data = temp_dir("fetch-zip");
    let folder = fetch_archive(&archive, data.path(), &opts(server.url("/wt2.zip"))).expect("fetch");
    let c = seht_data::TextCorpus::load_wikitext2(&folder).expect("load");
    assert_eq!(c.train.tokens.len(), 5);
}
