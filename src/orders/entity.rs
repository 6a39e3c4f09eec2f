//! sea-orm entities of orders, their lines, status history and shipments.

pub mod order {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// UUID used in URLs, so order numbers cannot be enumerated.
        #[sea_orm(unique)]
        pub public_id: String,
        pub customer_id: Option<i64>,
        pub email: String,
        pub phone: Option<String>,
        /// An [`crate::orders::OrderStatus`] in snake case.
        pub status: String,
        pub currency: String,
        pub subtotal_minor: i64,
        pub shipping_minor: i64,
        pub total_minor: i64,
        pub payment_provider: String,
        #[sea_orm(unique)]
        pub payment_session_id: Option<String>,
        pub payment_intent_id: Option<String>,
        pub needs_attention: bool,
        pub attention_reason: Option<String>,
        pub ship_name: String,
        pub ship_line1: String,
        pub ship_line2: String,
        pub ship_city: String,
        pub ship_postcode: String,
        pub ship_state: String,
        pub ship_country: String,
        pub reservation_expires_at: Option<time::OffsetDateTime>,
        pub paid_at: Option<time::OffsetDateTime>,
        pub created_at: time::OffsetDateTime,
        pub updated_at: time::OffsetDateTime,
        /// The buyer asked for order updates on WhatsApp.
        pub whatsapp_opt_in: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod order_line {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_lines")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub order_id: i64,
        pub variant_id: Option<i64>,
        pub product_name: String,
        pub variant_title: String,
        pub sku: String,
        pub unit_price_minor: i64,
        pub quantity: i32,
        pub line_total_minor: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod order_status_change {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "order_status_changes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub order_id: i64,
        pub from_status: Option<String>,
        pub to_status: String,
        pub note: String,
        pub created_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod shipment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "shipments")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub order_id: i64,
        pub carrier: String,
        pub tracking_number: Option<String>,
        pub tracking_url: Option<String>,
        pub label_url: Option<String>,
        pub status: String,
        pub created_at: time::OffsetDateTime,
        pub updated_at: time::OffsetDateTime,
        pub shipped_at: Option<time::OffsetDateTime>,
        pub delivered_at: Option<time::OffsetDateTime>,
        /// The carrier's own id for the shipment.
        pub carrier_ref: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
