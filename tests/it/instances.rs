//! Several `authstore serve` processes on one real SurrealDB server.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use authstore::background::Timings;
use authstore::clock::Clock;
use authstore::rpc::api::{ClientApiClient, CodeApiClient, ServerApiClient, SessionApiClient, TokenApiClient};
use authstore::types::*;
use jsonrpsee::core::client::Subscription;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};

use crate::remote::{free_port, server};
use crate::support::{Backend, Options, REDIRECT, TestApp, error_of};

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
    SessionApiClient::delete(&client_b, SessionDelete { id: "via-b".into(), idempotency_key: None }.into())
        .await
        .unwrap();
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

/// Rounds of each race through two instances (each round is a few remote round trips).
const SKEWED_ROUNDS: usize = 20;

/// Two in-process instances on one database of the shared SurrealDB server, the second's
/// clock `skew_secs` behind the first's.
async fn skewed_pair(policy: authstore::domain::Policy, skew_secs: i64) -> (TestApp, TestApp) {
    let backend = Backend::remote();
    let ahead =
        TestApp::spawn_with(Options { policy: policy.clone(), backend: backend.clone(), ..Options::default() }).await;
    let behind = TestApp::spawn_with(Options { policy, backend, ..Options::default() }).await;
    // Each app's manual clock started when the app did; set the second exactly `skew_secs`
    // behind the first.
    let offset = ahead.clock.now() - behind.clock.now() - chrono::Duration::seconds(skew_secs);
    behind.clock.advance(offset);
    ahead.register_client("app").await;
    (ahead, behind)
}

// RFC 9700 §4.14.2 across instances whose clocks disagree. A token rotated on the instance
// that runs ahead, then presented on the one behind: strict mode must see reuse (the behind
// instance's `now` is earlier than the rotation's stamp; deciding at it once reissued), and
// pairs racing through both instances never both win.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_rotation_across_instances_with_skewed_clocks_has_one_winner() {
    let (ahead, behind) = skewed_pair(authstore::domain::Policy::default(), 2).await;
    let token = ahead.issue_token("app", "alice", None).await;
    let rotate = |token: &str| TokenRotate { token: token.into(), client_id: "app".into(), ..Default::default() };
    TokenApiClient::rotate(&ahead.client, rotate(&token.token).into()).await.expect("first rotation");
    let replay = TokenApiClient::rotate(&behind.client, rotate(&token.token).into()).await;
    assert_eq!(error_of(replay), (1003, "reuse_detected".into()), "a rotated token presented again is reuse");

    for round in 0..SKEWED_ROUNDS {
        let token = ahead.issue_token("app", "alice", None).await;
        let (a, b) = tokio::join!(
            TokenApiClient::rotate(&ahead.client, rotate(&token.token).into()),
            TokenApiClient::rotate(&behind.client, rotate(&token.token).into()),
        );
        assert!(!(a.is_ok() && b.is_ok()), "round {round}: both instances handed out a new token");
        let active = TokenApiClient::list(
            &ahead.client,
            TokenList { grant_id: Some(token.grant_id), ..Default::default() }.into(),
        )
        .await
        .unwrap();
        assert!(active.items.len() <= 1, "round {round}: {} active tokens", active.items.len());
    }
}

// With a grace window, the same skew still leaves one active token per family, and it is one
// that was handed out: the window is measured from the stamp the deciding call read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_inside_the_grace_window_across_skewed_instances_leaves_one_active_token() {
    let policy = authstore::domain::Policy { rotation_grace_secs: 10, ..Default::default() };
    let (ahead, behind) = skewed_pair(policy, 5).await;
    let rotate = |token: &str| TokenRotate { token: token.into(), client_id: "app".into(), ..Default::default() };
    for round in 0..SKEWED_ROUNDS {
        let token = ahead.issue_token("app", "alice", None).await;
        let (a, b) = tokio::join!(
            TokenApiClient::rotate(&ahead.client, rotate(&token.token).into()),
            TokenApiClient::rotate(&behind.client, rotate(&token.token).into()),
        );
        let issued: Vec<IssuedToken> = [a, b].into_iter().filter_map(Result::ok).collect();
        assert!(!issued.is_empty(), "round {round}: nobody got a token");
        let active = TokenApiClient::list(
            &ahead.client,
            TokenList { grant_id: Some(token.grant_id), ..Default::default() }.into(),
        )
        .await
        .unwrap();
        assert_eq!(active.items.len(), 1, "round {round}: a family has exactly one active token");
        assert!(issued.iter().any(|t| t.token_id == active.items[0].token_id), "round {round}: survivor handed out");
    }
}

/// Every session event retained after `since`, read by replay until a quiet second.
async fn replayed(client: &WsClient, since: &str) -> Vec<SessionEvent> {
    let params = Subscribe { since: Some(since.into()), ..Default::default() };
    until_quiet(SessionApiClient::subscribe_events(client, params.into()).await.unwrap()).await
}

/// Every token event retained after `since`, read by replay until a quiet second.
async fn replayed_token_events(client: &WsClient, since: &str) -> Vec<TokenEvent> {
    let params = Subscribe { since: Some(since.into()), ..Default::default() };
    until_quiet(TokenApiClient::subscribe_events(client, params.into()).await.unwrap()).await
}

/// What `sub` delivers until a quiet second.
async fn until_quiet<T: serde::de::DeserializeOwned>(mut sub: Subscription<T>) -> Vec<T> {
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
        events.push(event.expect("event decodes"));
    }
    events
}

/// One `deleted` event, caused (and so sequenced, and stamped with its clock) by `app`.
async fn one_event(app: &TestApp, id: &str) {
    let put = SessionPut {
        id: Some(id.into()),
        client_id: "app".into(),
        redirect_uri: REDIRECT.into(),
        ..Default::default()
    };
    app.client.put(put.into()).await.unwrap();
    SessionApiClient::delete(&app.client, SessionDelete { id: id.into(), idempotency_key: None }.into()).await.unwrap();
}

// Two instances on one database whose clocks are 1000 s apart, each sequencing its own events
// (no polling for the other's) and pruning every 50 ms with a 60 s retention. Event 2 is
// stamped by the slow clock, so the fast instance sees it as old while events 1 and 3 are
// fresh. Pruning by each event's stamp would cut event 2 out of the middle of the log; pruning
// by cursor keeps the log a run of consecutive cursors up to the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_whose_clocks_differ_prune_only_a_prefix_of_the_log() {
    let backend = Backend::remote();
    let options = |backend: Backend| Options {
        backend,
        timings: Timings {
            expiry: false,
            expiry_tick: Duration::from_secs(3600),
            expiry_sweep: Duration::from_secs(3600),
            poll: Duration::from_secs(3600),
            sequence_poll: Duration::from_secs(3600),
            sequence_sweep: Duration::from_secs(3600),
            retention: Duration::from_secs(60),
            prune_every: Duration::from_millis(50),
        },
        ..Options::default()
    };
    let fast = TestApp::spawn_with(options(backend.clone())).await;
    let slow = TestApp::spawn_with(options(backend)).await;
    fast.register_client("app").await;
    fast.advance(1000);

    one_event(&fast, "e1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    one_event(&slow, "e2").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    one_event(&fast, "e3").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // several pruning passes on both

    for (name, app) in [("fast", &fast), ("slow", &slow)] {
        let cursors: Vec<(String, String)> =
            replayed(&app.client, "0").await.into_iter().map(|e| (e.cursor, e.session_id)).collect();
        let expected = [("1", "e1"), ("2", "e2"), ("3", "e3")].map(|(c, s)| (c.to_string(), s.to_string()));
        assert_eq!(cursors, expected, "{name} replays the whole log, without a hole");
    }

    // Past retention on the fast clock: it prunes everything; both instances agree.
    fast.advance(61);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = ServerApiClient::stats(&slow.client).await.unwrap();
        if stats.events_retained == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} events left", stats.events_retained);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for app in [&fast, &slow] {
        let refused = SessionApiClient::subscribe_events(
            &app.client,
            Subscribe { since: Some("0".into()), ..Default::default() }.into(),
        )
        .await;
        assert_eq!(crate::support::error_of(refused).0, 1006);
    }
    one_event(&fast, "e4").await;
    for app in [&fast, &slow] {
        let rest: Vec<String> = replayed(&app.client, "3").await.into_iter().map(|e| e.session_id).collect();
        assert_eq!(rest, ["e4"]);
    }
}

async fn rotate(client: &WsClient, token: String) -> Result<IssuedToken, jsonrpsee::core::client::Error> {
    TokenApiClient::rotate(client, TokenRotate { token, client_id: "app".into(), ..Default::default() }.into()).await
}

// The order a subscriber can rely on: changes to one token family conflict on the family
// record, so they commit one after another, and their events come in that order, whichever
// instance made them, while other families change at the same moment. Each round runs two
// families side by side: every step rotates both at once, each through a different instance
// (alternating), then both are revoked at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_familys_events_follow_the_order_its_changes_committed_across_instances() {
    const ROUNDS: usize = 20;
    const STEPS: usize = 3;
    let database = format!("i{}", authstore::secret::generate_id().replace(['-', '_'], "x"));
    let a = Instance::start(&database);
    let b = Instance::start(&database);
    let (client_a, client_b) = (a.connect().await, b.connect().await);
    client_a.register(crate::support::public_client("app").into()).await.unwrap();
    let via = |n: usize| if n.is_multiple_of(2) { &client_a } else { &client_b };

    let mut expected: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for round in 0..ROUNDS {
        let issue = |user: String| TokenIssue { client_id: "app".into(), user_id: user, ..Default::default() };
        let mut tokens = [
            TokenApiClient::issue(&client_a, issue(format!("r{round}-x")).into()).await.unwrap(),
            TokenApiClient::issue(&client_b, issue(format!("r{round}-y")).into()).await.unwrap(),
        ];
        let mut events: [Vec<(String, String)>; 2] = [Vec::new(), Vec::new()];
        let grants = tokens.clone().map(|t| t.grant_id);
        for step in 0..STEPS {
            let (x, y) = tokio::join!(
                rotate(via(step), tokens[0].token.clone()),
                rotate(via(step + 1), tokens[1].token.clone())
            );
            for (i, next) in [x, y].into_iter().enumerate() {
                events[i].push(("rotated".to_string(), tokens[i].token_id.clone()));
                tokens[i] = next.unwrap_or_else(|e| panic!("round {round} step {step}: {e}"));
            }
        }
        let revoke = |t: &IssuedToken| TokenRevoke { token: Some(t.token.clone()), ..Default::default() };
        let (x, y) = tokio::join!(
            TokenApiClient::revoke(via(round + 1), revoke(&tokens[0]).into()),
            TokenApiClient::revoke(via(round), revoke(&tokens[1]).into())
        );
        x.unwrap();
        y.unwrap();
        for (i, grant) in grants.into_iter().enumerate() {
            events[i].push(("revoked".to_string(), tokens[i].token_id.clone()));
            expected.push((grant, std::mem::take(&mut events[i])));
        }
    }

    for (name, client) in [("A", &client_a), ("B", &client_b)] {
        let params = Subscribe { since: Some("0".into()), ..Default::default() };
        let mut sub = TokenApiClient::subscribe_events(client, params.into()).await.unwrap();
        let mut log = Vec::new();
        while log.len() < ROUNDS * 2 * (STEPS + 1) {
            let event =
                tokio::time::timeout(Duration::from_secs(30), sub.next()).await.expect("events").unwrap().unwrap();
            log.push(event);
        }
        let cursors: Vec<i64> = log.iter().map(|e| e.cursor.parse().unwrap()).collect();
        assert!(cursors.windows(2).all(|w| w[1] == w[0] + 1), "{name}: consecutive cursors {cursors:?}");
        for (grant, events) in &expected {
            let got: Vec<(String, String)> =
                log.iter().filter(|e| &e.grant_id == grant).map(|e| (e.kind.clone(), e.token_id.clone())).collect();
            assert_eq!(&got, events, "{name}: family {grant} in commit order");
        }
    }
}

// A portal retries on another instance what it sent to the first (its connection to the first
// dropped, its load balancer picked the other): with the same key, the second instance hands
// back the first one's answer, secret included, and nothing counts as a replay or a reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_retry_on_another_instance_gets_the_first_instances_answer() {
    let (a, b) = skewed_pair(authstore::domain::Policy::default(), 0).await;
    let code = a.issue_code("app", "alice").await;
    let consume =
        CodeConsume { idempotency_key: Some("consume-1".into()), ..TestApp::consume_params(&code.code, "app") };
    let first = a.client.consume(consume.clone().into()).await.expect("code.consume on A");
    let again = b.client.consume(consume.into()).await.expect("the retry on B");
    assert_eq!(again, first);
    let issue = TokenIssue {
        client_id: "app".into(),
        user_id: "alice".into(),
        grant_id: Some(first.grant_id.clone()),
        idempotency_key: Some("issue-1".into()),
        ..Default::default()
    };
    let token = TokenApiClient::issue(&a.client, issue.clone().into()).await.expect("token.issue on A");
    assert_eq!(TokenApiClient::issue(&b.client, issue.into()).await.expect("the retry on B"), token);
    let rotate = TokenRotate {
        token: token.token.clone(),
        client_id: "app".into(),
        idempotency_key: Some("rotate-1".into()),
        ..Default::default()
    };
    let next = TokenApiClient::rotate(&a.client, rotate.clone().into()).await.expect("token.rotate on A");
    let retried = TokenApiClient::rotate(&b.client, rotate.into()).await.expect("the retry on B");
    assert_eq!(retried, next, "the same new token, minted again from the key on B");
    TokenApiClient::get(&b.client, TokenRef { token: next.token }.into()).await.expect("and it is the active one");
}

// A session written through an instance whose clock is 1000 s behind: its deadline is long
// past for the instance that runs the scheduler, and lies before the range that scheduler's
// passes look at between sweeps. The next sweep from the start of the index removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_due_before_the_cleared_range_is_removed_by_the_next_sweep() {
    let backend = Backend::remote();
    let timings = |expiry: bool| Timings {
        expiry,
        expiry_tick: Duration::from_millis(100),
        expiry_sweep: Duration::from_secs(1),
        ..Timings::default()
    };
    let ahead =
        TestApp::spawn_with(Options { backend: backend.clone(), timings: timings(true), ..Options::default() }).await;
    let behind = TestApp::spawn_with(Options { backend, timings: timings(false), ..Options::default() }).await;
    ahead.register_client("app").await;
    ahead.advance(1000);
    tokio::time::sleep(Duration::from_millis(300)).await; // passes clear up to the new time

    let put = SessionPut {
        id: Some("straggler".into()),
        client_id: "app".into(),
        redirect_uri: REDIRECT.into(),
        ttl_secs: Some(60),
        ..Default::default()
    };
    behind.client.put(put.into()).await.unwrap();
    let get = || SessionApiClient::get(&behind.client, SessionRef { id: "straggler".into() }.into());
    assert!(get().await.is_ok(), "live on the clock it was written by");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get().await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still stored 10 s later");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(error_of(get().await).0, 1001, "removed, not failing");
}

/// The families of `app` that the `client.delete` tests below start from, one per user
/// `u-0000…`: four pages of a delete against a shared server.
const FAMILIES: usize = 1000;

/// Two instances on a new database, with `app` registered and [`FAMILIES`] families issued
/// through the first.
async fn two_instances_with_families() -> (Instance, Instance, WsClient, WsClient, Vec<IssuedToken>) {
    use futures::StreamExt;
    let database = format!("i{}", authstore::secret::generate_id().replace(['-', '_'], "x"));
    let (a, b) = (Instance::start(&database), Instance::start(&database));
    let (client_a, client_b) = (a.connect().await, b.connect().await);
    client_a.register(crate::support::public_client("app").into()).await.unwrap();
    let issues = (0..FAMILIES).map(|i| TokenApiClient::issue(&client_a, issue_to(format!("u-{i:04}")).into()));
    let first = futures::stream::iter(issues).buffer_unordered(16).map(|r| r.unwrap()).collect().await;
    (a, b, client_a, client_b, first)
}

fn issue_to(user_id: String) -> TokenIssue {
    TokenIssue { client_id: "app".into(), user_id, ..Default::default() }
}

fn delete_app() -> ClientDelete {
    ClientDelete { client_id: "app".into(), idempotency_key: None }
}

/// Returns once a delete's first page (250 families) has committed, as `client` sees it.
async fn first_page_revoked(client: &WsClient) {
    let started = std::time::Instant::now();
    loop {
        let stats = ServerApiClient::stats(client).await.unwrap();
        if stats.tokens < FAMILIES as u64 * 9 / 10 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the delete made no progress: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// `client.delete` through one instance while the other issues and rotates for that client all
// along, the deleting instance SIGKILLed part-way and the delete finished through the other:
// every token the other instance handed out, before or during the delete, must be dead after
// it, and once an issue was refused none may succeed (checked against the recorded answers, not
// only the final counts). Users `a-…` sort before every family the delete's pages walk past.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_delete_killed_part_way_and_finished_elsewhere_leaves_nothing_the_other_instance_issued() {
    let (mut a, b, client_a, client_b, first) = two_instances_with_families().await;

    // B: issue to a new user, then rotate one of the first families, over and over.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let churn = {
        let (client, stop, issued) = (b.connect().await, stop.clone(), issued.clone());
        let mut first: Vec<String> = first.iter().map(|t| t.token.clone()).collect();
        tokio::spawn(async move {
            let (mut handed_out, mut refused) = (Vec::new(), 0);
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                match TokenApiClient::issue(&client, issue_to(format!("a-{i:05}")).into()).await {
                    Ok(token) => {
                        assert_eq!(refused, 0, "an issue succeeded after one was refused: the client thawed");
                        handed_out.push(token.token);
                        issued.fetch_add(1, std::sync::atomic::Ordering::Release);
                    }
                    Err(e) => {
                        assert_eq!(error_of::<()>(Err(e)).0, 1004, "an issue failed otherwise");
                        refused += 1;
                    }
                }
                if let Some(token) = first.pop()
                    && let Ok(next) = rotate(&client, token).await
                {
                    handed_out.push(next.token);
                }
            }
            (handed_out, refused)
        })
    };

    // Some of B's families exist before the delete starts.
    while issued.load(std::sync::atomic::Ordering::Acquire) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deleting = tokio::spawn(async move { ClientApiClient::delete(&client_a, delete_app().into()).await });
    // Kill A after the delete's first page, so that the second delete has pages of its own to
    // walk while B goes on.
    first_page_revoked(&client_b).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(deleting.await.unwrap().is_err(), "the delete answered before it was killed: this proves nothing");
    let cut_off = ServerApiClient::stats(&client_b).await.unwrap();
    let left = cut_off.tokens;
    // A frozen client is hidden from every method but still counted until its last page.
    assert_eq!(cut_off.clients, 1, "the delete finished before it was killed: this proves nothing");

    // Finished through B while B's own churn goes on, then the churn stops.
    let finished = ClientApiClient::delete(&client_b, delete_app().into()).await;
    assert!(finished.unwrap().deleted, "the second delete found nothing to finish");
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (handed_out, refused) = churn.await.unwrap();
    eprintln!(
        "killed with {left} tokens left; B handed out {} tokens ({} issued), {refused} issues refused",
        handed_out.len(),
        issued.load(std::sync::atomic::Ordering::Acquire)
    );
    assert!(refused > 0, "no issue was refused while the client was being deleted: this proves nothing");

    let mut live = Vec::new();
    for token in &handed_out {
        if let Ok(info) = TokenApiClient::get(&client_b, TokenRef { token: token.clone() }.into()).await {
            live.push(info);
        }
    }
    assert!(
        live.is_empty(),
        "{} of {} tokens B handed out outlived the delete: {live:?}",
        live.len(),
        handed_out.len()
    );
    let stats = ServerApiClient::stats(&client_b).await.unwrap();
    assert_eq!((stats.clients, stats.tokens), (0, 0), "{stats:?}");
}

// Two `client.delete`s of one client through two instances at once, then the client registered
// again and issuing through the second while the first delete's pages still run: the first
// delete's remaining pages must leave the new registration and its tokens alone, and exactly
// one of the two deletes answers that it deleted the client. (The two deletes' pages leapfrog;
// when the first happens to end before the second, only the answers and counts are tested:
// the line printed says which happened. Taking every page, whatever the incarnation, fails it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_client_deletes_across_instances_leave_a_registration_made_meanwhile_alone() {
    let (_a, _b, client_a, client_b, _) = two_instances_with_families().await;
    let first = tokio::spawn(async move { ClientApiClient::delete(&client_a, delete_app().into()).await });
    first_page_revoked(&client_b).await;
    let second = ClientApiClient::delete(&client_b, delete_app().into()).await.unwrap();
    let overlapped = !first.is_finished();

    // Registered again, and issuing to users the first delete's pages have not reached yet.
    client_b.register(crate::support::public_client("app").into()).await.expect("registered again");
    let mut fresh = Vec::new();
    for i in (FAMILIES - 50)..FAMILIES {
        fresh.push(TokenApiClient::issue(&client_b, issue_to(format!("u-{i:04}")).into()).await.unwrap());
    }
    let first = first.await.unwrap().unwrap();
    eprintln!(
        "first delete: {}, second: {}, first still running after the second: {overlapped}, {} issued after",
        first.deleted,
        second.deleted,
        fresh.len()
    );
    assert!(first.deleted != second.deleted, "both or neither deleted the client: {first:?} {second:?}");

    ClientApiClient::get(&client_b, ClientRef { client_id: "app".into() }.into()).await.expect("the new registration");
    for token in &fresh {
        TokenApiClient::get(&client_b, TokenRef { token: token.token.clone() }.into())
            .await
            .expect("a token of the new registration was revoked by the old delete");
    }
    let stats = ServerApiClient::stats(&client_b).await.unwrap();
    assert_eq!((stats.clients, stats.tokens), (1, fresh.len() as u64), "{stats:?}");
}

// One keyed `token.revoke` of a whole client sent to both instances at once (a portal whose
// call to A timed out retries it on B while A's pages still run), and A SIGKILLed just after:
// the two calls' pages add into one key record, and B must answer for every family, each
// counted once, a later retry must recall that answer, and the log must hold exactly one
// revocation per family (checked against the recorded events, not only the final counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_keyed_revoke_sent_to_two_instances_at_once_and_killed_on_one_counts_each_family_once() {
    let (mut a, b, client_a, client_b, first) = two_instances_with_families().await;
    let revoke = || TokenRevoke {
        client_id: Some("app".into()),
        idempotency_key: Some("revoke-app-1".into()),
        ..Default::default()
    };
    let on_a = tokio::spawn(async move { TokenApiClient::revoke(&client_a, revoke().into()).await });
    first_page_revoked(&client_b).await;
    let on_b = {
        let client = b.connect().await;
        tokio::spawn(async move { TokenApiClient::revoke(&client, revoke().into()).await })
    };
    // Both run for a moment; then A dies between (or inside) its pages.
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(on_a.await.unwrap().is_err(), "A answered before it was killed: this proves nothing");

    let answered = on_b.await.unwrap().expect("the call on B");
    assert_eq!(answered.revoked, FAMILIES as u64, "B's answer must count every family the two calls revoked, once");
    let recalled = TokenApiClient::revoke(&client_b, revoke().into()).await.expect("a retry on B");
    assert_eq!(recalled, answered, "a retry recalls the recorded answer");

    for token in &first {
        let got = TokenApiClient::get(&client_b, TokenRef { token: token.token.clone() }.into()).await;
        assert!(got.is_err(), "a family outlived the revoke: {got:?}");
    }
    assert_eq!(ServerApiClient::stats(&client_b).await.unwrap().tokens, 0);
    let revoked: Vec<TokenEvent> =
        replayed_token_events(&client_b, "0").await.into_iter().filter(|e| e.kind == "revoked").collect();
    let grants: std::collections::BTreeSet<&str> = revoked.iter().map(|e| e.grant_id.as_str()).collect();
    eprintln!("{} revoked events, {} families", revoked.len(), grants.len());
    assert_eq!((revoked.len(), grants.len()), (FAMILIES, FAMILIES), "one revocation event per family");
}
