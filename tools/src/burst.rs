//! A burst of malformed frames: `authstore-tools burst`.
//!
//! Each connection pipelines frames a well-behaved client never sends, alternating text that
//! is not JSON and a `session.put` whose params fail validation (or, with `--call METHOD`,
//! calls of that method), and reads one answer per frame (with `--never-read`, none: a client
//! that stopped reading). Nothing is stored;
//! what the burst leaves is the server's memory, which is the point: read its resident size
//! before, after, and after a pause (`docs/benchmarks.md`, "Allocator" and "A client that
//! does not read").

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use futures::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Args)]
pub struct BurstArgs {
    /// The server to send to.
    #[arg(long, default_value = "ws://127.0.0.1:8750")]
    pub url: String,
    /// API key, if the server requires one.
    #[arg(long, env = "AUTHSTORE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// WebSocket connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Frames in all, spread over the connections.
    #[arg(long, default_value_t = 500_000)]
    pub frames: u64,
    /// Frames sent ahead of their answers, per connection.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Read no answers at all: send until the frames are out or the server closes the
    /// connection, then keep it open for `--hold-secs` (a client that stopped reading).
    #[arg(long)]
    pub never_read: bool,
    /// With `--never-read`: seconds to keep the connections open after sending.
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
    /// Send well-formed calls of this method, without params (e.g. `rpc.discover`, whose answer
    /// is large), instead of the malformed frames.
    #[arg(long)]
    pub call: Option<String>,
}

/// The frames, in turn: calls of `call`, or malformed ones.
fn frame(call: Option<&str>, i: u64) -> String {
    if let Some(method) = call {
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":{}}}", serde_json::Value::from(method))
    } else if i.is_multiple_of(2) {
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"session.put\",\"params\":{{\"client_id\"")
    } else {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"session.put\",\"params\":{{\"client_id\":\"app\",\
             \"redirect_uri\":\"not a uri {i}\",\"ttl_secs\":-1}}}}"
        )
    }
}

pub async fn run(args: BurstArgs) -> anyhow::Result<()> {
    let per = args.frames / args.connections.max(1) as u64;
    let started = Instant::now();
    let mut connections = Vec::new();
    for c in 0..args.connections.max(1) {
        let mut request = args.url.as_str().into_client_request().context("the server URL")?;
        if let Some(key) = &args.api_key {
            request.headers_mut().insert(http::header::AUTHORIZATION, format!("Bearer {key}").parse()?);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await.context("connecting")?;
        let window = args.window.max(1);
        let call = args.call.clone();
        if args.never_read {
            let hold = std::time::Duration::from_secs(args.hold_secs);
            connections.push(tokio::spawn(async move {
                let (mut sink, stream) = socket.split();
                let mut sent = 0u64;
                while sent < per {
                    if let Err(e) = sink.send(Message::text(frame(call.as_deref(), c as u64 * per + sent))).await {
                        eprintln!("burst: connection {c}: the server closed it after {sent} frames ({e})");
                        break;
                    }
                    sent += 1;
                }
                tokio::time::sleep(hold).await;
                drop(stream);
                anyhow::Ok(sent)
            }));
            continue;
        }
        connections.push(tokio::spawn(async move {
            let (mut sink, mut stream) = socket.split();
            let credit = Arc::new(Semaphore::new(window));
            let sending = {
                let (credit, call) = (credit.clone(), call.clone());
                tokio::spawn(async move {
                    for i in 0..per {
                        credit.acquire().await?.forget();
                        sink.send(Message::text(frame(call.as_deref(), c as u64 * per + i))).await?;
                    }
                    anyhow::Ok(sink)
                })
            };
            let mut answers = 0u64;
            while answers < per {
                match stream.next().await {
                    Some(Ok(Message::Text(_))) => {
                        answers += 1;
                        credit.add_permits(1);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => anyhow::bail!("after {answers} answers: {e}"),
                    None => anyhow::bail!("the server closed the connection after {answers} answers"),
                }
            }
            let mut sink = sending.await??;
            let _ = sink.close().await;
            anyhow::Ok(answers)
        }));
    }
    let mut answers = 0;
    for connection in connections {
        answers += connection.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let what = args.call.as_deref().map_or("malformed frames".to_string(), |method| format!("{method} calls"));
    if args.never_read {
        println!("burst: {answers} {what} sent, none read, over {} connections", args.connections);
        return Ok(());
    }
    println!(
        "burst: {answers} {what} answered over {} connections in {seconds:.1} s ({:.0}/s)",
        args.connections,
        answers as f64 / seconds
    );
    Ok(())
}
