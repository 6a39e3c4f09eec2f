//! An index on `variants.updated_at`: every replica asks for its maximum
//! on each catalog refresh to notice stock changes made by checkouts.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_variants_updated_at")
                    .table(Alias::new("variants"))
                    .col(Alias::new("updated_at"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_variants_updated_at")
                    .table(Alias::new("variants"))
                    .to_owned(),
            )
            .await
    }
}
