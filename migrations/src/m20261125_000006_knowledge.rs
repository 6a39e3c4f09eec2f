//! The knowledge base's passages, shared by every replica.
//!
//! - `kb_documents`: one row per source document (a file in the document
//!   store, or a catalog product), with the fingerprint it was ingested at
//!   (the store's ETag/version, or a content hash), its metadata and the
//!   outcome (`indexed`, `no_text`, `failed`, `unsupported`). Only documents
//!   whose fingerprint changed are processed again.
//! - `kb_chunks`: the passages, with their embedding (little-endian f32)
//!   and the vector space it belongs to, so each replica rebuilds its
//!   in-process index from here instead of embedding again.
//! - `kb_state`: one row whose `generation` grows with every change, which
//!   replicas poll to know when to reload.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KbDocuments {
    Table,
    Key,
    Source,
    Fingerprint,
    Title,
    Url,
    Kind,
    Language,
    Tags,
    ProductId,
    Status,
    Error,
    Chunks,
    IngestedAt,
}

#[derive(DeriveIden)]
enum KbChunks {
    Table,
    Id,
    Document,
    Ordinal,
    Section,
    Text,
    Tokens,
    Space,
    Embedding,
}

#[derive(DeriveIden)]
enum KbState {
    Table,
    Id,
    Generation,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KbDocuments::Table)
                    .if_not_exists()
                    .col(string_len(KbDocuments::Key, 512).primary_key())
                    .col(string_len(KbDocuments::Source, 16))
                    .col(string_len(KbDocuments::Fingerprint, 128))
                    .col(text(KbDocuments::Title))
                    .col(text(KbDocuments::Url))
                    .col(string_len(KbDocuments::Kind, 32))
                    .col(string_len(KbDocuments::Language, 16))
                    .col(text(KbDocuments::Tags))
                    .col(big_integer_null(KbDocuments::ProductId))
                    .col(string_len(KbDocuments::Status, 16))
                    .col(text_null(KbDocuments::Error))
                    .col(integer(KbDocuments::Chunks).default(0))
                    .col(timestamp_with_time_zone(KbDocuments::IngestedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KbChunks::Table)
                    .if_not_exists()
                    .col(string_len(KbChunks::Id, 600).primary_key())
                    .col(string_len(KbChunks::Document, 512))
                    .col(integer(KbChunks::Ordinal))
                    .col(text(KbChunks::Section))
                    .col(text(KbChunks::Text))
                    .col(integer(KbChunks::Tokens))
                    .col(string_len(KbChunks::Space, 128))
                    .col(blob_null(KbChunks::Embedding))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_kb_chunks_document")
                    .table(KbChunks::Table)
                    .col(KbChunks::Document)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KbState::Table)
                    .if_not_exists()
                    .col(integer(KbState::Id).primary_key())
                    .col(big_integer(KbState::Generation).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("INSERT INTO kb_state (id, generation) VALUES (1, 0)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            KbState::Table.into_iden(),
            KbChunks::Table.into_iden(),
            KbDocuments::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
