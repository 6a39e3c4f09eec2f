use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kedai::app::Application;
use kedai::catalog::Catalog;
use kedai::cli::{Cli, Command, MessagesCommand};
use kedai::config::{ConfigSources, Settings};
use kedai::ops::telemetry;
use kedai::platform::db;

/// mimalloc instead of glibc's malloc: under load the server spent about a
/// tenth of its CPU in glibc's free lists (`malloc_consolidate`,
/// `_int_free`, `unlink_chunk`; see docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&ConfigSources::from_env()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("kedai: {error:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config) = cli.command {
        return match settings.redacted() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("kedai: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let _log_guard = telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kedai: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "kedai failed");
            eprintln!("kedai: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate => {
            let connection = db::connect(&settings.database).await?;
            db::migrate(&connection).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::SeedDemo => {
            let connection = db::connect(&settings.database).await?;
            db::migrate(&connection).await?;
            let seeded = Catalog::seed_demo_if_empty(&connection).await?;
            if seeded > 0 {
                println!("seeded {seeded} demo products");
            } else {
                println!("the catalog already has products; nothing seeded");
            }
            let knowledge = kedai::knowledge::Knowledge::from_settings(
                &settings,
                connection.clone(),
                kedai::platform::db::Writer::new(connection),
                None,
                &kedai::platform::upstream::UpstreamSignals::default(),
            )
            .await?;
            match knowledge.seed_demo_documents().await? {
                0 => println!("the document store already has documents; nothing written"),
                written => println!("wrote {written} demo knowledge-base documents"),
            }
            Ok(())
        }
        Command::Messages {
            command: MessagesCommand::List { to, limit, json },
        } => {
            let connection = db::connect(&settings.database).await?;
            db::migrate(&connection).await?;
            let to = to.as_deref().map(|raw| {
                kedai::customers::normalise_phone(raw).unwrap_or_else(|| raw.to_string())
            });
            let messages =
                kedai::platform::messaging::list(&connection, to.as_deref(), limit).await?;
            if json {
                let rows: Vec<serde_json::Value> = messages
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "message_id": m.message_id,
                            "to": m.recipient,
                            "kind": m.kind,
                            "status": m.status,
                            "template": m.content_sid,
                            "error_code": m.error_code,
                            "error": m.error_message,
                            "created_at": m.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                            "body": m.body,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if messages.is_empty() {
                println!("no messages");
            } else {
                for m in &messages {
                    let when = m
                        .created_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default();
                    println!(
                        "{when}  {:<16} {:<16} {:<9} {}",
                        m.recipient, m.kind, m.status, m.body
                    );
                }
            }
            Ok(())
        }
        Command::Events { command } => kedai::commands::events(&settings, command).await,
        Command::Shipments { command } => kedai::commands::shipments(&settings, command).await,
        Command::Analytics { command } => kedai::commands::analytics(&settings, command).await,
        Command::Kb { command } => kedai::commands::kb(&settings, command).await,
        Command::Chat { command } => kedai::commands::chat(&settings, command).await,
        Command::Admin { command } => kedai::commands::admin(&settings, command).await,
        Command::Config => unreachable!("handled before the runtime starts"),
    }
}

/// Completes on SIGTERM (container stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("could not listen for SIGTERM")
            {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "only Ctrl-C will stop the server"
                    );
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
