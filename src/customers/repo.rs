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
        phone_verified_at: Set(None),
        phone_code_hash: Set(None),
        phone_code_expires_at: Set(None),
        phone_code_attempts: Set(0),
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

pub async fn update_password(writer: &Writer, id: i64, password_hash: String) -> Result<(), DbErr> {
    use sea_orm::sea_query::Expr;
    let _permit = writer.permit().await;
    customer::Entity::update_many()
        .col_expr(customer::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(
            customer::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(customer::Column::Id.eq(id))
        .exec(&writer.db)
        .await?;
    Ok(())
}

/// Saves the profile; `Ok(false)` when the email or phone belongs to another account.
pub async fn update_profile(
    writer: &Writer,
    id: i64,
    name: String,
    email: String,
    phone: Option<String>,
    whatsapp_opt_in: bool,
) -> Result<bool, DbErr> {
    use sea_orm::sea_query::Expr;
    let (txn, _permit) = writer.begin().await?;
    let before = customer::Entity::find_by_id(id).one(&txn).await?;
    // A new number (or none) is not proven: the old proof and any pending
    // code were for the old one.
    let phone_changed = before.is_some_and(|c| c.phone != phone);
    let mut update = customer::Entity::update_many()
        .col_expr(customer::Column::Name, Expr::value(name))
        .col_expr(customer::Column::Email, Expr::value(email))
        .col_expr(customer::Column::Phone, Expr::value(phone))
        .col_expr(
            customer::Column::WhatsappOptIn,
            Expr::value(whatsapp_opt_in),
        )
        .col_expr(
            customer::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(customer::Column::Id.eq(id));
    if phone_changed {
        update = forget_phone_code(update).col_expr(
            customer::Column::PhoneVerifiedAt,
            Expr::value(Option::<OffsetDateTime>::None),
        );
    }
    match update.exec(&txn).await {
        Ok(_) => {
            txn.commit().await?;
            Ok(true)
        }
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            txn.rollback().await?;
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

pub async fn find_by_phone(
    db: &DatabaseConnection,
    phone: &str,
) -> Result<Option<customer::Model>, DbErr> {
    customer::Entity::find()
        .filter(customer::Column::Phone.eq(phone))
        .one(db)
        .await
}

pub async fn create_reset(
    writer: &Writer,
    customer_id: i64,
    token_hash: String,
    expires_at: OffsetDateTime,
    event: serde_json::Value,
) -> Result<(), DbErr> {
    use super::entity::password_reset;
    let (txn, _permit) = writer.begin().await?;
    password_reset::Entity::insert(password_reset::ActiveModel {
        id: NotSet,
        token_hash: Set(token_hash),
        customer_id: Set(customer_id),
        expires_at: Set(expires_at),
        used_at: Set(None),
        created_at: Set(OffsetDateTime::now_utc()),
    })
    .exec_without_returning(&txn)
    .await?;
    crate::events::append(
        &txn,
        crate::events::types::CUSTOMER_PASSWORD_RESET_REQUESTED,
        event,
    )
    .await?;
    txn.commit().await?;
    writer.outbox_committed();
    Ok(())
}

/// The customer of a reset token that is unused and unexpired.
pub async fn valid_reset(db: &DatabaseConnection, token_hash: &str) -> Result<Option<i64>, DbErr> {
    use super::entity::password_reset;
    Ok(password_reset::Entity::find()
        .filter(password_reset::Column::TokenHash.eq(token_hash))
        .filter(password_reset::Column::UsedAt.is_null())
        .filter(password_reset::Column::ExpiresAt.gt(OffsetDateTime::now_utc()))
        .one(db)
        .await?
        .map(|reset| reset.customer_id))
}

/// Uses up a reset token and sets the new password in one transaction;
/// returns the customer, or `None` when the token was used, expired or
/// never existed. Two concurrent uses: one wins.
pub async fn consume_reset(
    writer: &Writer,
    token_hash: &str,
    password_hash: String,
) -> Result<Option<i64>, DbErr> {
    use super::entity::password_reset;
    use sea_orm::sea_query::Expr;
    let (txn, _permit) = writer.begin().await?;
    let now = OffsetDateTime::now_utc();
    let won = password_reset::Entity::update_many()
        .col_expr(password_reset::Column::UsedAt, Expr::value(now))
        .filter(password_reset::Column::TokenHash.eq(token_hash))
        .filter(password_reset::Column::UsedAt.is_null())
        .filter(password_reset::Column::ExpiresAt.gt(now))
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !won {
        txn.rollback().await?;
        return Ok(None);
    }
    let reset = password_reset::Entity::find()
        .filter(password_reset::Column::TokenHash.eq(token_hash))
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("reset vanished inside its transaction".into()))?;
    customer::Entity::update_many()
        .col_expr(customer::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(customer::Column::UpdatedAt, Expr::value(now))
        .filter(customer::Column::Id.eq(reset.customer_id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(Some(reset.customer_id))
}

/// Adds to `update` the columns that forget a pending phone code.
fn forget_phone_code(
    update: sea_orm::UpdateMany<customer::Entity>,
) -> sea_orm::UpdateMany<customer::Entity> {
    use sea_orm::sea_query::Expr;
    update
        .col_expr(
            customer::Column::PhoneCodeHash,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            customer::Column::PhoneCodeExpiresAt,
            Expr::value(Option::<OffsetDateTime>::None),
        )
        .col_expr(customer::Column::PhoneCodeAttempts, Expr::value(0))
}

/// Stores a new pending verification code for the account's current
/// number (replacing any earlier one); `Ok(false)` when the account has no
/// number.
pub async fn set_phone_code(
    writer: &Writer,
    id: i64,
    code_hash: String,
    expires_at: OffsetDateTime,
) -> Result<bool, DbErr> {
    use sea_orm::sea_query::Expr;
    let _permit = writer.permit().await;
    let result = customer::Entity::update_many()
        .col_expr(customer::Column::PhoneCodeHash, Expr::value(code_hash))
        .col_expr(
            customer::Column::PhoneCodeExpiresAt,
            Expr::value(expires_at),
        )
        .col_expr(customer::Column::PhoneCodeAttempts, Expr::value(0))
        .filter(customer::Column::Id.eq(id))
        .filter(customer::Column::Phone.is_not_null())
        .exec(&writer.db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// What a code sent from a WhatsApp number did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code matched: the number is now verified for this account.
    Verified { customer_id: i64, name: String },
    /// No account with this number has a code waiting (or it expired, or
    /// was voided by too many wrong tries).
    NothingPending,
    /// Wrong code; this many tries are left before it is void.
    Wrong { tries_left: i32 },
}

/// Checks a code sent from `phone` against the pending code of the account
/// with that number. A match verifies the number and uses the code up; a
/// wrong code counts against it, and `max_attempts` wrong ones void it.
pub async fn check_phone_code(
    writer: &Writer,
    phone: &str,
    code_hash: &str,
    max_attempts: i32,
) -> Result<CodeCheck, DbErr> {
    use sea_orm::sea_query::Expr;
    let (txn, _permit) = writer.begin().await?;
    let now = OffsetDateTime::now_utc();
    let Some(account) = customer::Entity::find()
        .filter(customer::Column::Phone.eq(phone))
        .filter(customer::Column::PhoneCodeHash.is_not_null())
        .filter(customer::Column::PhoneCodeExpiresAt.gt(now))
        .one(&txn)
        .await?
    else {
        txn.rollback().await?;
        return Ok(CodeCheck::NothingPending);
    };
    let stored = account.phone_code_hash.as_deref().unwrap_or_default();
    let matches = crate::web::constant_time_eq(stored.as_bytes(), code_hash.as_bytes());
    let outcome = if matches {
        forget_phone_code(customer::Entity::update_many())
            .col_expr(customer::Column::PhoneVerifiedAt, Expr::value(now))
            .filter(customer::Column::Id.eq(account.id))
            .exec(&txn)
            .await?;
        CodeCheck::Verified {
            customer_id: account.id,
            name: account.name,
        }
    } else {
        let attempts = account.phone_code_attempts + 1;
        let mut update = customer::Entity::update_many()
            .col_expr(customer::Column::PhoneCodeAttempts, Expr::value(attempts))
            .filter(customer::Column::Id.eq(account.id));
        if attempts >= max_attempts {
            update = update.col_expr(
                customer::Column::PhoneCodeHash,
                Expr::value(Option::<String>::None),
            );
        }
        update.exec(&txn).await?;
        CodeCheck::Wrong {
            tries_left: (max_attempts - attempts).max(0),
        }
    };
    txn.commit().await?;
    Ok(outcome)
}

/// The account whose verified number is `phone`.
pub async fn verified_by_phone(db: &DatabaseConnection, phone: &str) -> Result<Option<i64>, DbErr> {
    Ok(customer::Entity::find()
        .filter(customer::Column::Phone.eq(phone))
        .filter(customer::Column::PhoneVerifiedAt.is_not_null())
        .one(db)
        .await?
        .map(|c| c.id))
}
