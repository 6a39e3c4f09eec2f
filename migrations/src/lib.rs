//! Kedai's schema, as sea-orm migrations that run unchanged on SQLite and
//! PostgreSQL. Each later capability adds its own migration file here; a
//! migration that has shipped is never edited, only followed by a new one.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_create_shop;
mod m20261124_000002_product_search;
mod m20261124_000003_variant_stock_stamp;
mod m20261124_000004_messages_and_password_resets;
mod m20261124_000005_event_delivery;
mod m20261125_000006_knowledge;
mod m20261125_000007_chat_queue;
mod m20261125_000008_conversations;
mod m20261125_000009_admin;
mod m20261203_000010_phone_verification;
mod m20261203_000011_stock_ledger;
mod m20261203_000012_alerts;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_shop::Migration),
            Box::new(m20261124_000002_product_search::Migration),
            Box::new(m20261124_000003_variant_stock_stamp::Migration),
            Box::new(m20261124_000004_messages_and_password_resets::Migration),
            Box::new(m20261124_000005_event_delivery::Migration),
            Box::new(m20261125_000006_knowledge::Migration),
            Box::new(m20261125_000007_chat_queue::Migration),
            Box::new(m20261125_000008_conversations::Migration),
            Box::new(m20261125_000009_admin::Migration),
            Box::new(m20261203_000010_phone_verification::Migration),
            Box::new(m20261203_000011_stock_ledger::Migration),
            Box::new(m20261203_000012_alerts::Migration),
        ]
    }
}
