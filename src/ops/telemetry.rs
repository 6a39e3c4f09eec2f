//! Logging: JSON lines (or a readable format for terminals) through
//! `tracing`, filtered by `log.level` or `RUST_LOG`.
//!
//! Lines are formatted on the thread that logs but written by a dedicated
//! thread (`tracing-appender`), so a slow or blocked stdout never stalls an
//! HTTP worker. The writer is not lossy: when its buffer is full, loggers
//! wait rather than drop lines.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. Keep the returned guard alive until the
/// process exits: dropping it flushes the remaining lines. A second call
/// (tests start many apps in one process) keeps the first subscriber.
pub fn init(settings: &LogSettings) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("kedai-log")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(writer);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    guard
}
