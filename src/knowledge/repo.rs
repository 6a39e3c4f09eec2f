//! The `kb_documents`, `kb_chunks` and `kb_state` tables.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, Value};
use time::OffsetDateTime;

use crate::platform::db::Writer;

/// `kb_documents`' columns, the key first, in `DocumentRow`'s order.
const DOCUMENT_COLUMNS: [&str; 13] = [
    "key",
    "source",
    "fingerprint",
    "title",
    "url",
    "kind",
    "language",
    "tags",
    "product_id",
    "status",
    "error",
    "chunks",
    "ingested_at",
];

/// A document as last ingested.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult, serde::Serialize)]
pub struct DocumentRow {
    pub key: String,
    pub source: String,
    pub fingerprint: String,
    pub title: String,
    pub url: String,
    pub kind: String,
    pub language: String,
    pub tags: String,
    pub product_id: Option<i64>,
    pub status: String,
    pub error: Option<String>,
    pub chunks: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub ingested_at: OffsetDateTime,
}

/// A passage to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub id: String,
    pub ordinal: i32,
    pub section: String,
    pub text: String,
    pub tokens: i32,
    pub embedding: Vec<f32>,
}

/// A stored passage with its document's metadata.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ChunkRow {
    pub id: String,
    pub document: String,
    pub ordinal: i32,
    pub section: String,
    pub text: String,
    pub title: String,
    pub url: String,
    pub kind: String,
    pub language: String,
    pub tags: String,
    pub product_id: Option<i64>,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct EmbeddingRow {
    pub id: String,
    pub document: String,
    pub embedding: Option<Vec<u8>>,
}

pub fn encode(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn decode(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub async fn generation(db: &DatabaseConnection) -> Result<i64, DbErr> {
    #[derive(FromQueryResult)]
    struct Row {
        generation: i64,
    }
    let query = Query::select()
        .column(Alias::new("generation"))
        .from(Alias::new("kb_state"))
        .and_where(Expr::col(Alias::new("id")).eq(1))
        .to_owned();
    Ok(
        Row::find_by_statement(db.get_database_backend().build(&query))
            .one(db)
            .await?
            .map_or(0, |r| r.generation),
    )
}

async fn bump(txn: &impl ConnectionTrait) -> Result<(), DbErr> {
    let update = Query::update()
        .table(Alias::new("kb_state"))
        .value(
            Alias::new("generation"),
            Expr::col(Alias::new("generation")).add(1),
        )
        .and_where(Expr::col(Alias::new("id")).eq(1))
        .to_owned();
    txn.execute(&update).await?;
    Ok(())
}

pub async fn documents(db: &DatabaseConnection) -> Result<Vec<DocumentRow>, DbErr> {
    let query = Query::select()
        .columns(DOCUMENT_COLUMNS.map(Alias::new))
        .from(Alias::new("kb_documents"))
        .order_by(Alias::new("key"), sea_orm::Order::Asc)
        .to_owned();
    DocumentRow::find_by_statement(db.get_database_backend().build(&query))
        .all(db)
        .await
}

/// Replaces a document and its passages in one transaction.
pub async fn replace_document(
    writer: &Writer,
    document: &DocumentRow,
    space: &str,
    chunks: &[NewChunk],
) -> Result<(), DbErr> {
    let (txn, _permit) = writer.begin().await?;
    delete_rows(&txn, &document.key).await?;
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new("kb_documents"))
        .columns(DOCUMENT_COLUMNS.map(Alias::new));
    insert.values_panic([
        document.key.clone().into(),
        document.source.clone().into(),
        document.fingerprint.clone().into(),
        document.title.clone().into(),
        document.url.clone().into(),
        document.kind.clone().into(),
        document.language.clone().into(),
        document.tags.clone().into(),
        document.product_id.into(),
        document.status.clone().into(),
        document.error.clone().into(),
        document.chunks.into(),
        document.ingested_at.into(),
    ]);
    // Two replicas may ingest the same change at once: the later one wins
    // the row, and identical passages (same id, same text) are kept once.
    insert.on_conflict(
        OnConflict::column(Alias::new("key"))
            .update_columns(DOCUMENT_COLUMNS[1..].iter().copied().map(Alias::new))
            .to_owned(),
    );
    txn.execute(&insert).await?;
    // A few hundred rows per statement keeps PostgreSQL's bind limit far away.
    for batch in chunks.chunks(200) {
        let mut insert = Query::insert();
        insert.into_table(Alias::new("kb_chunks")).columns(
            [
                "id",
                "document",
                "ordinal",
                "section",
                "text",
                "tokens",
                "space",
                "embedding",
            ]
            .map(Alias::new),
        );
        for chunk in batch {
            insert.values_panic([
                chunk.id.clone().into(),
                document.key.clone().into(),
                chunk.ordinal.into(),
                chunk.section.clone().into(),
                chunk.text.clone().into(),
                chunk.tokens.into(),
                space.into(),
                Value::Bytes(Some(encode(&chunk.embedding))).into(),
            ]);
        }
        insert.on_conflict(OnConflict::column(Alias::new("id")).do_nothing().to_owned());
        txn.execute(&insert).await?;
    }
    bump(&txn).await?;
    txn.commit().await
}

async fn delete_rows(txn: &impl ConnectionTrait, key: &str) -> Result<(), DbErr> {
    for (table, column) in [("kb_chunks", "document"), ("kb_documents", "key")] {
        let delete = Query::delete()
            .from_table(Alias::new(table))
            .and_where(Expr::col(Alias::new(column)).eq(key))
            .to_owned();
        txn.execute(&delete).await?;
    }
    Ok(())
}

/// Forgets documents that are gone from their source.
pub async fn delete_documents(writer: &Writer, keys: &[String]) -> Result<(), DbErr> {
    if keys.is_empty() {
        return Ok(());
    }
    let (txn, _permit) = writer.begin().await?;
    for key in keys {
        delete_rows(&txn, key).await?;
    }
    bump(&txn).await?;
    txn.commit().await
}

/// Every passage with its document's metadata (no vectors).
pub async fn chunks(db: &DatabaseConnection) -> Result<Vec<ChunkRow>, DbErr> {
    let sql = "SELECT c.id, c.document, c.ordinal, c.section, c.text, d.title, d.url, d.kind, \
               d.language, d.tags, d.product_id \
               FROM kb_chunks c JOIN kb_documents d ON d.key = c.document \
               ORDER BY c.document, c.ordinal";
    ChunkRow::find_by_statement(sea_orm::Statement::from_string(
        db.get_database_backend(),
        sql,
    ))
    .all(db)
    .await
}

/// The vectors of these documents' passages in `space`.
pub async fn embeddings(
    db: &DatabaseConnection,
    space: &str,
    documents: &[String],
) -> Result<Vec<EmbeddingRow>, DbErr> {
    let mut out = Vec::new();
    for batch in documents.chunks(200) {
        let query = Query::select()
            .columns(["id", "document", "embedding"].map(Alias::new))
            .from(Alias::new("kb_chunks"))
            .and_where(Expr::col(Alias::new("space")).eq(space))
            .and_where(Expr::col(Alias::new("document")).is_in(batch.iter().cloned()))
            .to_owned();
        out.extend(
            EmbeddingRow::find_by_statement(db.get_database_backend().build(&query))
                .all(db)
                .await?,
        );
    }
    Ok(out)
}

/// Documents with passages embedded in another vector space (the
/// embedder changed): they are processed again, never mixed.
pub async fn stale_documents(
    db: &DatabaseConnection,
    space: &str,
) -> Result<std::collections::HashSet<String>, DbErr> {
    #[derive(FromQueryResult)]
    struct Row {
        document: String,
    }
    let query = Query::select()
        .distinct()
        .column(Alias::new("document"))
        .from(Alias::new("kb_chunks"))
        .and_where(Expr::col(Alias::new("space")).ne(space))
        .to_owned();
    Ok(
        Row::find_by_statement(db.get_database_backend().build(&query))
            .all(db)
            .await?
            .into_iter()
            .map(|r| r.document)
            .collect(),
    )
}

/// Passages stored per vector space, for the status report.
pub async fn spaces(db: &DatabaseConnection) -> Result<Vec<(String, i64)>, DbErr> {
    #[derive(FromQueryResult)]
    struct Row {
        space: String,
        passages: i64,
    }
    let sql = "SELECT space, COUNT(*) AS passages FROM kb_chunks GROUP BY space ORDER BY space";
    Ok(Row::find_by_statement(sea_orm::Statement::from_string(
        db.get_database_backend(),
        sql,
    ))
    .all(db)
    .await?
    .into_iter()
    .map(|r| (r.space, r.passages))
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_bytes() {
        let v = vec![0.25_f32, -1.5, 3.0e-7, f32::MAX];
        assert_eq!(decode(&encode(&v)), v);
        assert_eq!(encode(&v).len(), 16);
    }
}
