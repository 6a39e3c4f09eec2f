//! sea-orm entities of the event outbox and of processed provider events.

pub mod outbox {
    use sea_orm::entity::prelude::*;

    /// A domain event written in the same transaction as the change it describes.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub event_id: String,
        pub event_type: String,
        pub version: i32,
        pub payload: Json,
        pub occurred_at: time::OffsetDateTime,
        /// When the dispatcher created this event's deliveries.
        pub routed_at: Option<time::OffsetDateTime>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod processed_event {
    use sea_orm::entity::prelude::*;

    /// An idempotency key: a provider event (Stripe event id, Twilio
    /// MessageSid) that has been handled and must not be handled again.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "processed_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub source: String,
        pub event_id: String,
        pub processed_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod delivery {
    use sea_orm::entity::prelude::*;

    /// One event's delivery to one handler: its attempts, when it is due,
    /// who holds it, and how it ended. `dead` rows are the dead letters.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event_id: String,
        pub handler: String,
        /// A [`crate::events::DeliveryStatus`] in snake case.
        pub status: String,
        pub attempts: i32,
        pub replays: i32,
        pub next_attempt_at: time::OffsetDateTime,
        pub locked_until: Option<time::OffsetDateTime>,
        pub locked_by: Option<String>,
        pub last_error: Option<String>,
        pub created_at: time::OffsetDateTime,
        pub updated_at: time::OffsetDateTime,
        pub completed_at: Option<time::OffsetDateTime>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
