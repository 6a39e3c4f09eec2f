//! sea-orm entity of a customer account (or a guest identified by email).

pub mod customer {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "customers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub email: Option<String>,
        pub name: String,
        /// E.164, e.g. `+60123456789`.
        #[sea_orm(unique)]
        pub phone: Option<String>,
        /// argon2id PHC string; `None` for guests.
        pub password_hash: Option<String>,
        pub whatsapp_opt_in: bool,
        pub created_at: time::OffsetDateTime,
        pub updated_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
