//! Long-running tasks with a name and an owner that stops them.
//!
//! Every task that outlives a call (the background loops, the store's group-commit workers) is
//! spawned through a [`Tasks`], which keeps its name and its handle. (Two kinds stay detached on
//! purpose: a call's own operation task, which must finish its transaction even if its caller
//! hangs up, and the store's unreachable-database prober, which ends when the database answers.)
//! Stopping sends one signal that every task selects on, then waits for each, bounded by the
//! shutdown deadline, so a shutdown that returns has nothing of ours still running, and a task
//! that will not stop is aborted and named in the log. Each task runs inside a span carrying its
//! name, so what it logs says which task it is.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

/// A set of running tasks, stopped together.
#[derive(Debug)]
pub struct Tasks {
    stop: watch::Sender<bool>,
    running: Vec<(String, JoinHandle<()>)>,
}

/// What a task selects on to learn that it should stop.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Tasks { stop: watch::channel(false).0, running: Vec::new() }
    }

    /// The signal to hand to a task before spawning it.
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal(self.stop.subscribe())
    }

    /// Spawns `task` under `name`, inside a span named after it.
    pub fn spawn(&mut self, name: impl Into<String>, task: impl Future<Output = ()> + Send + 'static) {
        let name = name.into();
        let span = tracing::info_span!("task", name = %name);
        self.running.push((name, tokio::spawn(task.instrument(span))));
    }

    /// Signals every task to stop and waits for each to finish what it is doing.
    pub async fn stop(self) {
        self.stop_by(Instant::now() + Duration::from_secs(24 * 3600)).await;
    }

    /// Signals every task to stop and waits, until `deadline`, for each to finish what it is
    /// doing; a task still running then is aborted.
    pub async fn stop_by(self, deadline: Instant) {
        let _ = self.stop.send(true);
        for (name, mut task) in self.running {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = %name, error = %e, "task failed"),
                Err(_) => {
                    tracing::warn!(task = %name, "task still busy at the shutdown deadline; aborted");
                    task.abort();
                }
            }
        }
    }
}

impl StopSignal {
    /// Resolves once the owner asks its tasks to stop, or is gone.
    pub async fn stopped(&mut self) {
        while !*self.0.borrow() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}
