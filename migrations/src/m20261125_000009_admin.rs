//! The back-office's accounts and audit trail.
//!
//! - `admins`: people who run the shop, separate from shoppers, each with a
//!   role (`owner`, `staff`, `support`) and an argon2id password hash;
//!   `disabled_at` keeps a departed admin's audit entries attributable.
//! - `admin_audit`: every admin action: who, what, on what, when, and the
//!   state before and after (JSON).
//! - `admin_setup_tokens`: the one-time link that creates the first owner
//!   of an empty install (stored as a SHA-256 hash, never the token).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Admins {
    Table,
    Id,
    Email,
    Name,
    Role,
    PasswordHash,
    CreatedAt,
    DisabledAt,
}

#[derive(DeriveIden)]
enum AdminAudit {
    Table,
    Id,
    AdminId,
    AdminEmail,
    Action,
    Target,
    Before,
    After,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AdminSetupTokens {
    Table,
    TokenHash,
    ExpiresAt,
    UsedAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Admins::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Admins::Id))
                    .col(string_len_uniq(Admins::Email, 254))
                    .col(string_len(Admins::Name, 120))
                    .col(string_len(Admins::Role, 16))
                    .col(text(Admins::PasswordHash))
                    .col(timestamp_with_time_zone(Admins::CreatedAt))
                    .col(timestamp_with_time_zone_null(Admins::DisabledAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdminAudit::Table)
                    .if_not_exists()
                    .col(big_pk_auto(AdminAudit::Id))
                    .col(big_integer_null(AdminAudit::AdminId))
                    .col(string_len(AdminAudit::AdminEmail, 254))
                    .col(string_len(AdminAudit::Action, 64))
                    .col(string_len(AdminAudit::Target, 254))
                    .col(text_null(AdminAudit::Before))
                    .col(text_null(AdminAudit::After))
                    .col(timestamp_with_time_zone(AdminAudit::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_admin_audit_created")
                    .table(AdminAudit::Table)
                    .col(AdminAudit::CreatedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdminSetupTokens::Table)
                    .if_not_exists()
                    .col(string_len(AdminSetupTokens::TokenHash, 64).primary_key())
                    .col(timestamp_with_time_zone(AdminSetupTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(AdminSetupTokens::UsedAt))
                    .col(timestamp_with_time_zone(AdminSetupTokens::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AdminSetupTokens::Table.into_iden(),
            AdminAudit::Table.into_iden(),
            Admins::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
