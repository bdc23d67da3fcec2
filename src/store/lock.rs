//! One process per embedded data directory.
//!
//! SurrealKV takes `<dir>/LOCK` when its datastore opens: an exclusive, non-blocking `flock`
//! (fs2's `try_lock_exclusive`), released when the datastore closes or the process dies. But
//! authstore reads, and may cut, SurrealKV's write-ahead log before that (`wal_tail.rs`), and a
//! second process doing so on a directory another one is using would cut the live segment
//! under its writer. SurrealKV's lock cannot be taken for the check and handed over: a `flock`
//! belongs to the open file, so SurrealKV's own open would find it taken, even in this process.
//!
//! So authstore holds a lock of its own, `<dir>/authstore.lock` (the same kind of `flock`), for
//! as long as its store is open, and refuses to start when it is taken. Under it, it takes
//! SurrealKV's `LOCK` while it looks at the log (refusing when something else, an older
//! authstore or another SurrealKV user, holds it), and lets go of that just before SurrealKV
//! takes it. No other authstore can slip into that gap: it would need `authstore.lock` first.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::StoreError;

/// authstore's lock file in a data directory.
pub const OWN: &str = "authstore.lock";
/// SurrealKV's (`surrealkv::lockfile::LockFile::LOCK_FILE_NAME`).
pub const ENGINE: &str = "LOCK";

/// The data directory, held by this process until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes `<dir>/authstore.lock`, or says who has it.
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(OWN);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Database(format!("cannot open the lock file {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(dir, &path, holder(&mut file))),
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Database(format!("cannot lock {}: {e}", path.display())));
            }
        }
        // Who holds it, for the message another process prints; nothing depends on it.
        let pid = format!("{}\n", std::process::id());
        let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(pid.as_bytes()));
        Ok(DataDirLock { _file: file })
    }
}

/// SurrealKV's lock, held while authstore looks at the log; released when dropped.
#[derive(Debug)]
pub struct EngineLock {
    _file: Option<File>,
}

impl EngineLock {
    /// Takes `<dir>/LOCK` as SurrealKV would, without creating or changing the file, or says who
    /// has it. No file: nobody ever opened SurrealKV here.
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(ENGINE);
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EngineLock { _file: None }),
            Err(e) => return Err(StoreError::Database(format!("cannot open {}: {e}", path.display()))),
        };
        match file.try_lock() {
            Ok(()) => Ok(EngineLock { _file: Some(file) }),
            Err(TryLockError::WouldBlock) => Err(in_use(dir, &path, holder(&mut file))),
            Err(TryLockError::Error(e)) => Err(StoreError::Database(format!("cannot lock {}: {e}", path.display()))),
        }
    }
}

/// The pid a lock file names, if it names one.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn in_use(dir: &Path, lock: &Path, pid: Option<u32>) -> StoreError {
    let by = pid.map(|pid| format!(" (pid {pid}, per the file)")).unwrap_or_default();
    StoreError::Database(format!(
        "the data directory {} is in use by another process: {} is locked{by}. Two processes on one \
         directory damage each other's write-ahead log, so this one stops without touching it. Stop \
         the other (an overlapping restart, a second container on the same volume, `authstore-tools \
         bench --raw` or `scale` pointed at a live directory), or use another directory",
        dir.display(),
        lock.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let refused = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("in use by another process"), "{refused}");
        assert!(refused.contains(&format!("pid {}", std::process::id())), "{refused}");
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn surrealkv_lock_is_the_same_kind_of_lock() {
        let dir = tempfile::tempdir().unwrap();
        // No LOCK file yet: nothing to take, nothing created.
        drop(EngineLock::acquire(dir.path()).unwrap());
        assert!(!dir.path().join(ENGINE).exists());
        // Held as fs2 holds it (flock, exclusive, on its own open file).
        std::fs::write(dir.path().join(ENGINE), "4242\n").unwrap();
        let surrealkv = File::open(dir.path().join(ENGINE)).unwrap();
        surrealkv.try_lock().unwrap();
        let refused = EngineLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("pid 4242"), "{refused}");
        drop(surrealkv);
        // And while authstore holds it, SurrealKV's way of taking it fails.
        let ours = EngineLock::acquire(dir.path()).unwrap();
        let theirs = File::open(dir.path().join(ENGINE)).unwrap();
        assert!(matches!(theirs.try_lock(), Err(TryLockError::WouldBlock)));
        drop(ours);
        theirs.try_lock().unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(ENGINE)).unwrap(), "4242\n", "left as it was");
    }

    /// Against SurrealKV itself: its lock keeps authstore's check out, and authstore's keeps
    /// SurrealKV from opening.
    #[test]
    fn surrealkv_and_authstore_exclude_each_other() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().thread_stack_size(20 << 20).enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("surrealkv://{}", dir.path().display());
            let db = surrealdb::engine::any::connect(url.as_str()).await.unwrap();
            let refused = EngineLock::acquire(dir.path()).unwrap_err().to_string();
            assert!(refused.contains("in use by another process"), "{refused}");
            drop(db);
            let started = std::time::Instant::now();
            let ours = loop {
                match EngineLock::acquire(dir.path()) {
                    Ok(lock) => break lock,
                    Err(e) if started.elapsed() < std::time::Duration::from_secs(20) => {
                        let _ = e;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("SurrealKV never released its lock: {e}"),
                }
            };
            let blocked = surrealdb::engine::any::connect(url.as_str()).await;
            assert!(blocked.is_err(), "SurrealKV opened a directory authstore holds");
            drop(ours);
        });
    }
}
