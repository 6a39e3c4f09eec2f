//! Full-text search over products: an FTS5 table kept in step by triggers on
//! SQLite, a generated `tsvector` column with a GIN index on PostgreSQL. Both
//! stem English words (Porter) and weight name above tags above description.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE_UP: &[&str] = &[
    "CREATE VIRTUAL TABLE products_fts USING fts5(
        name, tags, description,
        content='products', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2',
        prefix='2 3'
    )",
    "CREATE TRIGGER products_fts_after_insert AFTER INSERT ON products BEGIN
        INSERT INTO products_fts(rowid, name, tags, description)
        VALUES (new.id, new.name, new.tags, new.description);
    END",
    "CREATE TRIGGER products_fts_after_delete AFTER DELETE ON products BEGIN
        INSERT INTO products_fts(products_fts, rowid, name, tags, description)
        VALUES ('delete', old.id, old.name, old.tags, old.description);
    END",
    "CREATE TRIGGER products_fts_after_update AFTER UPDATE ON products BEGIN
        INSERT INTO products_fts(products_fts, rowid, name, tags, description)
        VALUES ('delete', old.id, old.name, old.tags, old.description);
        INSERT INTO products_fts(rowid, name, tags, description)
        VALUES (new.id, new.name, new.tags, new.description);
    END",
    "INSERT INTO products_fts(products_fts) VALUES ('rebuild')",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS products_fts_after_update",
    "DROP TRIGGER IF EXISTS products_fts_after_delete",
    "DROP TRIGGER IF EXISTS products_fts_after_insert",
    "DROP TABLE IF EXISTS products_fts",
];

const POSTGRES_UP: &[&str] = &[
    "ALTER TABLE products ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(name, '')), 'A') ||
        setweight(to_tsvector('english', coalesce(tags, '')), 'B') ||
        setweight(to_tsvector('english', coalesce(description, '')), 'C')
    ) STORED",
    "CREATE INDEX products_search_vector_idx ON products USING GIN (search_vector)",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS products_search_vector_idx",
    "ALTER TABLE products DROP COLUMN IF EXISTS search_vector",
];

async fn run_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let connection = manager.get_connection();
    for statement in statements {
        connection.execute_unprepared(statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => run_all(manager, SQLITE_UP).await,
            DbBackend::Postgres => run_all(manager, POSTGRES_UP).await,
            other => Err(DbErr::Migration(format!("unsupported backend {other:?}"))),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => run_all(manager, SQLITE_DOWN).await,
            DbBackend::Postgres => run_all(manager, POSTGRES_DOWN).await,
            other => Err(DbErr::Migration(format!("unsupported backend {other:?}"))),
        }
    }
}
