//! Outbound WhatsApp messages (the recorded outbox of the embedded
//! messaging adapter, and the log of every message the Twilio adapter
//! sends), and single-use password-reset tokens (stored hashed).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    MessageId,
    Recipient,
    Kind,
    Body,
    Status,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PasswordResets {
    Table,
    Id,
    TokenHash,
    CustomerId,
    ExpiresAt,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Messages::Id))
                    .col(string_len_uniq(Messages::MessageId, 64))
                    .col(string_len(Messages::Recipient, 64))
                    .col(string_len(Messages::Kind, 64))
                    .col(text(Messages::Body))
                    .col(string_len(Messages::Status, 32))
                    .col(
                        timestamp_with_time_zone(Messages::CreatedAt)
                            .default(Expr::current_timestamp()),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_recipient_created")
                    .table(Messages::Table)
                    .col(Messages::Recipient)
                    .col(Messages::CreatedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PasswordResets::Table)
                    .if_not_exists()
                    .col(big_pk_auto(PasswordResets::Id))
                    .col(string_len_uniq(PasswordResets::TokenHash, 64))
                    .col(big_integer(PasswordResets::CustomerId))
                    .col(timestamp_with_time_zone(PasswordResets::ExpiresAt))
                    .col(timestamp_with_time_zone_null(PasswordResets::UsedAt))
                    .col(
                        timestamp_with_time_zone(PasswordResets::CreatedAt)
                            .default(Expr::current_timestamp()),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_password_resets_customer")
                            .from(PasswordResets::Table, PasswordResets::CustomerId)
                            .to(Customers::Table, Customers::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(PasswordResets::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Messages::Table).if_exists().to_owned())
            .await
    }
}
