//! sea-orm entities of the catalog. Only `catalog::repo` uses them.

pub mod category {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "categories")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub slug: String,
        pub name: String,
        pub description: String,
        pub position: i32,
        pub created_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod product {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "products")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub category_id: i64,
        #[sea_orm(unique)]
        pub slug: String,
        pub name: String,
        pub description: String,
        /// Comma-separated lower-case tags.
        pub tags: String,
        pub featured: bool,
        /// `active` or `archived`.
        pub status: String,
        pub created_at: time::OffsetDateTime,
        pub updated_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod variant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "variants")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub product_id: i64,
        #[sea_orm(unique)]
        pub sku: String,
        pub title: String,
        pub size: Option<String>,
        pub colour: Option<String>,
        pub price_minor: i64,
        pub currency: String,
        pub stock_on_hand: i32,
        pub reserved: i32,
        pub position: i32,
        pub created_at: time::OffsetDateTime,
        pub updated_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod product_image {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "product_images")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub product_id: i64,
        pub url: String,
        pub alt: String,
        pub position: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod catalog_state {
    use sea_orm::entity::prelude::*;

    /// One row (id = 1) whose version is bumped by every catalog write, so
    /// that every replica notices and reloads its read model.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "catalog_state")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub version: i64,
        pub updated_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod stock_ledger {
    use sea_orm::entity::prelude::*;

    /// One change to a variant's units on hand, with its reason; written in
    /// the same transaction as the change, never updated.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "stock_ledger")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub variant_id: i64,
        pub sku: String,
        pub delta: i32,
        pub stock_after: i32,
        pub reason: String,
        pub note: String,
        pub admin_email: Option<String>,
        pub order_id: Option<i64>,
        pub created_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
