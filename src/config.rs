//! Configuration: compiled-in defaults, an optional profile file, then the
//! environment.
//!
//! Every struct denies unknown fields, so a misspelt key in a file or an
//! environment variable stops startup with the key's name instead of being
//! silently ignored. Secrets are [`SecretString`]s; they are only ever
//! printed through [`Settings::redacted`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// The defaults, compiled into the binary so that `kedai` runs from any folder.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Where a configuration comes from, besides the compiled-in defaults.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// `KEDAI_PROFILE`: loads `<config_dir>/<profile>.toml` on top of the defaults.
    pub profile: Option<String>,
    /// `KEDAI_CONFIG_DIR`, default `config`.
    pub config_dir: Option<PathBuf>,
    /// Read `KEDAI__SECTION__KEY` variables from the process environment.
    pub use_environment: bool,
    /// Extra key/value overrides applied last (tests use these instead of
    /// mutating the process environment, which parallel tests share).
    pub overrides: Vec<(String, String)>,
}

impl ConfigSources {
    /// The sources a deployed binary uses: profile and directory from the environment.
    pub fn from_env() -> Self {
        Self {
            profile: std::env::var("KEDAI_PROFILE")
                .ok()
                .filter(|p| !p.is_empty()),
            config_dir: std::env::var_os("KEDAI_CONFIG_DIR").map(PathBuf::from),
            use_environment: true,
            overrides: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub database: DatabaseSettings,
    pub catalog: CatalogSettings,
    pub redis: RedisSettings,
    pub queue: QueueSettings,
    pub objects: ObjectsSettings,
    pub llm: LlmSettings,
    pub embeddings: EmbeddingsSettings,
    pub vectors: VectorsSettings,
    pub knowledge: KnowledgeSettings,
    pub chat: ChatSettings,
    pub admin: AdminSettings,
    pub messaging: MessagingSettings,
    pub payments: PaymentsSettings,
    pub carrier: CarrierSettings,
    pub alerts: AlertsSettings,
    pub aws: AwsSettings,
    pub twilio: TwilioSettings,
    pub stripe: StripeSettings,
    pub lark: LarkSettings,
    pub shop: ShopSettings,
    pub events: EventsSettings,
    pub notify: NotifySettings,
    /// The profile that was loaded, if any (not a key in the files).
    #[serde(skip)]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub public_url: Url,
    pub workers: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub max_body_bytes: usize,
    pub access_log: bool,
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    pub secret_key: SecretString,
    /// Bearer token of the operations JSON API (`/api/ops/…`); the API is
    /// off while it is empty.
    pub ops_api_token: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub kind: DatabaseKind,
    /// May carry a password, so it is treated as a secret.
    pub url: SecretString,
    pub migrate_on_start: bool,
    pub seed_demo_on_empty: bool,
    pub max_connections: u32,
    pub min_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub sqlite_busy_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    pub page_size: u64,
    pub low_stock_threshold: i32,
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    pub search_cache_entries: usize,
    #[serde(with = "humantime_serde")]
    pub page_max_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisKind {
    None,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub kind: RedisKind,
    /// May carry a password.
    pub url: SecretString,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    Database,
    Sqs,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub kind: QueueKind,
    pub sqs_queue_url: String,
    /// The database queue's name (its dead letters go to `<name>-dlq`).
    pub name: String,
    /// How long a received message stays hidden from other receivers.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// Receives before a message is dead-lettered (the database queue; on
    /// SQS the queue's redrive policy decides).
    pub max_receives: u32,
    /// The SQS dead-letter queue's URL, read for the dead-letter count.
    pub sqs_dlq_url: String,
    /// Longest a receive waits for a message (long polling; at most 20s).
    #[serde(with = "humantime_serde")]
    pub wait_time: Duration,
    /// How often a waiting database-queue receive looks again.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectsKind {
    Local,
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsSettings {
    pub kind: ObjectsKind,
    pub path: PathBuf,
    pub bucket: String,
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmKind {
    Offline,
    Bedrock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    pub kind: LlmKind,
    /// Bedrock model id (or inference profile id) for kind = "bedrock".
    pub model_id: String,
    /// Longest answer, in tokens.
    pub max_tokens: u32,
    pub temperature: f32,
    /// Attempts per turn, throttling included, before the turn is put
    /// back on the queue (the shopper gets a holding reply meanwhile).
    pub max_attempts: u32,
    /// Longest one model call may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Overrides the Bedrock runtime endpoint (test fakes); empty for AWS.
    pub endpoint_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingsKind {
    Local,
    Bedrock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsSettings {
    pub kind: EmbeddingsKind,
    /// Bedrock model id for kind = "bedrock".
    pub model_id: String,
    /// Vector size of the Bedrock model (Titan v1: 1536; v2: 256, 512 or 1024).
    pub dimensions: u32,
    /// Vector size of the embedded hashing embedder.
    pub local_dimensions: u32,
    /// Bedrock calls in flight at once.
    pub concurrency: usize,
    /// Attempts per text, throttling included, before an ingest run gives up.
    pub max_attempts: u32,
    /// Overrides the Bedrock runtime endpoint (test fakes); empty for AWS.
    pub endpoint_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorsKind {
    Embedded,
    OpenSearch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorsSettings {
    pub kind: VectorsKind,
    /// Folder of the embedded index file.
    pub path: PathBuf,
    /// OpenSearch Serverless collection endpoint for kind = "opensearch".
    pub endpoint: String,
    /// Index name prefix; the embedder's vector space is appended.
    pub index: String,
    /// Above this many passages the embedded index also builds an HNSW graph.
    pub hnsw_threshold: usize,
    /// Keep an int8 copy of the vectors and re-score the best candidates in f32.
    pub quantize: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeSettings {
    /// Target passage size in approximate tokens.
    pub chunk_tokens: usize,
    /// Tokens carried over from the previous passage of the same section.
    pub chunk_overlap: usize,
    /// Language of documents that do not declare one.
    pub default_language: String,
    /// Ingest new and changed documents in the background at startup.
    pub ingest_on_start: bool,
    /// How often the document store and the catalog are checked for changes.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// How often each replica checks whether passages changed elsewhere.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Candidates taken from each of keyword and vector search before fusion.
    pub candidates: usize,
    /// Reciprocal rank fusion constant (60 in the literature).
    pub rrf_k: f32,
    /// Weight of the keyword list in the fusion (the vector list weighs 1).
    pub keyword_weight: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessagingKind {
    Recorded,
    Twilio,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagingSettings {
    pub kind: MessagingKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentsKind {
    Test,
    Stripe,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsSettings {
    pub kind: PaymentsKind,
    #[serde(with = "humantime_serde")]
    pub reservation_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    pub restock_on_refund: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CarrierKind {
    Manual,
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierSettings {
    pub kind: CarrierKind,
    pub base_url: String,
    pub api_key: SecretString,
    /// Signs the carrier's status webhooks (HMAC-SHA256 with a timestamp).
    pub webhook_secret: SecretString,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertsKind {
    Log,
    Lark,
}

/// The alert rules (`alerts` module) and where their alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSettings {
    pub kind: AlertsKind,
    /// Evaluate the rules in this process (the database keeps one open
    /// alert per rule however many replicas evaluate).
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// `http_errors`: share of 5xx answers over the window (0.01 = 1 %) …
    pub http_error_rate: f64,
    /// … once the window holds at least this many requests.
    pub http_min_requests: u64,
    /// `chat_queue_oldest`: the oldest chat message has waited longer.
    #[serde(with = "humantime_serde")]
    pub queue_oldest: Duration,
    /// `database_latency`: p99 of database statements over the window …
    #[serde(with = "humantime_serde")]
    pub database_p99: Duration,
    /// … once the window holds at least this many statements.
    pub database_min_statements: u64,
    /// `dead_letters`: a dead letter appeared within this long.
    #[serde(with = "humantime_serde")]
    pub dead_letter_window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    pub region: String,
    pub endpoint_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    pub account_sid: String,
    pub auth_token: SecretString,
    /// Still accepted on incoming webhooks while the token rotates.
    pub previous_auth_token: SecretString,
    /// Where the generated auth token of embedded mode is kept.
    pub embedded_token_file: PathBuf,
    pub from: String,
    pub api_base: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSettings {
    pub secret_key: SecretString,
    pub webhook_secret: SecretString,
    pub previous_webhook_secret: SecretString,
    pub api_base: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LarkSettings {
    pub webhook_url: String,
    pub secret: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopSettings {
    /// The shop's name, as the assistant introduces it.
    pub name: String,
    /// The shop's offset from UTC, e.g. `+08:00`: local days for
    /// analytics, local time for quiet hours.
    pub utc_offset: String,
    /// The ISO 4217 code new prices are entered in (`MYR`, `SGD`, `USD`).
    pub currency: String,
}

impl ShopSettings {
    pub fn offset(&self) -> time::UtcOffset {
        parse_utc_offset(&self.utc_offset).unwrap_or(time::UtcOffset::UTC)
    }

    /// The shop's currency (validated at startup).
    pub fn currency(&self) -> crate::catalog::model::Currency {
        crate::catalog::model::Currency::parse(&self.currency)
            .unwrap_or(crate::catalog::model::Currency::Myr)
    }
}

fn parse_utc_offset(raw: &str) -> Option<time::UtcOffset> {
    let format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    time::UtcOffset::parse(raw.trim(), &format).ok()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// The back-office's WhatsApp simulator: chat as a shopper through the
    /// real, signed webhook path. On for the embedded demo, off in the
    /// production profile.
    pub simulator: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// Run the assistant's queue workers in this process.
    pub enabled: bool,
    /// Conversations answered at once per process.
    pub workers: usize,
    /// Messages a shopper sends within this long of each other are
    /// answered as one turn.
    #[serde(with = "humantime_serde")]
    pub burst_window: Duration,
    /// Messages per sender per `rate_window` that get answered.
    pub sender_limit: u32,
    /// Messages from everyone per `rate_window` that get answered.
    pub global_limit: u32,
    #[serde(with = "humantime_serde")]
    pub rate_window: Duration,
    /// Earlier messages of the conversation given to the model.
    pub history_messages: u64,
    /// Passages retrieved per question.
    pub passages: usize,
    /// The evidence gate: the best passage's vector similarity (cosine)
    /// must reach this, or its keyword score `evidence_keyword`, for the
    /// bot to answer a question that is not about an order.
    pub evidence_vector: f32,
    pub evidence_keyword: f32,
    /// Complaints in a row after which the bot hands over to a person.
    pub dissatisfaction_limit: i32,
    /// How long a conversation stays with people (taken over, or waiting
    /// for one after an escalation) without activity before it returns to
    /// the bot.
    #[serde(with = "humantime_serde")]
    pub handover_idle: Duration,
    /// Longest WhatsApp message; longer replies are split at sentences.
    pub max_reply_chars: usize,
    /// Wait before a turn the model could not answer is tried again.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Conversations and messages older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    /// Inbound messages whose queue job could not be sent (SQS down) are
    /// sent again after this long.
    #[serde(with = "humantime_serde")]
    pub relay_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    /// Run the dispatcher in this process.
    pub enabled: bool,
    /// How often to look for due deliveries when no commit woke us.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Events routed, and deliveries claimed, per step.
    pub batch_size: u64,
    /// Deliveries handled at once per process.
    pub concurrency: usize,
    /// How long a claimed delivery belongs to one process; a crashed
    /// process's deliveries are taken over after it.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// A handler call that takes longer fails (and is retried).
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// Delay before each retry; after the last, a dead letter.
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// Random spread of each delay, as a fraction (0.2 = ±20%).
    pub retry_jitter: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// Local times with no proactive messages, `HH:MM-HH:MM` (may wrap
    /// midnight); empty for none.
    pub quiet_hours: String,
    /// WhatsApp's customer-service window after the shopper's last message.
    #[serde(with = "humantime_serde")]
    pub session_window: Duration,
    /// Approved template Content SIDs (`HX…`) for messages outside the window.
    pub template_order_paid: String,
    pub template_shipment_in_transit: String,
    pub template_shipment_out_for_delivery: String,
    pub template_shipment_delivered: String,
    pub template_shipment_exception: String,
    pub template_password_reset: String,
}

/// Every kind of WhatsApp message the shop sends, each with a
/// `notify.template_<kind>` setting.
pub const NOTIFICATION_KINDS: [&str; 6] = [
    "order_paid",
    "shipment_in_transit",
    "shipment_out_for_delivery",
    "shipment_delivered",
    "shipment_exception",
    "password_reset",
];

impl NotifySettings {
    /// The Content SID configured for a notification kind, if any.
    pub fn template_for(&self, kind: &str) -> Option<&str> {
        let sid = match kind {
            "order_paid" => &self.template_order_paid,
            "shipment_in_transit" => &self.template_shipment_in_transit,
            "shipment_out_for_delivery" => &self.template_shipment_out_for_delivery,
            "shipment_delivered" => &self.template_shipment_delivered,
            "shipment_exception" => &self.template_shipment_exception,
            "password_reset" => &self.template_password_reset,
            _ => return None,
        };
        Some(sid.as_str()).filter(|s| !s.is_empty())
    }

    /// The quiet hours as (start, end) local times, if set.
    pub fn quiet_window(&self) -> Option<(time::Time, time::Time)> {
        parse_quiet_hours(&self.quiet_hours)
    }
}

fn parse_quiet_hours(raw: &str) -> Option<(time::Time, time::Time)> {
    let format = time::macros::format_description!("[hour]:[minute]");
    let (start, end) = raw.trim().split_once('-')?;
    let start = time::Time::parse(start.trim(), &format).ok()?;
    let end = time::Time::parse(end.trim(), &format).ok()?;
    (start != end).then_some((start, end))
}

/// True when a secret has a non-empty value.
pub fn is_set(secret: &SecretString) -> bool {
    !secret.expose_secret().is_empty()
}

impl Settings {
    /// Loads and validates the configuration from the given sources.
    pub fn load(sources: &ConfigSources) -> anyhow::Result<Self> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(profile) = &sources.profile {
            validate_profile_name(profile)?;
            let dir = sources
                .config_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("config"));
            let path = dir.join(format!("{profile}.toml"));
            if !path.is_file() {
                bail!(
                    "KEDAI_PROFILE={profile} but the profile file {} does not exist",
                    path.display()
                );
            }
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
        }
        if sources.use_environment {
            builder = builder.add_source(
                Environment::with_prefix("KEDAI")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        for (key, value) in &sources.overrides {
            builder = builder
                .set_override(key.as_str(), value.as_str())
                .with_context(|| format!("invalid override for key `{key}`"))?;
        }
        let merged = builder
            .build()
            .context("could not read the configuration")?;
        let mut settings: Settings = merged
            .try_deserialize()
            .map_err(|error| anyhow::anyhow!("invalid configuration: {error}"))?;
        settings.profile = sources.profile.clone();
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the rules that types alone cannot express; each error names its key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = self.database.url.expose_secret();
        let scheme_ok = match self.database.kind {
            DatabaseKind::Sqlite => url.starts_with("sqlite:"),
            DatabaseKind::Postgres => {
                url.starts_with("postgres://") || url.starts_with("postgresql://")
            }
        };
        if !scheme_ok {
            bail!(
                "database.url does not match database.kind = {:?} (expected a {} URL)",
                self.database.kind,
                match self.database.kind {
                    DatabaseKind::Sqlite => "sqlite:",
                    DatabaseKind::Postgres => "postgres://",
                }
            );
        }
        if self.database.max_connections == 0 {
            bail!("database.max_connections must be at least 1");
        }
        if self.database.min_connections > self.database.max_connections {
            bail!("database.min_connections must not exceed database.max_connections");
        }
        if self.chat.workers == 0 {
            bail!("chat.workers must be at least 1");
        }
        if self.chat.max_reply_chars < 200 || self.chat.max_reply_chars > 1600 {
            bail!("chat.max_reply_chars must be between 200 and 1600 (WhatsApp's limit)");
        }
        if self.chat.sender_limit == 0 || self.chat.global_limit == 0 {
            bail!("chat.sender_limit and chat.global_limit must be at least 1");
        }
        if self.catalog.page_size == 0 || self.catalog.page_size > 200 {
            bail!("catalog.page_size must be between 1 and 200");
        }
        if self.catalog.refresh_interval < Duration::from_millis(100) {
            bail!("catalog.refresh_interval must be at least 100ms");
        }
        if self.server.max_body_bytes < 1024 {
            bail!("server.max_body_bytes must be at least 1024");
        }
        if !matches!(self.server.public_url.scheme(), "http" | "https") {
            bail!("server.public_url must be an http or https URL");
        }
        if self.redis.kind == RedisKind::Redis && !is_set(&self.redis.url) {
            bail!("redis.url is required when redis.kind = \"redis\"");
        }
        if self.queue.kind == QueueKind::Sqs && self.queue.sqs_queue_url.is_empty() {
            bail!("queue.sqs_queue_url is required when queue.kind = \"sqs\"");
        }
        let queue_name_ok = (1..=72).contains(&self.queue.name.len())
            && self
                .queue
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !queue_name_ok {
            bail!("queue.name must be 1 to 72 letters, digits, '-' or '_'");
        }
        if self.queue.visibility_timeout < Duration::from_secs(1)
            || self.queue.visibility_timeout > Duration::from_secs(12 * 3600)
        {
            bail!("queue.visibility_timeout must be between 1s and 12h");
        }
        if !(1..=1000).contains(&self.queue.max_receives) {
            bail!("queue.max_receives must be between 1 and 1000");
        }
        if self.queue.wait_time > Duration::from_secs(20) {
            bail!("queue.wait_time must be at most 20s");
        }
        if self.queue.poll_interval < Duration::from_millis(10) {
            bail!("queue.poll_interval must be at least 10ms");
        }
        if self.objects.kind == ObjectsKind::S3 && self.objects.bucket.is_empty() {
            bail!("objects.bucket is required when objects.kind = \"s3\"");
        }
        if self.vectors.kind == VectorsKind::OpenSearch && self.vectors.endpoint.is_empty() {
            bail!("vectors.endpoint is required when vectors.kind = \"opensearch\"");
        }
        if self.embeddings.dimensions == 0 || self.embeddings.local_dimensions < 16 {
            bail!(
                "embeddings.dimensions must be positive and embeddings.local_dimensions at least 16"
            );
        }
        if self.embeddings.concurrency == 0 || self.embeddings.max_attempts == 0 {
            bail!("embeddings.concurrency and embeddings.max_attempts must be at least 1");
        }
        if self.knowledge.chunk_tokens < 32
            || self.knowledge.chunk_overlap >= self.knowledge.chunk_tokens
        {
            bail!(
                "knowledge.chunk_tokens must be at least 32 and larger than knowledge.chunk_overlap"
            );
        }
        if self.knowledge.candidates == 0
            || self.knowledge.rrf_k <= 0.0
            || !(0.0..=10.0).contains(&self.knowledge.keyword_weight)
        {
            bail!("knowledge.candidates and knowledge.rrf_k must be positive");
        }
        if self.knowledge.refresh_interval < Duration::from_millis(100)
            || self.knowledge.sync_interval < Duration::from_secs(1)
        {
            bail!(
                "knowledge.refresh_interval must be at least 100ms and knowledge.sync_interval at least 1s"
            );
        }
        if self.messaging.kind == MessagingKind::Twilio
            && (self.twilio.account_sid.is_empty() || !is_set(&self.twilio.auth_token))
        {
            bail!(
                "twilio.account_sid and twilio.auth_token are required when messaging.kind = \"twilio\""
            );
        }
        if self.payments.kind == PaymentsKind::Stripe
            && (!is_set(&self.stripe.secret_key) || !is_set(&self.stripe.webhook_secret))
        {
            bail!(
                "stripe.secret_key and stripe.webhook_secret are required when payments.kind = \"stripe\""
            );
        }
        if self.payments.sweep_interval < Duration::from_secs(1) {
            bail!("payments.sweep_interval must be at least 1s");
        }
        if self.carrier.kind == CarrierKind::Http && self.carrier.base_url.is_empty() {
            bail!("carrier.base_url is required when carrier.kind = \"http\"");
        }
        if parse_utc_offset(&self.shop.utc_offset).is_none() {
            bail!("shop.utc_offset must look like +08:00 or -05:30");
        }
        if crate::catalog::model::Currency::parse(&self.shop.currency).is_none() {
            bail!("shop.currency must be one of MYR, SGD or USD");
        }
        if self.events.batch_size == 0 || self.events.batch_size > 1000 {
            bail!("events.batch_size must be between 1 and 1000");
        }
        if self.events.concurrency == 0 {
            bail!("events.concurrency must be at least 1");
        }
        if self.events.poll_interval < Duration::from_millis(10) {
            bail!("events.poll_interval must be at least 10ms");
        }
        if self.events.lease <= self.events.handler_timeout {
            bail!("events.lease must be longer than events.handler_timeout");
        }
        if !(0.0..=1.0).contains(&self.events.retry_jitter) {
            bail!("events.retry_jitter must be between 0 and 1");
        }
        if !self.notify.quiet_hours.trim().is_empty()
            && parse_quiet_hours(&self.notify.quiet_hours).is_none()
        {
            bail!("notify.quiet_hours must look like 21:00-08:00 (or be empty)");
        }
        if self.alerts.kind == AlertsKind::Lark && self.lark.webhook_url.is_empty() {
            bail!("lark.webhook_url is required when alerts.kind = \"lark\"");
        }
        if self.alerts.interval < Duration::from_secs(1) {
            bail!("alerts.interval must be at least 1s");
        }
        if !(self.alerts.http_error_rate > 0.0 && self.alerts.http_error_rate <= 1.0) {
            bail!("alerts.http_error_rate must be above 0 and at most 1 (0.01 = 1 %)");
        }
        if self.alerts.queue_oldest.is_zero() || self.alerts.database_p99.is_zero() {
            bail!("alerts.queue_oldest and alerts.database_p99 must be positive");
        }
        if self.alerts.dead_letter_window < self.alerts.interval {
            bail!("alerts.dead_letter_window must be at least alerts.interval");
        }
        Ok(())
    }

    /// True when this process runs with the production profile.
    pub fn is_production(&self) -> bool {
        self.profile.as_deref() == Some("production")
    }

    /// The embedded defaults that are still in use; logged loudly in production.
    pub fn embedded_backends(&self) -> Vec<&'static str> {
        let mut embedded = Vec::new();
        if self.database.kind == DatabaseKind::Sqlite {
            embedded.push("database=sqlite");
        }
        if self.redis.kind == RedisKind::None {
            embedded.push("redis=none");
        }
        if self.queue.kind == QueueKind::Database {
            embedded.push("queue=database");
        }
        if self.objects.kind == ObjectsKind::Local {
            embedded.push("objects=local");
        }
        if self.llm.kind == LlmKind::Offline {
            embedded.push("llm=offline");
        }
        if self.embeddings.kind == EmbeddingsKind::Local {
            embedded.push("embeddings=local");
        }
        if self.vectors.kind == VectorsKind::Embedded {
            embedded.push("vectors=embedded");
        }
        if self.messaging.kind == MessagingKind::Recorded {
            embedded.push("messaging=recorded");
        }
        if self.payments.kind == PaymentsKind::Test {
            embedded.push("payments=test");
        }
        if self.carrier.kind == CarrierKind::Manual {
            embedded.push("carrier=manual");
        }
        embedded
    }

    /// The effective configuration as TOML with every secret replaced by
    /// `"<redacted>"` (or `""` when unset). Safe to print and log.
    pub fn redacted(&self) -> anyhow::Result<String> {
        // Rebuild the tree from the typed settings so that what is printed is
        // what the process uses, not what a file said.
        let value = serde_json::json!({
            "server": {
                "bind": self.server.bind.to_string(),
                "public_url": self.server.public_url.as_str(),
                "workers": self.server.workers,
                "shutdown_grace": humantime::format_duration(self.server.shutdown_grace).to_string(),
                "max_body_bytes": self.server.max_body_bytes,
                "access_log": self.server.access_log,
                "session_ttl": humantime::format_duration(self.server.session_ttl).to_string(),
                "secret_key": redact(&self.server.secret_key),
                "ops_api_token": redact(&self.server.ops_api_token),
            },
            "log": { "level": self.log.level, "format": format!("{:?}", self.log.format).to_lowercase() },
            "database": {
                "kind": format!("{:?}", self.database.kind).to_lowercase(),
                "url": redact_url(self.database.url.expose_secret()),
                "migrate_on_start": self.database.migrate_on_start,
                "seed_demo_on_empty": self.database.seed_demo_on_empty,
                "max_connections": self.database.max_connections,
                "min_connections": self.database.min_connections,
                "acquire_timeout": humantime::format_duration(self.database.acquire_timeout).to_string(),
                "sqlite_busy_timeout": humantime::format_duration(self.database.sqlite_busy_timeout).to_string(),
            },
            "catalog": {
                "page_size": self.catalog.page_size,
                "low_stock_threshold": self.catalog.low_stock_threshold,
                "refresh_interval": humantime::format_duration(self.catalog.refresh_interval).to_string(),
                "search_cache_entries": self.catalog.search_cache_entries,
                "page_max_age": humantime::format_duration(self.catalog.page_max_age).to_string(),
            },
            "redis": {
                "kind": format!("{:?}", self.redis.kind).to_lowercase(),
                "url": redact_url(self.redis.url.expose_secret()),
                "key_prefix": self.redis.key_prefix,
            },
            "queue": {
                "kind": format!("{:?}", self.queue.kind).to_lowercase(),
                "sqs_queue_url": self.queue.sqs_queue_url,
                "name": self.queue.name,
                "visibility_timeout": humantime::format_duration(self.queue.visibility_timeout).to_string(),
                "max_receives": self.queue.max_receives,
                "sqs_dlq_url": self.queue.sqs_dlq_url,
                "wait_time": humantime::format_duration(self.queue.wait_time).to_string(),
                "poll_interval": humantime::format_duration(self.queue.poll_interval).to_string(),
            },
            "objects": {
                "kind": format!("{:?}", self.objects.kind).to_lowercase(),
                "path": self.objects.path.display().to_string(),
                "bucket": self.objects.bucket,
                "prefix": self.objects.prefix,
            },
            "llm": { "kind": format!("{:?}", self.llm.kind).to_lowercase(), "model_id": self.llm.model_id },
            "embeddings": {
                "kind": format!("{:?}", self.embeddings.kind).to_lowercase(),
                "model_id": self.embeddings.model_id,
                "dimensions": self.embeddings.dimensions,
                "local_dimensions": self.embeddings.local_dimensions,
                "concurrency": self.embeddings.concurrency,
                "max_attempts": self.embeddings.max_attempts,
                "endpoint_url": self.embeddings.endpoint_url,
            },
            "vectors": {
                "kind": format!("{:?}", self.vectors.kind).to_lowercase(),
                "path": self.vectors.path.display().to_string(),
                "endpoint": self.vectors.endpoint,
                "index": self.vectors.index,
                "hnsw_threshold": self.vectors.hnsw_threshold,
                "quantize": self.vectors.quantize,
            },
            "knowledge": {
                "chunk_tokens": self.knowledge.chunk_tokens,
                "chunk_overlap": self.knowledge.chunk_overlap,
                "default_language": self.knowledge.default_language,
                "ingest_on_start": self.knowledge.ingest_on_start,
                "sync_interval": humantime::format_duration(self.knowledge.sync_interval).to_string(),
                "refresh_interval": humantime::format_duration(self.knowledge.refresh_interval).to_string(),
                "candidates": self.knowledge.candidates,
                "rrf_k": self.knowledge.rrf_k,
                "keyword_weight": self.knowledge.keyword_weight,
            },
            "messaging": { "kind": format!("{:?}", self.messaging.kind).to_lowercase() },
            "payments": {
                "kind": format!("{:?}", self.payments.kind).to_lowercase(),
                "reservation_ttl": humantime::format_duration(self.payments.reservation_ttl).to_string(),
                "sweep_interval": humantime::format_duration(self.payments.sweep_interval).to_string(),
                "restock_on_refund": self.payments.restock_on_refund,
            },
            "carrier": {
                "kind": format!("{:?}", self.carrier.kind).to_lowercase(),
                "base_url": self.carrier.base_url,
                "api_key": redact(&self.carrier.api_key),
                "webhook_secret": redact(&self.carrier.webhook_secret),
                "timeout": duration(self.carrier.timeout),
            },
            "alerts": {
                "kind": format!("{:?}", self.alerts.kind).to_lowercase(),
                "enabled": self.alerts.enabled,
                "interval": duration(self.alerts.interval),
                "http_error_rate": self.alerts.http_error_rate,
                "http_min_requests": self.alerts.http_min_requests,
                "queue_oldest": duration(self.alerts.queue_oldest),
                "database_p99": duration(self.alerts.database_p99),
                "database_min_statements": self.alerts.database_min_statements,
                "dead_letter_window": duration(self.alerts.dead_letter_window),
            },
            "aws": { "region": self.aws.region, "endpoint_url": self.aws.endpoint_url },
            "twilio": {
                "account_sid": self.twilio.account_sid,
                "auth_token": redact(&self.twilio.auth_token),
                "previous_auth_token": redact(&self.twilio.previous_auth_token),
                "from": self.twilio.from,
                "api_base": self.twilio.api_base,
                "timeout": duration(self.twilio.timeout),
            },
            "stripe": {
                "secret_key": redact(&self.stripe.secret_key),
                "webhook_secret": redact(&self.stripe.webhook_secret),
                "previous_webhook_secret": redact(&self.stripe.previous_webhook_secret),
                "api_base": self.stripe.api_base,
            },
            "lark": { "webhook_url": redact_url(&self.lark.webhook_url), "secret": redact(&self.lark.secret) },
            "shop": { "utc_offset": self.shop.utc_offset, "currency": self.shop.currency },
            "events": {
                "enabled": self.events.enabled,
                "poll_interval": duration(self.events.poll_interval),
                "batch_size": self.events.batch_size,
                "concurrency": self.events.concurrency,
                "lease": duration(self.events.lease),
                "handler_timeout": duration(self.events.handler_timeout),
                "retry_schedule": self.events.retry_schedule.iter().map(|d| duration(*d)).collect::<Vec<_>>(),
                "retry_jitter": self.events.retry_jitter,
            },
            "notify": {
                "quiet_hours": self.notify.quiet_hours,
                "session_window": duration(self.notify.session_window),
                "template_order_paid": self.notify.template_order_paid,
                "template_shipment_in_transit": self.notify.template_shipment_in_transit,
                "template_shipment_out_for_delivery": self.notify.template_shipment_out_for_delivery,
                "template_shipment_delivered": self.notify.template_shipment_delivered,
                "template_shipment_exception": self.notify.template_shipment_exception,
                "template_password_reset": self.notify.template_password_reset,
            },
        });
        let mut out = String::new();
        if let Some(profile) = &self.profile {
            out.push_str(&format!("# profile: {profile}\n"));
        }
        out.push_str(&toml_from_json(&value));
        Ok(out)
    }
}

/// A list of human-readable durations (`["5s", "2m"]`).
fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    let raw: Vec<String> = Deserialize::deserialize(deserializer)?;
    raw.iter()
        .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
        .collect()
}

fn duration(value: Duration) -> String {
    humantime::format_duration(value).to_string()
}

fn validate_profile_name(profile: &str) -> anyhow::Result<()> {
    let ok = profile
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok || profile.is_empty() {
        bail!("KEDAI_PROFILE must be letters, digits, '-' or '_' (got {profile:?})");
    }
    Ok(())
}

fn redact(secret: &SecretString) -> &'static str {
    if is_set(secret) { "<redacted>" } else { "" }
}

/// Hides the password of a URL such as `postgres://user:pass@host/db`, and the
/// whole path of webhook URLs whose path is the secret.
fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("<redacted>"));
            url.to_string()
        }
        Ok(url)
            if url
                .host_str()
                .is_some_and(|h| h.contains("larksuite") || h.contains("feishu")) =>
        {
            format!(
                "{}://{}/<redacted>",
                url.scheme(),
                url.host_str().unwrap_or_default()
            )
        }
        _ => raw.to_string(),
    }
}

/// Writes a two-level JSON object (sections of scalar keys) as TOML.
fn toml_from_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    let Some(sections) = value.as_object() else {
        return out;
    };
    for (section, keys) in sections {
        out.push_str(&format!("\n[{section}]\n"));
        if let Some(keys) = keys.as_object() {
            for (key, value) in keys {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
    }
    out
}

/// Resolves a path in the configuration relative to the working directory.
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &[(&str, &str)]) -> anyhow::Result<Settings> {
        Settings::load(&ConfigSources {
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ConfigSources::default()
        })
    }

    #[test]
    fn every_notification_kind_has_a_template_setting() {
        let overrides: Vec<(String, String)> = NOTIFICATION_KINDS
            .iter()
            .map(|kind| (format!("notify.template_{kind}"), format!("HX{kind}")))
            .collect();
        let overrides: Vec<(&str, &str)> = overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let settings = with(&overrides).expect("every kind is a setting");
        for kind in NOTIFICATION_KINDS {
            assert_eq!(
                settings.notify.template_for(kind),
                Some(format!("HX{kind}").as_str())
            );
        }
        assert_eq!(settings.notify.template_for("something_else"), None);
    }

    #[test]
    fn defaults_load_and_use_embedded_backends() {
        let settings = with(&[]).expect("defaults are valid");
        assert_eq!(settings.database.kind, DatabaseKind::Sqlite);
        assert_eq!(settings.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.server.shutdown_grace, Duration::from_secs(30));
        assert!(settings.embedded_backends().contains(&"payments=test"));
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let error = with(&[("server.bnid", "0.0.0.0:1")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("bnid"), "{error}");
    }

    #[test]
    fn unknown_section_is_rejected_with_its_name() {
        let error = with(&[("databse.url", "x")]).unwrap_err().to_string();
        assert!(error.contains("databse"), "{error}");
    }

    #[test]
    fn invalid_value_names_the_key() {
        let error = with(&[("server.bind", "not an address")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("server.bind"), "{error}");
        let error = with(&[("queue.kind", "kafka")]).unwrap_err().to_string();
        assert!(error.contains("queue.kind"), "{error}");
    }

    #[test]
    fn database_kind_must_match_url() {
        let error = with(&[("database.kind", "postgres")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("database.url"), "{error}");
    }

    #[test]
    fn production_adapters_require_their_settings() {
        let error = with(&[("payments.kind", "stripe")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("stripe.secret_key"), "{error}");
    }

    #[test]
    fn redacted_output_hides_secrets() {
        let settings = with(&[
            ("database.kind", "postgres"),
            ("database.url", "postgres://kedai:hunter2@db:5432/kedai"),
            ("stripe.webhook_secret", "whsec_supersecret"),
        ])
        .expect("valid");
        let printed = settings.redacted().expect("prints");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("supersecret"), "{printed}");
        assert!(
            printed.contains("webhook_secret = \"<redacted>\""),
            "{printed}"
        );
        assert!(printed.contains("[database]"), "{printed}");
        // Debug output of the settings never shows secret values either.
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("supersecret"));
    }
}
