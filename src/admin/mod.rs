//! The back-office: admin accounts (separate from shoppers) with roles, the
//! audit trail of every admin action, the one-time setup link of an empty
//! install, and the pages (`routes.rs`, `dashboard.rs`, `orders.rs`,
//! `knowledge.rs`, `operations.rs`, `alerts.rs`).
//!
//! Roles, from most to least:
//!
//! | role | may |
//! |---|---|
//! | `owner` | everything, including the audit log and admin accounts |
//! | `staff` | orders (ship, cancel, refund), catalog and stock, knowledge base, conversations |
//! | `support` | see orders; conversations (take over, reply, release) — no prices, no refunds |

pub mod alerts;
pub mod catalog;
pub mod conversations;
pub mod dashboard;
pub mod knowledge;
pub mod operations;
pub mod orders;
pub mod routes;

use std::time::Duration;

use anyhow::Context;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, SqlErr,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::customers::model::{hash_password, verify_password};
use crate::platform::cache::{Cache, first_limit_reached};
use crate::platform::db::Writer;

pub mod entity {
    pub mod admin {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "admins")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            #[sea_orm(unique)]
            pub email: String,
            pub name: String,
            pub role: String,
            pub password_hash: String,
            pub created_at: time::OffsetDateTime,
            pub disabled_at: Option<time::OffsetDateTime>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod audit {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
        #[sea_orm(table_name = "admin_audit")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub admin_id: Option<i64>,
            pub admin_email: String,
            pub action: String,
            pub target: String,
            pub before: Option<String>,
            pub after: Option<String>,
            pub created_at: time::OffsetDateTime,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod setup_token {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "admin_setup_tokens")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub token_hash: String,
            pub expires_at: time::OffsetDateTime,
            pub used_at: Option<time::OffsetDateTime>,
            pub created_at: time::OffsetDateTime,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use entity::{admin, audit, setup_token};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Staff,
    Support,
}

/// What an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See the dashboard and orders.
    View,
    /// Conversations: take over, reply, notes, release.
    Converse,
    /// Ship, cancel, refund orders; change prices and stock; the knowledge base.
    Manage,
    /// The audit log and admin accounts.
    Own,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Staff => "staff",
            Role::Support => "support",
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "owner" => Some(Role::Owner),
            "staff" => Some(Role::Staff),
            "support" => Some(Role::Support),
            _ => None,
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::View | Permission::Converse => true,
            Permission::Manage => matches!(self, Role::Owner | Role::Staff),
            Permission::Own => self == Role::Owner,
        }
    }
}

/// A signed-in admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminUser {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: Role,
}

impl AdminUser {
    fn from_model(model: admin::Model) -> Option<AdminUser> {
        Some(AdminUser {
            role: Role::parse(&model.role)?,
            id: model.id,
            email: model.email,
            name: model.name,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("an admin with this email exists")]
    Taken,
    #[error("{0}")]
    Invalid(String),
    #[error("too many attempts; try again in {0} seconds")]
    Throttled(u64),
    #[error(transparent)]
    Database(#[from] DbErr),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Sign-in attempts per account and per client address, per window.
const ATTEMPTS_PER_ACCOUNT: u32 = 5;
const ATTEMPTS_PER_ADDRESS: u32 = 20;
const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Shortest admin password.
pub const MIN_PASSWORD: usize = 12;
/// How long the setup link of an empty install works.
pub const SETUP_TTL: Duration = Duration::from_secs(24 * 3600);

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(work)
        .await
        .context("a password hash task failed")
        .map_err(AdminError::Internal)
}

fn normalise_email(raw: &str) -> Result<String, AdminError> {
    crate::customers::normalise_email(raw)
        .ok_or_else(|| AdminError::Invalid("enter a valid email address".into()))
}

fn check_password(password: &str) -> Result<(), AdminError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AdminError::Invalid(format!(
            "the password needs at least {MIN_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// Creates an admin account; returns it.
pub async fn create(
    writer: &Writer,
    email: &str,
    name: &str,
    role: Role,
    password: &str,
) -> Result<AdminUser, AdminError> {
    let email = normalise_email(email)?;
    check_password(password)?;
    let name = match name.trim() {
        "" => email.split('@').next().unwrap_or("admin").to_string(),
        name => name.chars().take(120).collect(),
    };
    let password = password.to_string();
    let hash = blocking(move || hash_password(&password)).await??;
    let row = admin::ActiveModel {
        email: Set(email.clone()),
        name: Set(name.clone()),
        role: Set(role.as_str().into()),
        password_hash: Set(hash),
        created_at: Set(OffsetDateTime::now_utc()),
        disabled_at: Set(None),
        ..Default::default()
    };
    let _permit = writer.permit().await;
    match admin::Entity::insert(row).exec(&writer.db).await {
        Ok(done) => Ok(AdminUser {
            id: done.last_insert_id,
            email,
            name,
            role,
        }),
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(AdminError::Taken)
        }
        Err(error) => Err(error.into()),
    }
}

static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    hash_password(&uuid::Uuid::new_v4().to_string()).unwrap_or_default()
});

/// Checks a sign-in, throttled per account and per client address.
/// `Ok(None)`: wrong email or password (deliberately not which), or a
/// disabled account.
pub async fn authenticate(
    db: &DatabaseConnection,
    cache: &dyn Cache,
    email: &str,
    password: &str,
    client: &str,
) -> Result<Option<AdminUser>, AdminError> {
    let email = crate::customers::normalise_email(email).unwrap_or_default();
    let limits = [
        (format!("admin-login:account:{email}"), ATTEMPTS_PER_ACCOUNT),
        (
            format!("admin-login:address:{client}"),
            ATTEMPTS_PER_ADDRESS,
        ),
    ];
    if let Some(wait) = first_limit_reached(cache, &limits, ATTEMPT_WINDOW)
        .await
        .map_err(|error| AdminError::Internal(error.into()))?
    {
        metrics::counter!("kedai_admin_login_throttled_total").increment(1);
        return Err(AdminError::Throttled(wait));
    }
    let account = admin::Entity::find()
        .filter(admin::Column::Email.eq(email.as_str()))
        .one(db)
        .await?;
    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let password = password.to_string();
    let matches =
        blocking(move || verify_password(&password, &stored.unwrap_or_else(|| DUMMY_HASH.clone())))
            .await?;
    Ok(account
        .filter(|a| matches && a.disabled_at.is_none())
        .and_then(AdminUser::from_model))
}

/// An active admin by id (a session's).
pub async fn find(db: &DatabaseConnection, id: i64) -> Result<Option<AdminUser>, DbErr> {
    Ok(admin::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|a| a.disabled_at.is_none())
        .and_then(AdminUser::from_model))
}

pub async fn count(db: &DatabaseConnection) -> Result<u64, DbErr> {
    admin::Entity::find().count(db).await
}

/// Records an admin action with the state before and after.
pub async fn record(
    writer: &Writer,
    who: &AdminUser,
    action: &str,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), DbErr> {
    let row = audit::ActiveModel {
        admin_id: Set(Some(who.id)),
        admin_email: Set(who.email.clone()),
        action: Set(action.into()),
        target: Set(target.chars().take(254).collect()),
        before: Set(before.map(|v| v.to_string())),
        after: Set(after.map(|v| v.to_string())),
        created_at: Set(OffsetDateTime::now_utc()),
        ..Default::default()
    };
    let _permit = writer.permit().await;
    audit::Entity::insert(row)
        .exec_without_returning(&writer.db)
        .await?;
    Ok(())
}

/// The newest audit entries.
pub async fn audit_log(db: &DatabaseConnection, limit: u64) -> Result<Vec<audit::Model>, DbErr> {
    audit::Entity::find()
        .order_by_desc(audit::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// On an install without admins: a fresh one-time setup token (the link
/// is printed to the log). `None` when an admin exists.
pub async fn issue_setup_token(writer: &Writer) -> Result<Option<String>, DbErr> {
    if count(&writer.db).await? > 0 {
        return Ok(None);
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let now = OffsetDateTime::now_utc();
    let row = setup_token::ActiveModel {
        token_hash: Set(token_hash(&token)),
        expires_at: Set(now + SETUP_TTL),
        used_at: Set(None),
        created_at: Set(now),
    };
    let _permit = writer.permit().await;
    setup_token::Entity::insert(row)
        .exec_without_returning(&writer.db)
        .await?;
    Ok(Some(token))
}

/// True while `token` can create the first owner.
pub async fn setup_token_valid(db: &DatabaseConnection, token: &str) -> Result<bool, DbErr> {
    if count(db).await? > 0 {
        return Ok(false);
    }
    Ok(setup_token::Entity::find_by_id(token_hash(token))
        .one(db)
        .await?
        .is_some_and(|t| t.used_at.is_none() && t.expires_at > OffsetDateTime::now_utc()))
}

/// Creates the first owner with a setup token, once.
pub async fn complete_setup(
    writer: &Writer,
    token: &str,
    email: &str,
    name: &str,
    password: &str,
) -> Result<AdminUser, AdminError> {
    if !setup_token_valid(&writer.db, token).await? {
        return Err(AdminError::Invalid(
            "this setup link was used or has expired".into(),
        ));
    }
    // A form the shopper must correct does not use the link up.
    normalise_email(email)?;
    check_password(password)?;
    let used = {
        let _permit = writer.permit().await;
        setup_token::Entity::update_many()
            .col_expr(
                setup_token::Column::UsedAt,
                Expr::value(OffsetDateTime::now_utc()),
            )
            .filter(setup_token::Column::TokenHash.eq(token_hash(token)))
            .filter(setup_token::Column::UsedAt.is_null())
            .exec(&writer.db)
            .await?
            .rows_affected
    };
    if used != 1 {
        return Err(AdminError::Invalid("this setup link was used".into()));
    }
    create(writer, email, name, Role::Owner, password).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_table_says() {
        use Permission::*;
        assert!(Role::Owner.allows(Own) && Role::Owner.allows(Manage));
        assert!(!Role::Staff.allows(Own) && Role::Staff.allows(Manage));
        assert!(!Role::Support.allows(Manage) && Role::Support.allows(Converse));
        assert!(Role::Support.allows(View));
        assert_eq!(Role::parse("Support"), Some(Role::Support));
        assert_eq!(Role::parse("root"), None);
    }
}
