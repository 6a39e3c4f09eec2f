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
        /// When the shopper proved `phone` is theirs (a code sent from
        /// WhatsApp); cleared whenever the number changes.
        pub phone_verified_at: Option<time::OffsetDateTime>,
        /// SHA-256 (hex) of the pending verification code.
        pub phone_code_hash: Option<String>,
        pub phone_code_expires_at: Option<time::OffsetDateTime>,
        /// Wrong codes tried against the pending one.
        pub phone_code_attempts: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod password_reset {
    use sea_orm::entity::prelude::*;

    /// A single-use reset link; only the SHA-256 of its token is stored.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "password_resets")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub token_hash: String,
        pub customer_id: i64,
        pub expires_at: time::OffsetDateTime,
        pub used_at: Option<time::OffsetDateTime>,
        pub created_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
