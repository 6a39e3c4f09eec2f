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
    /// The knowledge base: ingestion, search and retrieval quality.
    Kb {
        #[command(subcommand)]
        command: KbCommand,
    },
    /// Back-office accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The WhatsApp assistant: write to it as a shopper, read conversations.
    Chat {
        #[command(subcommand)]
        command: ChatCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account. The password is read from standard input
    /// when it is not a terminal; otherwise one is generated and printed once.
    Create {
        #[arg(long)]
        email: String,
        /// owner, staff or support.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Send a WhatsApp message to a running server as Twilio would: a
    /// signed `POST /webhooks/twilio` (signed over `server.public_url`).
    Send {
        /// The shopper's number, e.g. +60123456789.
        #[arg(long)]
        from: String,
        /// The shopper's WhatsApp profile name.
        #[arg(long, default_value = "Shopper")]
        name: String,
        /// Where the server listens, when not at `server.public_url`.
        #[arg(long)]
        server: Option<String>,
        /// Wait for the assistant's reply and print it (seconds; 0: don't).
        #[arg(long, default_value_t = 15)]
        wait: u64,
        /// The message text.
        text: String,
    },
    /// One shopper's conversation: every message, who wrote it, its status.
    Show {
        /// The shopper's number (or username id).
        from: String,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Conversations, latest first.
    List {
        /// Only `bot`, `needs_human` or `human`.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Questions the assistant could not answer from the knowledge base.
    Missing {
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum KbCommand {
    /// Ingest new, changed and deleted documents (and the catalog's products).
    Ingest {
        /// Only document-store keys (or `product:` keys) under this prefix.
        path: Option<String>,
        /// Everything: the whole document store and the catalog (the default).
        #[arg(long, conflicts_with = "path")]
        all: bool,
        /// Print the report as JSON instead of drawing a progress bar.
        #[arg(long)]
        json: bool,
    },
    /// Copy a local file into the document store under KEY, then ingest it.
    Upload {
        file: std::path::PathBuf,
        /// The document's key in the store (default: the file name).
        #[arg(long)]
        key: Option<String>,
    },
    /// Every ingested document with its status and passage count.
    Documents {
        #[arg(long)]
        json: bool,
    },
    /// Search the knowledge base as the assistant does.
    Search {
        query: String,
        #[arg(short, long, default_value_t = 5)]
        k: usize,
        #[arg(long, value_enum, default_value_t = crate::knowledge::Mode::Hybrid)]
        mode: crate::knowledge::Mode,
        /// Only passages of this kind (policy, faq, guide, store, product, …).
        #[arg(long)]
        kind: Option<String>,
        /// Only passages in this language (en, ms, id, …).
        #[arg(long)]
        language: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Retrieval quality on a labelled set in the BEIR layout.
    Eval {
        /// A folder with corpus.jsonl, queries.jsonl and qrels/test.tsv (or qrels.tsv).
        #[arg(long)]
        beir: std::path::PathBuf,
        /// Write the ranked results in TREC run format here.
        #[arg(long)]
        run_file: Option<std::path::PathBuf>,
        /// The mode whose ranking goes into the run file.
        #[arg(long, value_enum, default_value_t = crate::knowledge::Mode::Hybrid)]
        run_mode: crate::knowledge::Mode,
        /// List the queries each mode missed in its top 5.
        #[arg(long)]
        misses: bool,
        /// Score all queries, or the odd-numbered (dev) or even-numbered (test) half.
        #[arg(long, value_enum, default_value_t = crate::knowledge::eval::Split::All)]
        split: crate::knowledge::eval::Split,
        /// Measure the embedded embedder without its shop-vocabulary
        /// concepts (version 1), to compare.
        #[arg(long)]
        without_concepts: bool,
        #[arg(long)]
        json: bool,
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
