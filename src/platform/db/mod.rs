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
use futures_util::TryStreamExt;
use kedai_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{Either, Executor, Sqlite};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, QueryResult, Statement, TransactionTrait,
};
use sea_query_sqlx::SqlxValues;
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
            // Rows travel from SQLite's thread in a bounded channel; a
            // batch's RETURNING rows (up to 256) fit without the thread
            // waiting for the reader.
            .row_buffer_size(ROW_BUFFER_SIZE)
    });
    Database::connect(options)
        .await
        .with_context(|| format!("could not connect to the {:?} database", settings.kind))
}

/// Rows SQLite's thread may hand over before the reader takes them.
const ROW_BUFFER_SIZE: usize = 512;

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

    /// Begins a [`Batch`]: a write transaction for a hot path that sends
    /// its statements in as few trips to the database as it can.
    pub async fn batch(&self) -> Result<Batch, DbErr> {
        let permit = self.permit().await;
        let connection = match self.db.get_database_backend() {
            DbBackend::Sqlite => BatchConnection::Sqlite(SqliteBatch {
                connection: self
                    .db
                    .get_sqlite_connection_pool()
                    .acquire()
                    .await
                    .map_err(|error| DbErr::Conn(sqlx_error(error)))?,
                open: false,
            }),
            _ => BatchConnection::Other(self.db.begin().await?),
        };
        Ok(Batch {
            connection,
            _permit: permit,
        })
    }
}

/// A write transaction whose statements go to the database a group at a
/// time: [`Batch::run`] sends a group and returns each statement's rows,
/// [`Batch::commit`] sends the last group together with the commit.
///
/// On SQLite every call into sqlx is a hand-off to the connection's own
/// thread and back, and `BEGIN` and `COMMIT` are two hand-offs each; on a
/// busy machine every hand-off waits to be scheduled. A batch therefore
/// sends `BEGIN IMMEDIATE` with its first group, `COMMIT` with its last,
/// and each group as one multi-statement call: one hand-off per group.
/// (sqlx's SQLite driver binds `?` parameters across the statements of one
/// call in order, a behaviour it calls deprecated; `tests/api/db.rs` checks
/// it.) Elsewhere it is an ordinary transaction that runs the statements
/// one by one.
///
/// Dropped without a commit, it rolls back; on SQLite a connection that
/// may still hold an open transaction is closed rather than pooled.
pub struct Batch {
    connection: BatchConnection,
    _permit: Option<OwnedSemaphorePermit>,
}

enum BatchConnection {
    Sqlite(SqliteBatch),
    Other(DatabaseTransaction),
}

struct SqliteBatch {
    connection: PoolConnection<Sqlite>,
    /// `BEGIN` was sent and neither `COMMIT` nor `ROLLBACK` finished.
    open: bool,
}

impl Batch {
    /// Runs the statements in order inside the transaction; returns the
    /// rows each one returned.
    pub async fn run(&mut self, statements: &[Statement]) -> Result<Vec<Vec<QueryResult>>, DbErr> {
        self.send(statements, false).await
    }

    /// Runs the statements, then commits; returns the rows each returned.
    pub async fn commit(
        mut self,
        statements: &[Statement],
    ) -> Result<Vec<Vec<QueryResult>>, DbErr> {
        let rows = self.send(statements, true).await?;
        if let BatchConnection::Other(txn) = self.connection {
            txn.commit().await?;
        }
        Ok(rows)
    }

    async fn send(
        &mut self,
        statements: &[Statement],
        commit: bool,
    ) -> Result<Vec<Vec<QueryResult>>, DbErr> {
        match &mut self.connection {
            BatchConnection::Sqlite(batch) => {
                let begin = !batch.open;
                batch.open = true;
                let result = run_sqlite(&mut batch.connection, statements, begin, commit).await;
                match result {
                    Ok(rows) => {
                        batch.open = !commit;
                        Ok(rows)
                    }
                    Err(error) => {
                        if (&mut *batch.connection).execute("ROLLBACK").await.is_ok() {
                            batch.open = false;
                        }
                        Err(error)
                    }
                }
            }
            BatchConnection::Other(txn) => {
                let mut rows = Vec::with_capacity(statements.len());
                for statement in statements {
                    rows.push(txn.query_all_raw(statement.clone()).await?);
                }
                Ok(rows)
            }
        }
    }
}

impl Drop for SqliteBatch {
    fn drop(&mut self) {
        if self.open {
            // Not committed and not known to be rolled back: closing the
            // connection ends its transaction; pooling it would not.
            self.connection.close_on_drop();
        }
    }
}

/// One multi-statement call: `BEGIN IMMEDIATE` first when `begin`, the
/// statements, `COMMIT` last when `commit`. Splits the rows by statement:
/// SQLite reports the end of every statement, rows or none.
async fn run_sqlite(
    connection: &mut PoolConnection<Sqlite>,
    statements: &[Statement],
    begin: bool,
    commit: bool,
) -> Result<Vec<Vec<QueryResult>>, DbErr> {
    let mut sql = String::new();
    let mut values = Vec::new();
    if begin {
        sql.push_str("BEGIN IMMEDIATE;\n");
    }
    for statement in statements {
        sql.push_str(&statement.sql);
        sql.push_str(";\n");
        if let Some(bound) = &statement.values {
            values.extend(bound.0.iter().cloned());
        }
    }
    if commit {
        sql.push_str("COMMIT;\n");
    }
    let query = sea_orm::sqlx::query_with(
        sea_orm::sqlx::AssertSqlSafe(sql),
        SqlxValues(sea_orm::sea_query::Values(values)),
    );
    let mut stream = (&mut **connection).fetch_many(query);
    let mut ends = 0usize;
    let skip = usize::from(begin);
    let mut rows: Vec<Vec<QueryResult>> = statements.iter().map(|_| Vec::new()).collect();
    while let Some(step) = stream
        .try_next()
        .await
        .map_err(|error| DbErr::Query(sqlx_error(error)))?
    {
        match step {
            Either::Left(_) => ends += 1,
            Either::Right(row) => {
                let Some(slot) = ends.checked_sub(skip).and_then(|i| rows.get_mut(i)) else {
                    return Err(DbErr::Custom(format!(
                        "a row came back outside the batch's statements (after {ends} ends)"
                    )));
                };
                slot.push(row.into());
            }
        }
    }
    let expected = skip + statements.len() + usize::from(commit);
    if ends != expected {
        return Err(DbErr::Custom(format!(
            "the batch ran {ends} of its {expected} statements"
        )));
    }
    Ok(rows)
}

fn sqlx_error(error: sea_orm::sqlx::Error) -> sea_orm::RuntimeErr {
    sea_orm::RuntimeErr::SqlxError(Arc::new(error))
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
