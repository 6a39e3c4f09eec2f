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
    /// The event bus: events, deliveries, dead letters and replays.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Shipments (the manual carrier's controls).
    Shipments {
        #[command(subcommand)]
        command: ShipmentsCommand,
    },
    /// Daily sales and event figures.
    Analytics {
        #[command(subcommand)]
        command: AnalyticsCommand,
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

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// The newest events and their deliveries.
    List {
        /// Only events of this type, e.g. order.paid.
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Per-handler delivery counts (pending, running, done, dead).
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Dead letters, newest first.
    Dead {
        #[arg(long)]
        handler: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Send one dead letter back to its handler.
    Replay {
        /// The delivery id (from `kedai events dead`).
        delivery: i64,
    },
    /// Send every dead letter of a handler back to it.
    ReplayDead {
        #[arg(long)]
        handler: String,
    },
    /// Deliver archived events from a time range to one handler again.
    ReplayRange {
        #[arg(long)]
        handler: String,
        /// RFC 3339, inclusive, e.g. 2026-11-24T00:00:00Z.
        #[arg(long)]
        from: String,
        /// RFC 3339, exclusive.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShipmentsCommand {
    /// Move an order's shipment along (manual carrier).
    Mark {
        /// The order id (as in order links).
        order: String,
        /// shipped, out-for-delivery, delivered or exception.
        status: String,
        #[arg(long)]
        tracking: Option<String>,
        /// What went wrong, for exceptions.
        #[arg(long)]
        detail: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Daily figures (shop-local days), the last 7 by default.
    Daily {
        /// First day, YYYY-MM-DD.
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (default today).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
}
