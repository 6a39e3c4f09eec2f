//! Verified WhatsApp numbers on customer accounts.
//!
//! The WhatsApp assistant tells a shopper about an account's orders only
//! when the account's number is proven to be theirs: the account page makes
//! a short code, and the shopper sends it from WhatsApp. Twilio vouches for
//! the sender, so a matching code proves the number.
//!
//! - `customers.phone_verified_at`: when the current number was proven;
//!   cleared whenever the number changes.
//! - `customers.phone_code_hash`, `phone_code_expires_at`,
//!   `phone_code_attempts`: the pending code (SHA-256, never the code), its
//!   expiry, and wrong tries against it (too many and it is void).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Customers {
    Table,
    PhoneVerifiedAt,
    PhoneCodeHash,
    PhoneCodeExpiresAt,
    PhoneCodeAttempts,
}

async fn add_column(manager: &SchemaManager<'_>, column: ColumnDef) -> Result<(), DbErr> {
    // One column per statement: SQLite's ALTER TABLE adds one at a time.
    let mut column = column;
    manager
        .alter_table(
            Table::alter()
                .table(Customers::Table)
                .add_column(&mut column)
                .to_owned(),
        )
        .await
}

async fn drop_column(manager: &SchemaManager<'_>, column: Customers) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(Customers::Table)
                .drop_column(column)
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            manager,
            timestamp_with_time_zone_null(Customers::PhoneVerifiedAt),
        )
        .await?;
        add_column(manager, string_len_null(Customers::PhoneCodeHash, 64)).await?;
        add_column(
            manager,
            timestamp_with_time_zone_null(Customers::PhoneCodeExpiresAt),
        )
        .await?;
        add_column(
            manager,
            integer(Customers::PhoneCodeAttempts).default(0).to_owned(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Customers::PhoneCodeAttempts,
            Customers::PhoneCodeExpiresAt,
            Customers::PhoneCodeHash,
            Customers::PhoneVerifiedAt,
        ] {
            drop_column(manager, column).await?;
        }
        Ok(())
    }
}
