//! Delivering events to handlers and the effects the handlers keep.
//!
//! - `outbox.routed_at`: when the dispatcher fanned the event out into
//!   deliveries (one per matching handler); NULL means not yet.
//! - `event_deliveries`: one row per (event, handler) with its attempts,
//!   next due time, lease and last error; `dead` rows are dead letters.
//! - `messages` gains what a real provider needs: an idempotency key (one
//!   notification per order and status), the provider's id and error, the
//!   template used, and when the status last moved.
//! - `whatsapp_contacts`: per WhatsApp number, the last inbound message
//!   (the 24-hour customer-service window) and an opt-out.
//! - `orders.whatsapp_opt_in`: the buyer asked for order updates.
//! - `shipments.carrier_ref`: the carrier's own id for the shipment.
//! - `analytics_daily`: daily aggregates keyed by (day, metric, dimension).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    RoutedAt,
}

#[derive(DeriveIden)]
enum EventDeliveries {
    Table,
    Id,
    EventId,
    Handler,
    Status,
    Attempts,
    Replays,
    NextAttemptAt,
    LockedUntil,
    LockedBy,
    LastError,
    CreatedAt,
    UpdatedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    IdempotencyKey,
    ContentSid,
    ProviderSid,
    ErrorCode,
    ErrorMessage,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WhatsappContacts {
    Table,
    Phone,
    LastInboundAt,
    OptedOutAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    WhatsappOptIn,
}

#[derive(DeriveIden)]
enum Shipments {
    Table,
    CarrierRef,
}

#[derive(DeriveIden)]
enum AnalyticsDaily {
    Table,
    Day,
    Metric,
    Dimension,
    Value,
}

async fn add_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    column: ColumnDef,
) -> Result<(), DbErr> {
    // One column per statement: SQLite's ALTER TABLE adds one at a time.
    let mut column = column;
    manager
        .alter_table(
            Table::alter()
                .table(table)
                .add_column(&mut column)
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            manager,
            Outbox::Table,
            timestamp_with_time_zone_null(Outbox::RoutedAt),
        )
        .await?;
        // Events written before there was a dispatcher are history, not
        // work: nobody should book a parcel for last month's orders now.
        // (`kedai events replay-range` delivers them to a handler on purpose.)
        manager
            .get_connection()
            .execute_unprepared("UPDATE outbox SET routed_at = occurred_at WHERE routed_at IS NULL")
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_unrouted")
                    .table(Outbox::Table)
                    .col(Outbox::RoutedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EventDeliveries::Table)
                    .if_not_exists()
                    .col(big_pk_auto(EventDeliveries::Id))
                    .col(string_len(EventDeliveries::EventId, 36))
                    .col(string_len(EventDeliveries::Handler, 64))
                    .col(string_len(EventDeliveries::Status, 16))
                    .col(integer(EventDeliveries::Attempts).default(0))
                    .col(integer(EventDeliveries::Replays).default(0))
                    .col(timestamp_with_time_zone(EventDeliveries::NextAttemptAt))
                    .col(timestamp_with_time_zone_null(EventDeliveries::LockedUntil))
                    .col(string_len_null(EventDeliveries::LockedBy, 64))
                    .col(text_null(EventDeliveries::LastError))
                    .col(timestamp_with_time_zone(EventDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone(EventDeliveries::UpdatedAt))
                    .col(timestamp_with_time_zone_null(EventDeliveries::CompletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_event_deliveries_event_handler")
                    .table(EventDeliveries::Table)
                    .col(EventDeliveries::EventId)
                    .col(EventDeliveries::Handler)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_event_deliveries_due")
                    .table(EventDeliveries::Table)
                    .col(EventDeliveries::Status)
                    .col(EventDeliveries::NextAttemptAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_event_deliveries_handler_status")
                    .table(EventDeliveries::Table)
                    .col(EventDeliveries::Handler)
                    .col(EventDeliveries::Status)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        add_column(
            manager,
            Messages::Table,
            string_len_null(Messages::IdempotencyKey, 128),
        )
        .await?;
        add_column(
            manager,
            Messages::Table,
            string_len_null(Messages::ContentSid, 64),
        )
        .await?;
        add_column(
            manager,
            Messages::Table,
            string_len_null(Messages::ProviderSid, 64),
        )
        .await?;
        add_column(
            manager,
            Messages::Table,
            string_len_null(Messages::ErrorCode, 16),
        )
        .await?;
        add_column(manager, Messages::Table, text_null(Messages::ErrorMessage)).await?;
        add_column(
            manager,
            Messages::Table,
            timestamp_with_time_zone_null(Messages::UpdatedAt),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_idempotency_key")
                    .table(Messages::Table)
                    .col(Messages::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_provider_sid")
                    .table(Messages::Table)
                    .col(Messages::ProviderSid)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WhatsappContacts::Table)
                    .if_not_exists()
                    .col(string_len(WhatsappContacts::Phone, 64).primary_key())
                    .col(timestamp_with_time_zone_null(
                        WhatsappContacts::LastInboundAt,
                    ))
                    .col(timestamp_with_time_zone_null(WhatsappContacts::OptedOutAt))
                    .col(timestamp_with_time_zone(WhatsappContacts::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        add_column(
            manager,
            Orders::Table,
            boolean(Orders::WhatsappOptIn).default(false).to_owned(),
        )
        .await?;
        add_column(
            manager,
            Shipments::Table,
            string_len_null(Shipments::CarrierRef, 128),
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(AnalyticsDaily::Table)
                    .if_not_exists()
                    .col(string_len(AnalyticsDaily::Day, 10))
                    .col(string_len(AnalyticsDaily::Metric, 64))
                    .col(string_len(AnalyticsDaily::Dimension, 128))
                    .col(big_integer(AnalyticsDaily::Value).default(0))
                    .primary_key(
                        Index::create()
                            .col(AnalyticsDaily::Day)
                            .col(AnalyticsDaily::Metric)
                            .col(AnalyticsDaily::Dimension),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AnalyticsDaily::Table.into_iden(),
            WhatsappContacts::Table.into_iden(),
            EventDeliveries::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        // The added columns stay: SQLite cannot drop a column that an index
        // uses, and a down migration is for development databases only.
        Ok(())
    }
}
