//! The shop's core tables: customers, the catalog, carts, orders with their
//! status history and shipments, the event outbox and the idempotency keys
//! of processed provider events.
//!
//! Money is always an integer number of minor units (sen, cents) next to an
//! ISO 4217 currency code. Foreign keys are declared inline because SQLite
//! cannot add them to an existing table.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
    Email,
    Name,
    Phone,
    PasswordHash,
    WhatsappOptIn,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Categories {
    Table,
    Id,
    Slug,
    Name,
    Description,
    Position,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
    CategoryId,
    Slug,
    Name,
    Description,
    Tags,
    Featured,
    Status,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Variants {
    Table,
    Id,
    ProductId,
    Sku,
    Title,
    Size,
    Colour,
    PriceMinor,
    Currency,
    StockOnHand,
    Reserved,
    Position,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ProductImages {
    Table,
    Id,
    ProductId,
    Url,
    Alt,
    Position,
}

#[derive(DeriveIden)]
enum Carts {
    Table,
    Id,
    Token,
    CustomerId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CartLines {
    Table,
    Id,
    CartId,
    VariantId,
    Quantity,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    PublicId,
    CustomerId,
    Email,
    Phone,
    Status,
    Currency,
    SubtotalMinor,
    ShippingMinor,
    TotalMinor,
    PaymentProvider,
    PaymentSessionId,
    PaymentIntentId,
    NeedsAttention,
    AttentionReason,
    ShipName,
    ShipLine1,
    ShipLine2,
    ShipCity,
    ShipPostcode,
    ShipState,
    ShipCountry,
    ReservationExpiresAt,
    PaidAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OrderLines {
    Table,
    Id,
    OrderId,
    VariantId,
    ProductName,
    VariantTitle,
    Sku,
    UnitPriceMinor,
    Quantity,
    LineTotalMinor,
}

#[derive(DeriveIden)]
enum OrderStatusChanges {
    Table,
    Id,
    OrderId,
    FromStatus,
    ToStatus,
    Note,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Shipments {
    Table,
    Id,
    OrderId,
    Carrier,
    TrackingNumber,
    TrackingUrl,
    LabelUrl,
    Status,
    CreatedAt,
    UpdatedAt,
    ShippedAt,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    EventId,
    EventType,
    Version,
    Payload,
    OccurredAt,
}

#[derive(DeriveIden)]
enum ProcessedEvents {
    Table,
    Id,
    Source,
    EventId,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum CatalogState {
    Table,
    Id,
    Version,
    UpdatedAt,
}

fn created_at<T: IntoIden>(column: T) -> ColumnDef {
    timestamp_with_time_zone(column)
        .default(Expr::current_timestamp())
        .take()
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .take()
}

fn index(name: &str, table: impl IntoIden, columns: &[&'static str]) -> IndexCreateStatement {
    let mut statement = Index::create()
        .name(name)
        .table(table)
        .if_not_exists()
        .take();
    for column in columns {
        statement.col(Alias::new(*column));
    }
    statement
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Customers::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Customers::Id))
                    .col(string_len_null(Customers::Email, 320).unique_key())
                    .col(string_len(Customers::Name, 200).default(""))
                    .col(string_len_null(Customers::Phone, 32).unique_key())
                    .col(string_len_null(Customers::PasswordHash, 255))
                    .col(boolean(Customers::WhatsappOptIn).default(false))
                    .col(created_at(Customers::CreatedAt))
                    .col(created_at(Customers::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Categories::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Categories::Id))
                    .col(string_len_uniq(Categories::Slug, 120))
                    .col(string_len(Categories::Name, 200))
                    .col(text(Categories::Description).default(""))
                    .col(integer(Categories::Position).default(0))
                    .col(created_at(Categories::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Products::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Products::Id))
                    .col(big_integer(Products::CategoryId))
                    .col(string_len_uniq(Products::Slug, 160))
                    .col(string_len(Products::Name, 200))
                    .col(text(Products::Description).default(""))
                    .col(string_len(Products::Tags, 500).default(""))
                    .col(boolean(Products::Featured).default(false))
                    .col(string_len(Products::Status, 16).default("active"))
                    .col(created_at(Products::CreatedAt))
                    .col(created_at(Products::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_products_category",
                        (Products::Table, Products::CategoryId),
                        (Categories::Table, Categories::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_products_category",
                Products::Table,
                &["category_id", "status"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Variants::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Variants::Id))
                    .col(big_integer(Variants::ProductId))
                    .col(string_len_uniq(Variants::Sku, 64))
                    .col(string_len(Variants::Title, 200).default(""))
                    .col(string_len_null(Variants::Size, 40))
                    .col(string_len_null(Variants::Colour, 40))
                    .col(
                        big_integer(Variants::PriceMinor)
                            .check(Expr::col(Variants::PriceMinor).gte(0)),
                    )
                    .col(char_len(Variants::Currency, 3))
                    .col(
                        integer(Variants::StockOnHand)
                            .default(0)
                            .check(Expr::col(Variants::StockOnHand).gte(0)),
                    )
                    .col(
                        integer(Variants::Reserved)
                            .default(0)
                            .check(Expr::col(Variants::Reserved).gte(0)),
                    )
                    .col(integer(Variants::Position).default(0))
                    .col(created_at(Variants::CreatedAt))
                    .col(created_at(Variants::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_variants_product",
                        (Variants::Table, Variants::ProductId),
                        (Products::Table, Products::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_variants_product",
                Variants::Table,
                &["product_id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ProductImages::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ProductImages::Id))
                    .col(big_integer(ProductImages::ProductId))
                    .col(string_len(ProductImages::Url, 500))
                    .col(string_len(ProductImages::Alt, 300).default(""))
                    .col(integer(ProductImages::Position).default(0))
                    .foreign_key(&mut fk(
                        "fk_product_images_product",
                        (ProductImages::Table, ProductImages::ProductId),
                        (Products::Table, Products::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_product_images_product",
                ProductImages::Table,
                &["product_id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Carts::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Carts::Id))
                    .col(string_len_uniq(Carts::Token, 64))
                    .col(big_integer_null(Carts::CustomerId))
                    .col(created_at(Carts::CreatedAt))
                    .col(created_at(Carts::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_carts_customer",
                        (Carts::Table, Carts::CustomerId),
                        (Customers::Table, Customers::Id),
                        ForeignKeyAction::SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("idx_carts_customer", Carts::Table, &["customer_id"]))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CartLines::Table)
                    .if_not_exists()
                    .col(big_pk_auto(CartLines::Id))
                    .col(big_integer(CartLines::CartId))
                    .col(big_integer(CartLines::VariantId))
                    .col(integer(CartLines::Quantity).check(Expr::col(CartLines::Quantity).gt(0)))
                    .col(created_at(CartLines::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_cart_lines_cart",
                        (CartLines::Table, CartLines::CartId),
                        (Carts::Table, Carts::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_cart_lines_variant",
                        (CartLines::Table, CartLines::VariantId),
                        (Variants::Table, Variants::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index(
                    "uq_cart_lines_cart_variant",
                    CartLines::Table,
                    &["cart_id", "variant_id"],
                )
                .unique()
                .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Orders::Id))
                    .col(string_len_uniq(Orders::PublicId, 36))
                    .col(big_integer_null(Orders::CustomerId))
                    .col(string_len(Orders::Email, 320))
                    .col(string_len_null(Orders::Phone, 32))
                    .col(string_len(Orders::Status, 32))
                    .col(char_len(Orders::Currency, 3))
                    .col(big_integer(Orders::SubtotalMinor))
                    .col(big_integer(Orders::ShippingMinor).default(0))
                    .col(big_integer(Orders::TotalMinor))
                    .col(string_len(Orders::PaymentProvider, 32))
                    .col(string_len_null(Orders::PaymentSessionId, 255).unique_key())
                    .col(string_len_null(Orders::PaymentIntentId, 255))
                    .col(boolean(Orders::NeedsAttention).default(false))
                    .col(text_null(Orders::AttentionReason))
                    .col(string_len(Orders::ShipName, 200).default(""))
                    .col(string_len(Orders::ShipLine1, 300).default(""))
                    .col(string_len(Orders::ShipLine2, 300).default(""))
                    .col(string_len(Orders::ShipCity, 120).default(""))
                    .col(string_len(Orders::ShipPostcode, 20).default(""))
                    .col(string_len(Orders::ShipState, 120).default(""))
                    .col(char_len(Orders::ShipCountry, 2).default("MY"))
                    .col(timestamp_with_time_zone_null(Orders::ReservationExpiresAt))
                    .col(timestamp_with_time_zone_null(Orders::PaidAt))
                    .col(created_at(Orders::CreatedAt))
                    .col(created_at(Orders::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_orders_customer",
                        (Orders::Table, Orders::CustomerId),
                        (Customers::Table, Customers::Id),
                        ForeignKeyAction::SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_orders_customer_created",
                Orders::Table,
                &["customer_id", "created_at"],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_orders_status_expiry",
                Orders::Table,
                &["status", "reservation_expires_at"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OrderLines::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OrderLines::Id))
                    .col(big_integer(OrderLines::OrderId))
                    .col(big_integer_null(OrderLines::VariantId))
                    .col(string_len(OrderLines::ProductName, 200))
                    .col(string_len(OrderLines::VariantTitle, 200))
                    .col(string_len(OrderLines::Sku, 64))
                    .col(big_integer(OrderLines::UnitPriceMinor))
                    .col(integer(OrderLines::Quantity).check(Expr::col(OrderLines::Quantity).gt(0)))
                    .col(big_integer(OrderLines::LineTotalMinor))
                    .foreign_key(&mut fk(
                        "fk_order_lines_order",
                        (OrderLines::Table, OrderLines::OrderId),
                        (Orders::Table, Orders::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_order_lines_variant",
                        (OrderLines::Table, OrderLines::VariantId),
                        (Variants::Table, Variants::Id),
                        ForeignKeyAction::SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_order_lines_order",
                OrderLines::Table,
                &["order_id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OrderStatusChanges::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OrderStatusChanges::Id))
                    .col(big_integer(OrderStatusChanges::OrderId))
                    .col(string_len_null(OrderStatusChanges::FromStatus, 32))
                    .col(string_len(OrderStatusChanges::ToStatus, 32))
                    .col(text(OrderStatusChanges::Note).default(""))
                    .col(created_at(OrderStatusChanges::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_order_status_changes_order",
                        (OrderStatusChanges::Table, OrderStatusChanges::OrderId),
                        (Orders::Table, Orders::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_order_status_changes_order",
                OrderStatusChanges::Table,
                &["order_id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Shipments::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Shipments::Id))
                    .col(big_integer_uniq(Shipments::OrderId))
                    .col(string_len(Shipments::Carrier, 64))
                    .col(string_len_null(Shipments::TrackingNumber, 128))
                    .col(string_len_null(Shipments::TrackingUrl, 500))
                    .col(string_len_null(Shipments::LabelUrl, 500))
                    .col(string_len(Shipments::Status, 32))
                    .col(created_at(Shipments::CreatedAt))
                    .col(created_at(Shipments::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Shipments::ShippedAt))
                    .col(timestamp_with_time_zone_null(Shipments::DeliveredAt))
                    .foreign_key(&mut fk(
                        "fk_shipments_order",
                        (Shipments::Table, Shipments::OrderId),
                        (Orders::Table, Orders::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Outbox::Id))
                    .col(string_len_uniq(Outbox::EventId, 36))
                    .col(string_len(Outbox::EventType, 64))
                    .col(integer(Outbox::Version).default(1))
                    .col(json(Outbox::Payload))
                    .col(created_at(Outbox::OccurredAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_outbox_type_time",
                Outbox::Table,
                &["event_type", "occurred_at"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ProcessedEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ProcessedEvents::Id))
                    .col(string_len(ProcessedEvents::Source, 32))
                    .col(string_len(ProcessedEvents::EventId, 255))
                    .col(created_at(ProcessedEvents::ProcessedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index(
                    "uq_processed_events_source_event",
                    ProcessedEvents::Table,
                    &["source", "event_id"],
                )
                .unique()
                .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CatalogState::Table)
                    .if_not_exists()
                    .col(integer(CatalogState::Id).primary_key())
                    .col(big_integer(CatalogState::Version).default(0))
                    .col(created_at(CatalogState::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("INSERT INTO catalog_state (id, version) VALUES (1, 0)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            CatalogState::Table.into_iden(),
            ProcessedEvents::Table.into_iden(),
            Outbox::Table.into_iden(),
            Shipments::Table.into_iden(),
            OrderStatusChanges::Table.into_iden(),
            OrderLines::Table.into_iden(),
            Orders::Table.into_iden(),
            CartLines::Table.into_iden(),
            Carts::Table.into_iden(),
            ProductImages::Table.into_iden(),
            Variants::Table.into_iden(),
            Products::Table.into_iden(),
            Categories::Table.into_iden(),
            Customers::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
