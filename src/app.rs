//! The one place that wires configuration to backends, state, routes and
//! background tasks. Tests build the same `Application` on port 0.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{self, DefaultHeaders};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::analytics::Analytics;
use crate::cart;
use crate::catalog::{self, Catalog};
use crate::checkout::{self, Payments};
use crate::config::{CarrierKind, MessagingKind, Settings};
use crate::events::{Bus, Dispatcher, Handler};
use crate::logistics::Logistics;
use crate::notify::{AccountMessages, Notifications};
use crate::ops;
use crate::platform::cache::{self, Cache};
use crate::platform::carrier::{Carrier, HttpCarrier, ManualCarrier};
use crate::platform::db;
use crate::platform::messaging::{Messaging, RecordedTransport, Transport, TwilioTransport};
use crate::platform::upstream::UpstreamSignals;
use crate::web::assets;
use crate::web::error::{AppError, not_found};
use crate::web::session::Sessions;
use crate::web::visitor::{Csrf, OrderLinks};

/// What every request handler and background task can reach.
#[derive(Clone)]
pub struct AppContext {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    /// Write transactions go through here (queues writers on SQLite).
    pub writer: db::Writer,
    pub catalog: Catalog,
    /// Sessions, rate limits and small caches (in-process or Redis).
    pub cache: Arc<dyn Cache>,
    pub metrics: PrometheusHandle,
    pub payments: Payments,
    pub csrf: Csrf,
    pub sessions: Sessions,
    /// Back-office sessions (their own cookie).
    pub admin_sessions: Sessions,
    pub links: OrderLinks,
    /// WhatsApp out (recorded or Twilio), with its store and routing.
    pub messaging: Messaging,
    /// The auth tokens that sign Twilio's webhooks (current first).
    pub twilio_tokens: Arc<Vec<SecretString>>,
    /// The event handlers and their rules (for replays and the API).
    pub bus: Bus,
    /// This process's event dispatcher (steppable from tests).
    pub dispatcher: Dispatcher,
    /// How this process reaches itself over loopback (the test-mode
    /// payment provider posts its webhook here).
    pub self_url: String,
    /// The knowledge base (hybrid search over documents and products).
    pub knowledge: crate::knowledge::Knowledge,
    /// The chat queue (the database's or SQS).
    pub queue: Arc<dyn crate::platform::queue::Queue>,
    /// The WhatsApp assistant (intake, workers, hand-over).
    pub chat: crate::chat::Assistant,
    /// What this replica observes about itself (rolling windows of HTTP
    /// requests and database statements, vendor throttling).
    pub signals: ops::Signals,
    /// The alert rules' evaluator (steppable: `evaluate_once`).
    pub alerting: crate::alerts::Alerting,
    /// Cancelled when the process starts shutting down.
    pub shutdown: CancellationToken,
}

impl AppContext {
    /// The signed-in customer's id, if the request has a live session.
    pub async fn customer_id(&self, req: &actix_web::HttpRequest) -> Result<Option<i64>, AppError> {
        let session = self.sessions.current(req).await.map_err(|error| {
            AppError::Internal(anyhow::Error::new(error).context("reading the session"))
        })?;
        Ok(session.map(|(_, data)| data.customer_id))
    }

    /// Cookies are marked Secure when shoppers reach us over https.
    pub fn secure_cookies(&self) -> bool {
        self.settings.server.public_url.scheme() == "https"
    }
}

/// `server.secret_key`, or a random one for this process when unset (fine
/// for one process; replicas must share a configured value).
fn server_secret(settings: &Settings) -> secrecy::SecretString {
    if crate::config::is_set(&settings.server.secret_key) {
        return settings.server.secret_key.clone();
    }
    if settings.is_production() {
        tracing::warn!(
            "server.secret_key is not set: CSRF tokens will not work across replicas or restarts"
        );
    }
    secrecy::SecretString::from(format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// The tokens that verify `X-Twilio-Signature`: `twilio.auth_token` and,
/// while it rotates, `twilio.previous_auth_token`. Without a configured
/// token (embedded messaging) the one in `twilio.embedded_token_file` is
/// used, generated on first use; the admin's WhatsApp simulator and
/// `kedai chat send` sign with it.
pub fn twilio_tokens(settings: &Settings) -> Vec<SecretString> {
    let mut tokens = Vec::new();
    if crate::config::is_set(&settings.twilio.auth_token) {
        tokens.push(settings.twilio.auth_token.clone());
    } else {
        tokens.push(embedded_twilio_token(&settings.twilio.embedded_token_file));
    }
    if crate::config::is_set(&settings.twilio.previous_auth_token) {
        tokens.push(settings.twilio.previous_auth_token.clone());
    }
    tokens
}

/// Reads the embedded auth token, or creates it (readable by its owner
/// only). Falls back to a token of this process when the file cannot be
/// written.
fn embedded_twilio_token(path: &std::path::Path) -> SecretString {
    use std::io::Write;
    if let Ok(existing) = std::fs::read_to_string(path)
        && existing.trim().len() >= 32
    {
        return SecretString::from(existing.trim().to_string());
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let written = (|| -> std::io::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(token.as_bytes())
    })();
    match written {
        Ok(()) => SecretString::from(token),
        // Another process created it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            match std::fs::read_to_string(path) {
                Ok(existing) if existing.trim().len() >= 32 => {
                    SecretString::from(existing.trim().to_string())
                }
                _ => SecretString::from(token),
            }
        }
        Err(error) => {
            tracing::warn!(
                error = %error,
                path = %path.display(),
                "could not keep the embedded Twilio token; this process signs with its own"
            );
            SecretString::from(token)
        }
    }
}

/// The messaging service for `messaging.kind` (for the CLI and tools:
/// nobody reads what its transport observes).
pub fn messaging(settings: &Settings, writer: db::Writer) -> anyhow::Result<Messaging> {
    messaging_reporting(settings, writer, &UpstreamSignals::default())
}

/// The messaging service for `messaging.kind`; a vendor's transport
/// reports its throttling and outcomes to `upstreams`.
pub fn messaging_reporting(
    settings: &Settings,
    writer: db::Writer,
    upstreams: &UpstreamSignals,
) -> anyhow::Result<Messaging> {
    let transport: Arc<dyn Transport> = match settings.messaging.kind {
        MessagingKind::Recorded => Arc::new(RecordedTransport),
        MessagingKind::Twilio => Arc::new(
            TwilioTransport::new(
                &settings.twilio.api_base,
                &settings.twilio.account_sid,
                settings.twilio.auth_token.clone(),
                &settings.twilio.from,
                settings.twilio.timeout,
                upstreams.clone(),
            )
            .context("could not set up the Twilio client")?,
        ),
    };
    let callback = crate::notify::routes::status_callback_url(&settings.server.public_url);
    Ok(Messaging::new(
        writer,
        transport,
        settings.notify.clone(),
        Some(callback),
    ))
}

/// The carrier for `carrier.kind`.
pub fn carrier(settings: &Settings) -> anyhow::Result<Arc<dyn Carrier>> {
    Ok(match settings.carrier.kind {
        CarrierKind::Manual => Arc::new(ManualCarrier),
        CarrierKind::Http => Arc::new(
            HttpCarrier::new(
                &settings.carrier.base_url,
                settings.carrier.api_key.clone(),
                settings.carrier.timeout,
            )
            .context("could not set up the carrier client")?,
        ),
    })
}

/// The event bus: account messages, notifications, logistics and analytics,
/// with their rules.
pub fn event_bus(
    settings: &Settings,
    writer: &db::Writer,
    messaging: Messaging,
    carrier: Arc<dyn Carrier>,
    links: OrderLinks,
) -> anyhow::Result<Bus> {
    let offset = settings.shop.offset();
    let handlers: Vec<Arc<dyn Handler>> = vec![
        Arc::new(AccountMessages::new(messaging.clone())),
        Arc::new(Notifications::new(
            messaging,
            links,
            settings.server.public_url.as_str(),
            settings.notify.quiet_window(),
            offset,
        )),
        Arc::new(Logistics::new(writer.clone(), carrier)),
        Arc::new(Analytics::new(writer.clone(), offset)),
    ];
    Bus::new(handlers).context("an event handler's rule is invalid")
}

/// The bus a process of this build runs, built from the settings alone
/// (for the CLI and tools; `Application::build` shares its parts instead).
pub fn standard_bus(settings: &Settings, writer: &db::Writer) -> anyhow::Result<Bus> {
    event_bus(
        settings,
        writer,
        messaging(settings, writer.clone())?,
        carrier(settings)?,
        OrderLinks::new(server_secret(settings)),
    )
}

/// A built, listening application that has not started serving yet.
pub struct Application {
    port: u16,
    server: Server,
    context: AppContext,
    tasks: TaskTracker,
}

impl Application {
    /// Connects, migrates, seeds the demo shop when empty, loads the
    /// catalog, binds the listener and starts background tasks.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = ops::metrics::handle();
        ::metrics::gauge!("kedai_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        warn_about_embedded_backends(&settings);
        warn_about_missing_templates(&settings);

        let signals = ops::Signals::default();
        let mut db = db::connect(&settings.database).await?;
        // Before the connection is cloned: each clone keeps the callback.
        let statements = signals.database.clone();
        db.set_metric_callback(move |info| statements.record(info.elapsed, info.failed));
        if settings.database.migrate_on_start {
            db::migrate(&db).await?;
        }
        if settings.database.seed_demo_on_empty {
            let seeded = Catalog::seed_demo_if_empty(&db).await?;
            if seeded > 0 {
                tracing::info!(products = seeded, "seeded the demo catalog");
            }
        }
        let catalog = Catalog::load(db.clone(), settings.catalog.clone()).await?;

        let listener = TcpListener::bind(settings.server.bind).with_context(|| {
            format!("could not listen on server.bind = {}", settings.server.bind)
        })?;
        let port = listener.local_addr()?.port();
        let self_ip = match listener.local_addr()?.ip() {
            ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        let self_url = format!("http://{}", std::net::SocketAddr::new(self_ip, port));
        let secret = server_secret(&settings);

        let cache = cache::from_settings(&settings.redis)
            .context("could not set up the cache (redis.*)")?;
        let writer = db::Writer::new(db.clone());
        let links = OrderLinks::new(secret.clone());
        let messaging = messaging_reporting(&settings, writer.clone(), &signals.upstreams)?;
        let bus = event_bus(
            &settings,
            &writer,
            messaging.clone(),
            carrier(&settings)?,
            links.clone(),
        )?;
        let dispatcher = Dispatcher::new(writer.clone(), bus.clone(), settings.events.clone());
        let knowledge = crate::knowledge::Knowledge::from_settings(
            &settings,
            db.clone(),
            writer.clone(),
            Some(catalog.clone()),
            &signals.upstreams,
        )
        .await
        .context("could not set up the knowledge base")?;
        let queue = crate::platform::queue::from_settings(&settings, &writer)
            .await
            .context("could not set up the chat queue (queue.*)")?;
        let settings = Arc::new(settings);
        let llm = crate::chat::llm_from_settings(&settings, &signals.upstreams)
            .await
            .context("could not set up the chat model (llm.*)")?;
        let chat = crate::chat::Assistant::new(
            settings.clone(),
            writer.clone(),
            queue.clone(),
            knowledge.clone(),
            messaging.clone(),
            llm,
        );
        let shutdown = CancellationToken::new();
        let sink = crate::platform::alerts::from_settings(&settings, &shutdown)
            .context("could not set up the alert sink (alerts.*, lark.*)")?;
        let alerting = crate::alerts::Alerting::new(crate::alerts::AlertingParts {
            writer: writer.clone(),
            cache: cache.clone(),
            queue: queue.clone(),
            signals: signals.clone(),
            sink,
            settings: settings.clone(),
            shutdown: shutdown.clone(),
        });
        let context = AppContext {
            signals,
            alerting,
            knowledge,
            queue,
            chat,
            sessions: Sessions::new(cache.clone(), settings.server.session_ttl),
            admin_sessions: Sessions::for_admins(cache.clone(), settings.server.session_ttl),
            cache,
            writer,
            messaging,
            twilio_tokens: Arc::new(twilio_tokens(&settings)),
            bus,
            dispatcher,
            db,
            catalog,
            metrics,
            payments: Payments::from_settings(&settings).context("could not set up payments")?,
            csrf: Csrf::new(secret),
            links,
            self_url,
            shutdown,
            settings,
        };
        announce_admin_setup(&context).await;
        let tasks = TaskTracker::new();
        tasks.spawn(
            context
                .catalog
                .clone()
                .run_refresh_loop(context.shutdown.clone()),
        );
        tasks.spawn(checkout::run_reservation_sweeper(
            context.writer.clone(),
            context.settings.payments.sweep_interval,
            context.shutdown.clone(),
        ));
        if context.settings.events.enabled {
            tasks.spawn(context.dispatcher.clone().run(context.shutdown.clone()));
        }
        if context.settings.chat.enabled {
            tasks.spawn(context.chat.clone().run(context.shutdown.clone()));
        }
        if context.settings.alerts.enabled {
            tasks.spawn(context.alerting.clone().run(context.shutdown.clone()));
        }
        // Loads, seeds (demo) and ingests in the background: the shop is
        // ready before the knowledge base is.
        tasks.spawn(context.knowledge.clone().run(
            context.settings.database.seed_demo_on_empty,
            context.shutdown.clone(),
        ));

        let server = http_server(listener, context.clone())?;
        tracing::info!(
            port,
            public_url = %context.settings.server.public_url,
            database = ?context.settings.database.kind,
            "kedai is listening"
        );
        Ok(Application {
            port,
            server,
            context,
            tasks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn context(&self) -> &AppContext {
        &self.context
    }

    /// Serves until `signal` completes, then shuts down gracefully: readiness
    /// fails, no new connections are accepted, in-flight requests and
    /// background steps finish within `server.shutdown_grace`.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            server,
            context,
            tasks,
            ..
        } = self;
        let handle = server.handle();
        let mut serving = tokio::spawn(server);
        tokio::select! {
            result = &mut serving => {
                context.shutdown.cancel();
                return result.context("the server task failed")?.context("the server failed");
            }
            _ = signal => {}
        }
        let grace = context.settings.server.shutdown_grace;
        tracing::info!(grace_secs = grace.as_secs(), "shutting down");
        context.shutdown.cancel();
        handle.stop(true).await;
        let _ = serving.await;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("background tasks did not finish within the grace period");
        }
        if let Err(error) = context.db.clone().close().await {
            tracing::warn!(error = %error, "closing the database pool failed");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn http_server(listener: TcpListener, context: AppContext) -> anyhow::Result<Server> {
    let settings = context.settings.clone();
    let window = context.signals.http.clone();
    let data = web::Data::new(context);
    let access_log = settings.server.access_log;
    let max_body = settings.server.max_body_bytes;
    let https = settings.server.public_url.scheme() == "https";
    let mut server = HttpServer::new(move || {
        let window = window.clone();
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(
                web::FormConfig::default()
                    .limit(max_body)
                    .error_handler(|error, _| {
                        AppError::BadRequest(format!("The form could not be read: {error}")).into()
                    }),
            )
            .app_data(web::JsonConfig::default().limit(max_body))
            .app_data(web::QueryConfig::default().error_handler(|error, _| {
                AppError::BadRequest(format!("The address has an invalid parameter: {error}"))
                    .into()
            }))
            .app_data(web::PathConfig::default().error_handler(|_, _| AppError::NotFound.into()))
            .wrap(middleware::Compress::default())
            .wrap(security_headers(https))
            .wrap(middleware::from_fn(move |req, next| {
                ops::middleware::observe(access_log, window.clone(), req, next)
            }))
            .configure(ops::configure)
            .configure(catalog::routes::configure)
            .configure(checkout::webhook::configure)
            .configure(crate::notify::routes::configure)
            .configure(crate::chat::webhook::configure)
            .configure(crate::logistics::routes::configure)
            // Before the events API: its `/api/ops` scope would swallow `/api/ops/kb`.
            .configure(crate::knowledge::routes::configure)
            .configure(crate::chat::routes::configure)
            .configure(crate::events::routes::configure)
            .configure(cart::routes::configure)
            .configure(checkout::routes::configure)
            .configure(crate::customers::routes::configure)
            .configure(crate::admin::routes::configure)
            .route("/static/{path:.*}", web::get().to(assets::serve_static))
            .default_service(web::to(not_found))
    })
    .shutdown_timeout(settings.server.shutdown_grace.as_secs().max(1))
    .disable_signals();
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    Ok(server.listen(listener)?.run())
}

/// Headers on every response. The CSP allows no inline script or style.
fn security_headers(https: bool) -> DefaultHeaders {
    let mut headers = DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "strict-origin-when-cross-origin"))
        .add((
            "Permissions-Policy",
            "camera=(), microphone=(), geolocation=()",
        ))
        .add((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
        ));
    if https {
        headers = headers.add((
            "Strict-Transport-Security",
            "max-age=31536000; includeSubDomains",
        ));
    }
    headers
}

/// An embedded install without admins prints a one-time link that creates
/// the first owner (production: `kedai admin create`).
async fn announce_admin_setup(context: &AppContext) {
    if context.settings.is_production() {
        return;
    }
    match crate::admin::issue_setup_token(&context.writer).await {
        Ok(Some(token)) => {
            let base = context
                .settings
                .server
                .public_url
                .as_str()
                .trim_end_matches('/');
            tracing::info!(
                setup_link = %format!("{base}/admin/setup/{token}"),
                "no admin account yet: open this one-time link to create the shop's owner (or run `kedai admin create`)"
            );
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(error = %error, "could not issue the admin setup link"),
    }
}

/// Twilio refuses free text outside WhatsApp's 24-hour window; without
/// templates those notifications become dead letters.
fn warn_about_missing_templates(settings: &Settings) {
    if settings.messaging.kind != MessagingKind::Twilio {
        return;
    }
    let missing: Vec<&str> = crate::config::NOTIFICATION_KINDS
        .into_iter()
        .filter(|kind| settings.notify.template_for(kind).is_none())
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            missing = missing.join(", "),
            "notify.template_* is empty for these messages: outside the 24-hour window they cannot be sent"
        );
    }
}

fn warn_about_embedded_backends(settings: &Settings) {
    let embedded = settings.embedded_backends();
    if settings.is_production() && !embedded.is_empty() {
        tracing::warn!(
            embedded = embedded.join(", "),
            "PRODUCTION PROFILE IS USING EMBEDDED BACKENDS: these do not scale across replicas"
        );
    } else if !embedded.is_empty() {
        tracing::info!(embedded = embedded.join(", "), "using embedded backends");
    }
}
