//! The stock ledger: one row for every change to a variant's units on hand,
//! with the reason, so stock can be explained afterwards ("why do we have
//! 3 when we counted 5?").
//!
//! - `delta`: the change to `variants.stock_on_hand` (negative when units
//!   left the shelf); `stock_after`: units on hand right after it.
//! - `reason`: `opening`, `received`, `count_correction`, `damaged`,
//!   `returned`, `other` (written by admins), or `sale` / `restock`
//!   (written by the orders' own transactions).
//! - `admin_email` is set for an admin's change, `order_id` for an order's.
//!
//! Rows are written in the same transaction as the stock change and never
//! updated; `sku` is copied so the history reads on its own.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StockLedger {
    Table,
    Id,
    VariantId,
    Sku,
    Delta,
    StockAfter,
    Reason,
    Note,
    AdminEmail,
    OrderId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Variants {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StockLedger::Table)
                    .if_not_exists()
                    .col(big_pk_auto(StockLedger::Id))
                    .col(big_integer(StockLedger::VariantId))
                    .col(string_len(StockLedger::Sku, 64))
                    .col(integer(StockLedger::Delta))
                    .col(integer(StockLedger::StockAfter))
                    .col(string_len(StockLedger::Reason, 32))
                    .col(string_len(StockLedger::Note, 500).default(""))
                    .col(string_len_null(StockLedger::AdminEmail, 254))
                    .col(big_integer_null(StockLedger::OrderId))
                    .col(timestamp_with_time_zone(StockLedger::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_stock_ledger_variant")
                            .from(StockLedger::Table, StockLedger::VariantId)
                            .to(Variants::Table, Variants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_stock_ledger_variant")
                    .table(StockLedger::Table)
                    .col(StockLedger::VariantId)
                    .col(StockLedger::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(StockLedger::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
