//! sea-orm entities of shopping carts.

pub mod cart {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "carts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Random token kept in the shopper's session.
        #[sea_orm(unique)]
        pub token: String,
        pub customer_id: Option<i64>,
        pub created_at: time::OffsetDateTime,
        pub updated_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cart_line {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cart_lines")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub cart_id: i64,
        pub variant_id: i64,
        pub quantity: i32,
        pub created_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
