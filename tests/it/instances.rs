//! Several `authstore serve` processes on one real SurrealDB server.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use authstore::rpc::api::{ClientApiClient, SessionApiClient};
use authstore::types::*;
use jsonrpsee::core::client::Subscription;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};

use crate::remote::{free_port, server};
use crate::support::REDIRECT;

struct Instance {
    child: Child,
    port: u16,
}

impl Instance {
    fn start(database: &str) -> Self {
        let server = server();
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_authstore"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db", &server.url])
            .args(["--db-namespace", "instances", "--db-database", database])
            .env("AUTHSTORE_DB_USER", &server.user)
            .env("AUTHSTORE_DB_PASS", &server.pass)
            // The debug-built server can stall for seconds on a loaded machine.
            .env("AUTHSTORE_DB_TIMEOUT_MS", "60000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start authstore");
        Instance { child, port }
    }

    async fn connect(&self) -> WsClient {
        let started = std::time::Instant::now();
        loop {
            match WsClientBuilder::default().build(format!("ws://127.0.0.1:{}", self.port)).await {
                Ok(client) => return client,
                Err(_) if started.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("instance on {} did not come up: {e}", self.port),
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events until `n` expiries have arrived, plus whatever follows within a quiet second (a
/// duplicate expiry would show up there).
async fn expired_events(sub: &mut Subscription<SessionEvent>, n: usize) -> Vec<SessionEvent> {
    let mut events: Vec<SessionEvent> = Vec::new();
    while events.iter().filter(|e| e.kind == "expired").count() < n {
        match tokio::time::timeout(Duration::from_secs(60), sub.next()).await {
            Ok(Some(event)) => events.push(event.expect("event decodes")),
            other => panic!("expiries stopped after {} events: {other:?}", events.len()),
        }
    }
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
        events.push(event.expect("event decodes"));
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_server_share_every_event_and_expire_each_record_once() {
    let database = format!("i{}", authstore::secret::generate_id().replace(['-', '_'], "x"));
    let a = Instance::start(&database);
    let b = Instance::start(&database);
    let (client_a, client_b) = (a.connect().await, b.connect().await);

    client_b.register(crate::support::public_client("app").into()).await.unwrap();
    let all = || Subscribe::default();
    let mut on_a = SessionApiClient::subscribe_events(&client_a, all().into()).await.unwrap();
    let mut on_b = SessionApiClient::subscribe_events(&client_b, all().into()).await.unwrap();

    // A change made through B is seen by A's subscriber.
    let put = |id: &str, ttl: Option<u64>| SessionPut {
        id: Some(id.into()),
        client_id: "app".into(),
        redirect_uri: REDIRECT.into(),
        ttl_secs: ttl,
        ..Default::default()
    };
    client_b.put(put("via-b", None).into()).await.unwrap();
    SessionApiClient::delete(&client_b, SessionRef { id: "via-b".into() }.into()).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), on_a.next()).await.expect("A hears B").unwrap().unwrap();
    assert_eq!((seen.kind.as_str(), seen.session_id.as_str()), ("deleted", "via-b"));
    let seen_b = tokio::time::timeout(Duration::from_secs(30), on_b.next()).await.expect("B hears B").unwrap().unwrap();
    assert_eq!(seen_b, seen, "both instances deliver the same event with the same cursor");

    // Both instances run a scheduler; each expiry is emitted once.
    const N: usize = 20;
    for i in 0..N {
        let client = if i % 2 == 0 { &client_a } else { &client_b };
        client.put(put(&format!("short-{i:02}"), Some(1)).into()).await.unwrap();
    }
    let (from_a, from_b) = tokio::join!(expired_events(&mut on_a, N), expired_events(&mut on_b, N));
    for (name, events) in [("A", &from_a), ("B", &from_b)] {
        let mut ids: Vec<&str> = events.iter().filter(|e| e.kind == "expired").map(|e| e.session_id.as_str()).collect();
        ids.sort();
        let expected: Vec<String> = (0..N).map(|i| format!("short-{i:02}")).collect();
        assert_eq!(
            ids,
            expected.iter().map(String::as_str).collect::<Vec<_>>(),
            "{name} sees each expiry exactly once"
        );
    }
    assert_eq!(from_a, from_b, "one log, one order, whichever instance serves it");
    let clients = ClientApiClient::list(&client_a, ClientList::default().into()).await.unwrap();
    assert_eq!(clients.items.len(), 1);
}
