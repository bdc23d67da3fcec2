//! Logging setup, in one place. Logs go to stderr; `RUST_LOG` filters them.
//!
//! Whatever `RUST_LOG` asks for, the transport and storage libraries are capped at `info`: at
//! lower levels they log raw headers and frames, and those carry secrets.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Targets that never log below `info`.
const CAPPED: &[&str] =
    &["jsonrpsee", "jsonrpsee_server", "jsonrpsee_core", "soketto", "hyper", "h2", "surrealdb", "surrealdb_core"];

pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Only when something below `info` is enabled: a cap must never raise a level.
    if filter.max_level_hint().is_none_or(|max| max > LevelFilter::INFO) {
        for target in CAPPED {
            if let Ok(directive) = format!("{target}=info").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
