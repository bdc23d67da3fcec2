//! The embedded data directory's guards, on the real binary: one process per directory, and a
//! write-ahead log damaged before its end stops the start until the operator accepts the loss.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use authstore::rpc::api::{ClientApiClient, SessionApiClient};
use authstore::types::{ClientList, SessionRef};

use crate::durability::{connect_when_ready, first_fragment_only, newest_wal_segment, session, tear_wal_tail};
use crate::remote::free_port;

/// authstore's own lock file in the data directory; its content (a pid) changes on every start.
const OWN_LOCK: &str = "authstore.lock";
/// What a start on a directory another process holds must say.
const IN_USE: &str = "in use by another process";

/// An `authstore serve` whose stderr goes to a file.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, logs: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log = logs.join(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_authstore"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--db")
            .arg(format!("surrealkv://{}", data.display()))
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("AUTHSTORE_WAL_REPAIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"));
        for (key, value) in env {
            command.env(key, value);
        }
        Server { child: command.spawn().expect("start authstore"), port, log }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it exited (with its status) or is listening, whichever comes first.
    async fn outcome(&mut self) -> Outcome {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Outcome::Exited(status, self.stderr());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Outcome::Serving;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "authstore neither served nor exited");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Expects the start to be refused; returns what it printed.
    async fn refused(mut self, why: &str) -> String {
        match self.outcome().await {
            Outcome::Exited(status, stderr) => {
                assert!(!status.success(), "{why}: a refused start exits non-zero ({status}); stderr: {stderr}");
                stderr
            }
            Outcome::Serving => {
                self.kill();
                panic!("{why}: authstore started and served; stderr: {}", self.stderr())
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Outcome {
    Exited(ExitStatus, String),
    Serving,
}

/// Every file under `dir` but authstore's lock file, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n != OWN_LOCK) {
                files.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    files
}

/// Starts a server on `data`, registers the public client if asked, acknowledges a session for
/// every id, and kills the server with SIGKILL.
async fn put_then_kill(data: &Path, logs: &Path, register: bool, ids: &[String]) {
    let mut server = Server::start(data, logs, "writer", &[], &[]);
    let client = connect_when_ready(server.port).await;
    if register {
        client.register(crate::support::public_client("app").into()).await.expect("client.register");
    }
    for id in ids {
        client.put(session(id).into()).await.expect("session.put");
    }
    drop(client);
    server.kill();
}

/// The ids among `ids` that the server on `port` has.
async fn present(port: u16, ids: &[String]) -> Vec<String> {
    let client = connect_when_ready(port).await;
    let mut found = Vec::new();
    for id in ids {
        if SessionApiClient::get(&client, SessionRef { id: id.clone() }.into()).await.is_ok() {
            found.push(id.clone());
        }
    }
    found
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// A second process started on a directory another process holds (here: one holding
/// SurrealKV's lock with an append in flight at the end of its log) refuses before it reads
/// or changes anything. Without the guard it cut the holder's in-flight record off as a
/// "torn tail", then failed on SurrealKV's lock: an acknowledged commit gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_a_directory_in_use_leaves_its_log_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("db");
    let written = ids("held", 10);
    put_then_kill(&data, dir.path(), true, &written).await;

    // The holder: SurrealKV's lock taken as SurrealKV takes it (flock), and the first fragment
    // of a record it is still writing at the end of its newest segment.
    let holder = File::open(data.join("LOCK")).expect("SurrealKV's LOCK file");
    holder.try_lock().expect("take SurrealKV's lock");
    tear_wal_tail(&data, &first_fragment_only(&data));
    let before = snapshot(&data);

    let stderr = Server::start(&data, dir.path(), "second", &[], &[]).refused("a directory in use").await;
    assert!(snapshot(&data) == before, "the second process changed the data directory it did not hold: {stderr}");
    assert!(stderr.contains(IN_USE), "the refusal says the directory is in use: {stderr}");
    assert!(stderr.contains(&data.join("LOCK").display().to_string()), "and names the lock: {stderr}");
    eprintln!("refused a directory in use: {stderr}");

    // Once the holder is gone, its unfinished record is a torn tail like any other.
    drop(holder);
    let mut server = Server::start(&data, dir.path(), "after", &[], &[]);
    assert!(matches!(server.outcome().await, Outcome::Serving), "starts once the holder is gone: {}", server.stderr());
    assert_eq!(present(server.port, &written).await, written, "nothing acknowledged was lost");
}

/// Two servers started together on one directory: exactly one serves, the other exits non-zero
/// saying why; a third started while the first serves is refused too; the first keeps
/// serving, and nothing it acknowledged is lost. Many rounds on the same directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_directory_one_refuses_and_the_first_loses_nothing() {
    const ROUNDS: usize = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("db");
    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let mut a = Server::start(&data, dir.path(), &format!("r{round}-a"), &[], &[]);
        let mut b = Server::start(&data, dir.path(), &format!("r{round}-b"), &[], &[]);
        let (mut winner, loser) = match (a.outcome().await, b.outcome().await) {
            (Outcome::Serving, Outcome::Exited(status, stderr)) => (a, (status, stderr)),
            (Outcome::Exited(status, stderr), Outcome::Serving) => (b, (status, stderr)),
            (Outcome::Serving, Outcome::Serving) => panic!("round {round}: both servers serve one directory"),
            (Outcome::Exited(_, ea), Outcome::Exited(_, eb)) => panic!("round {round}: neither started: {ea} / {eb}"),
        };
        assert!(!loser.0.success(), "round {round}: the loser exits non-zero");
        assert!(loser.1.contains(IN_USE), "round {round}: the loser says why: {}", loser.1);

        let client = connect_when_ready(winner.port).await;
        if round == 0 {
            client.register(crate::support::public_client("app").into()).await.expect("client.register");
        }
        for id in ids(&format!("r{round}-before"), 10) {
            client.put(session(&id).into()).await.expect("session.put");
            acked.push(id);
        }
        let stderr = Server::start(&data, dir.path(), &format!("r{round}-c"), &[], &[]).refused("a third server").await;
        assert!(stderr.contains(IN_USE), "round {round}: the third says why: {stderr}");
        for id in ids(&format!("r{round}-after"), 10) {
            client.put(session(&id).into()).await.expect("session.put after the refused start");
            acked.push(id);
        }
        ClientApiClient::list(&client, ClientList::default().into()).await.expect("still serving");
        drop(client);
        winner.kill();
    }
    let mut last = Server::start(&data, dir.path(), "last", &[], &[]);
    assert!(matches!(last.outcome().await, Outcome::Serving), "{}", last.stderr());
    let found = present(last.port, &acked).await;
    let lost: Vec<_> = acked.iter().filter(|id| !found.contains(id)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged sessions lost: {lost:?}", lost.len(), acked.len());
}

/// Offset, type and data length of every physical record in a SurrealKV WAL segment
/// (32 KiB blocks, 7-byte headers, short block tails padded).
fn wal_records(bytes: &[u8]) -> Vec<(usize, u8, usize)> {
    const BLOCK: usize = 32 * 1024;
    const HEADER: usize = 7;
    let mut records = Vec::new();
    let mut pos = 0;
    while pos + HEADER <= bytes.len() {
        let left = BLOCK - pos % BLOCK;
        if left < HEADER || bytes[pos + 6] == 0 {
            pos += left;
            continue;
        }
        let length = usize::from(u16::from_be_bytes([bytes[pos + 4], bytes[pos + 5]]));
        records.push((pos, bytes[pos + 6], length));
        pos += HEADER + length;
    }
    records
}

/// A segment damaged before its end (a flipped byte in a record with valid records after it)
/// stops the start: exit non-zero, the segment and offset named, nothing in the directory
/// changed. SurrealKV on its own would truncate the segment there by writing a copy and
/// renaming it over the file its writer already holds open, so every commit of that run went
/// to a deleted file. The documented recovery (`--wal-repair SEGMENT@OFFSET`) cuts the log at
/// the damage itself, keeps what it cut, and the run after it loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_damaged_inside_stops_the_start_until_the_loss_is_accepted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("db");
    let before = ids("s", 40);
    // Half the sessions, then the rest: the damage goes into the first record of the second half.
    let mut server = Server::start(&data, dir.path(), "writer", &[], &[]);
    let client = connect_when_ready(server.port).await;
    client.register(crate::support::public_client("app").into()).await.expect("client.register");
    let mut half = 0;
    for (i, id) in before.iter().enumerate() {
        if i == before.len() / 2 {
            half = std::fs::metadata(newest_wal_segment(&data)).expect("segment").len() as usize;
        }
        client.put(session(id).into()).await.expect("session.put");
    }
    drop(client);
    server.kill();

    let segment = newest_wal_segment(&data);
    let mut bytes = std::fs::read(&segment).expect("segment");
    let records = wal_records(&bytes);
    let (at, _, length) = *records
        .iter()
        .find(|(at, kind, len)| *at >= half && *kind == 1 && *len > 0)
        .expect("a record written after the first half");
    assert!(records.iter().filter(|(pos, ..)| *pos > at).count() >= 10, "intact records follow the damage");
    bytes[at + 7 + length - 1] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("damage the segment");
    let damaged = snapshot(&data);

    let stderr = Server::start(&data, dir.path(), "damaged", &[], &[]).refused("a damaged log").await;
    assert!(snapshot(&data) == damaged, "a refused start changed the data directory: {stderr}");
    assert!(stderr.contains(&segment.display().to_string()), "names the segment: {stderr}");
    assert!(stderr.contains(&format!("at byte {at}")), "names the offset {at}: {stderr}");
    let name = segment.file_name().and_then(|n| n.to_str()).expect("segment name");
    let accept = format!("{name}@{at}");
    assert!(stderr.contains(&format!("--wal-repair {accept}")), "says how to recover: {stderr}");
    eprintln!("refused a damaged log: {stderr}");

    // An acceptance that names other damage changes nothing either.
    let wrong = format!("{name}@{}", at + 1);
    let stderr =
        Server::start(&data, dir.path(), "wrong", &["--wal-repair", &wrong], &[]).refused("another damage").await;
    assert!(snapshot(&data) == damaged, "a mismatched --wal-repair changed the data directory: {stderr}");
    assert!(stderr.contains(&format!("--wal-repair {accept}")), "says what to pass instead: {stderr}");

    // The documented recovery: keep a copy, then start once accepting this damage.
    let mut server = Server::start(&data, dir.path(), "repair", &["--wal-repair", &accept], &[]);
    assert!(matches!(server.outcome().await, Outcome::Serving), "recovers: {}", server.stderr());
    let stderr = server.stderr();
    assert!(stderr.contains(&format!("{}", bytes.len() - at)), "logs how much was cut: {stderr}");
    let kept = data.join("wal-cut").join(format!("{name}.at-{at}"));
    assert_eq!(std::fs::read(&kept).expect("the cut bytes are kept"), bytes[at..], "keeps exactly what it cut");
    let survived = present(server.port, &before).await;
    assert!(survived.len() < before.len(), "the damage cost the writes after it");
    assert!(survived.len() >= before.len() / 2, "and only those: {} survived", survived.len());
    assert_eq!(survived, before[..survived.len()], "what survives is everything before the damage");
    let after = ids("after-repair", 20);
    let client = connect_when_ready(server.port).await;
    for id in &after {
        client.put(session(id).into()).await.expect("session.put after the repair");
    }
    drop(client);
    server.kill();

    // The run after the repair lost nothing, even with the acceptance still set.
    let mut server = Server::start(&data, dir.path(), "after", &[], &[("AUTHSTORE_WAL_REPAIR", accept.as_str())]);
    assert!(matches!(server.outcome().await, Outcome::Serving), "{}", server.stderr());
    assert_eq!(present(server.port, &after).await, after, "writes acknowledged after the repair survive");
    assert_eq!(present(server.port, &before).await, survived, "and nothing else changed");
}
