//! The relational database: SQLite (embedded default) or PostgreSQL, both
//! through sea-orm.
//!
//! SQLite needs three settings to behave under a concurrent web server: WAL
//! journalling so readers never block the writer, a `busy_timeout` so a
//! second writer waits for the lock instead of failing at once, and
//! `foreign_keys` (off by default in SQLite). They are set on every pooled
//! connection here, not left to the URL.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kedai_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, Statement, TransactionTrait,
};
use secrecy::ExposeSecret;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::{DatabaseKind, DatabaseSettings};

/// Opens the pool described by the settings, creating the SQLite file's
/// folder when needed.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let url = settings.url.expose_secret().to_string();
    if settings.kind == DatabaseKind::Sqlite {
        ensure_sqlite_folder(&url)?;
    }
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let busy_timeout = settings.sqlite_busy_timeout;
    options.map_sqlx_sqlite_opts(move |opts: SqliteConnectOptions| {
        opts.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
            .foreign_keys(true)
            .create_if_missing(true)
    });
    Database::connect(options)
        .await
        .with_context(|| format!("could not connect to the {:?} database", settings.kind))
}

/// Key of the PostgreSQL advisory lock that serialises migrations, so
/// replicas starting together do not race to create the same tables.
const MIGRATION_LOCK: i64 = 0x6b65_6461_6901;

/// Applies every pending migration. On PostgreSQL the whole run holds an
/// advisory lock inside one transaction (DDL is transactional there): a
/// second replica waits, then finds nothing left to do.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    if db.get_database_backend() == DbBackend::Postgres {
        let txn = db.begin().await?;
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            .await
            .context("could not take the migration lock")?;
        Migrator::up(&txn, None)
            .await
            .context("database migration failed")?;
        txn.commit()
            .await
            .context("could not commit the migrations")?;
        return Ok(());
    }
    Migrator::up(db, None)
        .await
        .context("database migration failed")
}

/// Fails unless the database answers a trivial query; used by `/readyz`.
pub async fn ping(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT 1",
    ))
    .await
    .context("database did not answer")?;
    Ok(())
}

/// The way into write transactions. SQLite allows one writer at a time and
/// makes the others poll with growing sleeps (its busy handler), which
/// turns contention into long latency tails; so on SQLite writers queue
/// fairly on an in-process semaphore first and the database lock is never
/// contended within a process. PostgreSQL needs no gate: row locks and the
/// pool bound do that job.
///
/// The writer also carries the outbox signal: a transaction that wrote an
/// outbox event calls [`Writer::outbox_committed`] after its commit, which
/// wakes this process's event dispatcher at once instead of at its next poll.
#[derive(Clone)]
pub struct Writer {
    pub db: DatabaseConnection,
    gate: Option<Arc<Semaphore>>,
    outbox: Arc<Notify>,
}

impl Writer {
    pub fn new(db: DatabaseConnection) -> Self {
        let gate =
            (db.get_database_backend() == DbBackend::Sqlite).then(|| Arc::new(Semaphore::new(1)));
        Writer {
            db,
            gate,
            outbox: Arc::new(Notify::new()),
        }
    }

    /// Says that a committed transaction wrote outbox events.
    pub fn outbox_committed(&self) {
        self.outbox.notify_one();
    }

    /// What the dispatcher waits on between polls.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox.clone()
    }

    /// Waits for this process's turn to write (immediately on PostgreSQL).
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        match &self.gate {
            // The semaphore is never closed, so acquiring cannot fail.
            Some(gate) => gate.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    /// Begins a write transaction; keep the permit until it commits.
    pub async fn begin(
        &self,
    ) -> Result<(DatabaseTransaction, Option<OwnedSemaphorePermit>), DbErr> {
        let permit = self.permit().await;
        let txn = self.db.begin().await?;
        Ok((txn, permit))
    }
}

/// Connection pool figures for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

pub fn pool_stats(db: &DatabaseConnection, max: u32) -> PoolStats {
    let (size, idle) = match db.get_database_backend() {
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle() as u32)
        }
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle() as u32)
        }
        _ => (0, 0),
    };
    PoolStats { size, idle, max }
}

fn ensure_sqlite_folder(url: &str) -> anyhow::Result<()> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(());
    }
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| "database.url is not a valid SQLite URL".to_string())?;
    let file = options.get_filename();
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create the folder {}", display(parent)))?;
    }
    Ok(())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
