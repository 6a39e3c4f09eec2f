//! Customer queries; the only place that touches the customer entity.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, SqlErr};
use time::OffsetDateTime;

use super::entity::customer;
use crate::platform::db::Writer;

pub struct NewCustomer {
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub password_hash: String,
    pub whatsapp_opt_in: bool,
}

/// Inserts an account; `Ok(None)` when the email or phone is already taken.
pub async fn create(writer: &Writer, new: NewCustomer) -> Result<Option<i64>, DbErr> {
    let _permit = writer.permit().await;
    let now = OffsetDateTime::now_utc();
    let result = customer::Entity::insert(customer::ActiveModel {
        id: NotSet,
        email: Set(Some(new.email)),
        name: Set(new.name),
        phone: Set(new.phone),
        password_hash: Set(Some(new.password_hash)),
        whatsapp_opt_in: Set(new.whatsapp_opt_in),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec(&writer.db)
    .await;
    match result {
        Ok(inserted) => Ok(Some(inserted.last_insert_id)),
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

pub async fn find_by_email(
    db: &DatabaseConnection,
    email: &str,
) -> Result<Option<customer::Model>, DbErr> {
    customer::Entity::find()
        .filter(customer::Column::Email.eq(email))
        .one(db)
        .await
}

pub async fn find_by_id(
    db: &DatabaseConnection,
    id: i64,
) -> Result<Option<customer::Model>, DbErr> {
    customer::Entity::find_by_id(id).one(db).await
}
