//! Operational alerts (the `alerts` module's rules).
//!
//! - `alerts`: one row per time a rule fired: what it said (severity,
//!   title, text, link to the admin page that shows the problem), when it
//!   opened, when a replica last saw it firing, and when it resolved.
//! - The partial unique index on `rule` where `resolved_at IS NULL` is what
//!   makes "one open alert per rule" hold across replicas: two replicas
//!   that evaluate at once both try to insert, one wins, and only the
//!   winner sends the notice. SQLite and PostgreSQL both have partial
//!   indexes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Alerts {
    Table,
    Id,
    Rule,
    Severity,
    Title,
    Text,
    Link,
    OpenedAt,
    OpenedBy,
    LastSeenAt,
    ResolvedAt,
    ResolvedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alerts::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Alerts::Id))
                    .col(string_len(Alerts::Rule, 64))
                    .col(string_len(Alerts::Severity, 16))
                    .col(string_len(Alerts::Title, 255))
                    .col(text(Alerts::Text))
                    .col(string_len_null(Alerts::Link, 1024))
                    .col(timestamp_with_time_zone(Alerts::OpenedAt))
                    .col(string_len(Alerts::OpenedBy, 64))
                    .col(timestamp_with_time_zone(Alerts::LastSeenAt))
                    .col(timestamp_with_time_zone_null(Alerts::ResolvedAt))
                    .col(string_len_null(Alerts::ResolvedBy, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_alerts_open_rule")
                    .table(Alerts::Table)
                    .col(Alerts::Rule)
                    .unique()
                    .and_where(Expr::col(Alerts::ResolvedAt).is_null())
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alerts_opened")
                    .table(Alerts::Table)
                    .col(Alerts::OpenedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alerts::Table).if_exists().to_owned())
            .await
    }
}
