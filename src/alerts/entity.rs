//! The `alerts` table (migration `m20261203_000012_alerts`).

pub mod alert {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "alerts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The rule's stable name (`http_errors`, `dead_letters`, …).
        pub rule: String,
        /// `warning` or `critical`.
        pub severity: String,
        pub title: String,
        pub text: String,
        /// Absolute URL of the admin page that shows the problem.
        pub link: Option<String>,
        pub opened_at: time::OffsetDateTime,
        /// The replica that opened it (and sent the firing notice).
        pub opened_by: String,
        /// The last time a replica saw the rule firing.
        pub last_seen_at: time::OffsetDateTime,
        pub resolved_at: Option<time::OffsetDateTime>,
        /// The replica that resolved it (and sent the resolved notice).
        pub resolved_by: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
