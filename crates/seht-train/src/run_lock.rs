//! The lock of a run folder: one writer at a time. The writer holds an
//! exclusive OS lock on `<run dir>/.lock` ([`std::fs::File::try_lock`]) for
//! as long as it writes, and writes its process id (and host name) into the
//! file so that a refused second writer can say who holds it. The OS
//! releases the lock when its holder ends, however it ends (`kill -9`
//! included): the file a dead holder left is then simply taken over. The file
//! itself is never removed (removing it while a second process has it open
//! would let two processes hold "the" lock).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, io};

/// The lock file's name in a run folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a run folder, released on drop (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Who holds a run folder's lock, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    /// The holder's process id.
    pub pid: Option<u32>,
    /// The holder's host name.
    pub host: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.pid, &self.host) {
            (Some(pid), Some(host)) => write!(f, "process {pid} on host {host}"),
            (Some(pid), None) => write!(f, "process {pid}"),
            // Locked, but the holder has not written its id yet.
            (None, _) => write!(f, "another process (its id not yet written)"),
        }
    }
}

impl Holder {
    fn this_process() -> Self {
        let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        Self { pid: Some(std::process::id()), host }
    }

    fn to_text(&self) -> String {
        let mut s = format!("pid {}\n", self.pid.unwrap_or_default());
        if let Some(h) = &self.host {
            s.push_str(&format!("host {h}\n"));
        }
        s
    }

    fn parse(text: &str) -> Self {
        let mut h = Self::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("pid", v)) => h.pid = v.trim().parse().ok(),
                Some(("host", v)) => h.host = Some(v.trim().to_string()),
                _ => {}
            }
        }
        h
    }

    /// Reads the holder of a locked file, waiting briefly for a holder that
    /// has locked it but not yet written its id.
    fn read(path: &Path) -> Self {
        for _ in 0..20 {
            let h = Self::parse(&std::fs::read_to_string(path).unwrap_or_default());
            if h.pid.is_some() {
                return h;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Self::default()
    }
}

impl RunLock {
    /// Creates `dir` if needed and locks it for this process, or refuses
    /// with [`Error::RunLocked`] naming the folder and the holder.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path: PathBuf = dir.join(LOCK_FILE);
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::RunLocked { dir: dir.to_path_buf(), holder: Holder::read(&path) });
            }
            Err(TryLockError::Error(source)) => return Err(Error::Io { path, source }),
        }
        // Ours now: replace whatever an earlier (ended) holder wrote.
        file.set_len(0).map_err(io(&path))?;
        file.rewind().map_err(io(&path))?;
        file.write_all(Holder::this_process().to_text().as_bytes()).map_err(io(&path))?;
        file.flush().map_err(io(&path))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_round_trips_through_the_file_text() {
        let h = Holder { pid: Some(42), host: Some("box".into()) };
        assert_eq!(Holder::parse(&h.to_text()), h);
        assert_eq!(Holder::parse(""), Holder::default());
        assert_eq!(h.to_string(), "process 42 on host box");
    }
}
