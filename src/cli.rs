//! Command-line interface of the `kedai` binary.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kedai",
    version,
    about = "An online shop with a WhatsApp shopping assistant, in one binary."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the shop (the default when no command is given).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Seed the demo catalog if the database has no products, and exit.
    SeedDemo,
    /// Print the effective configuration, secrets redacted, and exit.
    Config,
    /// WhatsApp messages sent or recorded (the embedded outbox).
    Messages {
        #[command(subcommand)]
        command: MessagesCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List the newest messages.
    List {
        /// Only messages to this number (E.164, e.g. +60123456789).
        #[arg(long)]
        to: Option<String>,
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}
