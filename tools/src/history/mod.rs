//! A history recorder and checker in the spirit of Jepsen/Elle and Porcupine.
//!
//! Many WebSocket connections run random operations on a deliberately tiny key space (a few
//! codes, token families and sessions, and a client that is deleted and registered again),
//! with pairs and wider groups of callers presenting the same code or token at the same
//! moment. Every call is recorded with its monotonic start and end, its params and its answer
//! (result, error, or unknown when it timed out or its connection died), and subscribers
//! record every event they receive. [`check::check`] then decides whether the history can be
//! explained by the contract's sequential rules, using real-time order only where one call
//! ended before another started, and treating unknown outcomes as "may or may not have
//! happened".
//!
//! The same code runs from `cargo test` (tests/it/history.rs: in-process, remote SurrealDB,
//! two instances, SIGKILL restarts) and from `authstore-tools soak --history`.

pub mod check;
pub mod soak;
pub mod wgl;
mod workload;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use check::{Anomaly, Report, check};
pub use workload::{Feeds, Workload, WorkloadConfig, connect, connect_retry};

/// What a call answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok(Value),
    /// A JSON-RPC error: its code and `data.reason` (empty when absent).
    Err {
        code: i64,
        reason: String,
    },
    /// Timed out, or the connection died: the call may or may not have taken effect.
    Unknown(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown(_))
    }

    /// The error reason, if the call failed with one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Err { reason, .. } => Some(reason),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<i64> {
        match self {
            Outcome::Err { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn ok(&self) -> Option<&Value> {
        match self {
            Outcome::Ok(v) => Some(v),
            _ => None,
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Op {
    pub id: usize,
    /// Which connection made it (and so which instance served it).
    pub conn: usize,
    pub method: &'static str,
    pub params: Value,
    /// Nanoseconds since the recorder's epoch (monotonic).
    pub start: u64,
    pub end: u64,
    pub outcome: Outcome,
}

impl Op {
    /// The end to reason with: an unknown outcome may take effect at any later moment.
    pub fn effective_end(&self) -> u64 {
        if self.outcome.is_unknown() { u64::MAX } else { self.end }
    }

    /// This call ended before `other` started (real-time order).
    pub fn precedes(&self, other: &Op) -> bool {
        self.effective_end() < other.start
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).and_then(Value::as_str)
    }
}

/// Everything one subscriber received, in arrival order, across resubscriptions.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    pub name: String,
    /// `token` or `session`.
    pub stream: &'static str,
    /// The `client_id` filter, if any.
    pub client_id: Option<String>,
    pub events: Vec<Value>,
    /// How many times it had to subscribe again (connection lost, server restarted, closed).
    pub resumes: u64,
    /// Problems subscribing (e.g. `cursor_expired` on resume): each is an anomaly.
    pub failures: Vec<String>,
}

/// A complete history: the calls and the feeds.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Op>,
    pub feeds: Vec<Feed>,
    /// Rotation grace window the server runs with (0 = strict).
    pub grace_secs: u64,
}

/// Records calls from many tasks against one monotonic clock.
#[derive(Clone)]
pub struct Recorder {
    epoch: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder { epoch: Instant::now(), ops: Arc::default() }
    }
}

impl Recorder {
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn push(&self, conn: usize, method: &'static str, params: Value, start: u64, outcome: Outcome) {
        let end = self.now();
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let id = ops.len();
        ops.push(Op { id, conn, method, params, start, end, outcome });
    }

    pub fn len(&self) -> usize {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The calls recorded so far, in start order.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ops.sort_by_key(|o| (o.start, o.id));
        for (i, op) in ops.iter_mut().enumerate() {
            op.id = i;
        }
        ops
    }
}

/// Runs the workload against `endpoints` for `duration`, then the final read sweep, and checks
/// the history. One phase; see [`Workload`] for several phases around restarts.
pub async fn run_once(endpoints: Vec<String>, config: WorkloadConfig, duration: Duration) -> anyhow::Result<Report> {
    let workload = Workload::new(config);
    workload.setup(&endpoints).await?;
    let mut feeds = workload.start_feeds(&endpoints);
    feeds.ready().await;
    workload.phase(&endpoints, duration).await;
    let started = Instant::now();
    while workload.races() < workload.config.min_races && started.elapsed() < duration * 3 {
        workload.phase(&endpoints, Duration::from_secs(1)).await;
    }
    workload.sweep(&endpoints).await;
    let feeds = feeds.finish().await;
    Ok(check(&workload.history(feeds)))
}
