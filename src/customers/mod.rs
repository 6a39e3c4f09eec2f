//! Customer accounts: sign-up, sign-in with throttling, and the account's
//! identity for checkout and order history. Passwords are argon2id hashes,
//! computed off the async workers.

pub mod entity;
pub mod model;
mod repo;
pub mod routes;
pub mod views;

use std::time::Duration;

use sea_orm::DatabaseConnection;

use crate::platform::cache::{Cache, RateDecision};
use crate::platform::db::Writer;
pub use model::{normalise_email, normalise_phone};

/// Sign-in attempts allowed per account and per client address, per window.
pub const ATTEMPTS_PER_ACCOUNT: u32 = 5;
pub const ATTEMPTS_PER_ADDRESS: u32 = 20;
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub struct Customer {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub whatsapp_opt_in: bool,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct SignUp {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub password: String,
    /// A checked checkbox posts "on"; an unchecked one posts nothing.
    #[serde(default)]
    pub whatsapp_opt_in: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("an account with this email or WhatsApp number already exists")]
    Taken,
    #[error("too many attempts; try again in {0} seconds")]
    Throttled(u64),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for AccountError {
    fn from(error: sea_orm::DbErr) -> Self {
        AccountError::Internal(error.into())
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| anyhow::anyhow!("worker failed: {error}"))
}

/// Creates an account and returns its id.
pub async fn sign_up(writer: &Writer, form: &SignUp) -> Result<i64, AccountError> {
    let email = normalise_email(&form.email).ok_or_else(|| {
        AccountError::Invalid("Enter an email address like name@example.com.".into())
    })?;
    let name = form.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AccountError::Invalid("Enter your name.".into()));
    }
    let phone = match form.phone.trim() {
        "" => None,
        raw => Some(normalise_phone(raw).ok_or_else(|| {
            AccountError::Invalid(
                "Enter the WhatsApp number with its country code, like +60123456789.".into(),
            )
        })?),
    };
    if !(model::MIN_PASSWORD..=model::MAX_PASSWORD).contains(&form.password.chars().count()) {
        return Err(AccountError::Invalid(format!(
            "Choose a password of {} to {} characters.",
            model::MIN_PASSWORD,
            model::MAX_PASSWORD
        )));
    }
    let password = form.password.clone();
    let password_hash = blocking(move || model::hash_password(&password)).await??;
    let id = repo::create(
        writer,
        repo::NewCustomer {
            email,
            name: name.to_string(),
            whatsapp_opt_in: form.whatsapp_opt_in.is_some() && phone.is_some(),
            phone,
            password_hash,
        },
    )
    .await?
    .ok_or(AccountError::Taken)?;
    Ok(id)
}

/// A hash of a random password, checked when the email is unknown so an
/// unknown account takes as long to refuse as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    model::hash_password(&uuid::Uuid::new_v4().to_string()).unwrap_or_default()
});

/// Checks a sign-in, throttled per account and per client address.
/// `Ok(None)` means wrong email or password (deliberately not which).
pub async fn authenticate(
    db: &DatabaseConnection,
    cache: &dyn Cache,
    email: &str,
    password: &str,
    client: &str,
) -> Result<Option<i64>, AccountError> {
    let email = normalise_email(email).unwrap_or_default();
    for (key, limit) in [
        (format!("login:account:{email}"), ATTEMPTS_PER_ACCOUNT),
        (format!("login:address:{client}"), ATTEMPTS_PER_ADDRESS),
    ] {
        let decision = cache
            .hit(&key, limit, ATTEMPT_WINDOW)
            .await
            .map_err(|error| AccountError::Internal(error.into()))?;
        if let RateDecision::Limited { retry_after } = decision {
            metrics::counter!("kedai_login_throttled_total").increment(1);
            return Err(AccountError::Throttled(retry_after.as_secs().max(1)));
        }
    }
    let account = repo::find_by_email(db, &email).await?;
    let stored = account.as_ref().and_then(|a| a.password_hash.clone());
    let password = password.to_string();
    let matches = blocking(move || {
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        model::verify_password(&password, &stored)
    })
    .await?;
    Ok(account.filter(|_| matches).map(|a| a.id))
}

/// The fields of the profile form.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub whatsapp_opt_in: Option<String>,
}

/// Validates and saves a profile.
pub async fn update_profile(writer: &Writer, id: i64, form: &Profile) -> Result<(), AccountError> {
    let email = normalise_email(&form.email).ok_or_else(|| {
        AccountError::Invalid("Enter an email address like name@example.com.".into())
    })?;
    let name = form.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AccountError::Invalid("Enter your name.".into()));
    }
    let phone = match form.phone.trim() {
        "" => None,
        raw => Some(normalise_phone(raw).ok_or_else(|| {
            AccountError::Invalid(
                "Enter the WhatsApp number with its country code, like +60123456789.".into(),
            )
        })?),
    };
    let opt_in = form.whatsapp_opt_in.is_some() && phone.is_some();
    if !repo::update_profile(writer, id, name.to_string(), email, phone, opt_in).await? {
        return Err(AccountError::Taken);
    }
    Ok(())
}

/// Changes the password after checking the current one (throttled like a
/// sign-in, so it cannot be used to guess).
pub async fn change_password(
    writer: &Writer,
    cache: &dyn Cache,
    id: i64,
    current: &str,
    new: &str,
    client: &str,
) -> Result<(), AccountError> {
    let customer = find(&writer.db, id)
        .await?
        .ok_or_else(|| AccountError::Invalid("No such account.".into()))?;
    if authenticate(&writer.db, cache, &customer.email, current, client).await? != Some(id) {
        return Err(AccountError::Invalid(
            "The current password is not right.".into(),
        ));
    }
    if !(model::MIN_PASSWORD..=model::MAX_PASSWORD).contains(&new.chars().count()) {
        return Err(AccountError::Invalid(format!(
            "Choose a password of {} to {} characters.",
            model::MIN_PASSWORD,
            model::MAX_PASSWORD
        )));
    }
    let new = new.to_string();
    let hash = blocking(move || model::hash_password(&new)).await??;
    repo::update_password(writer, id, hash).await?;
    Ok(())
}

pub async fn find(db: &DatabaseConnection, id: i64) -> Result<Option<Customer>, sea_orm::DbErr> {
    Ok(repo::find_by_id(db, id).await?.map(|c| Customer {
        id: c.id,
        email: c.email.unwrap_or_default(),
        name: c.name,
        phone: c.phone,
        whatsapp_opt_in: c.whatsapp_opt_in,
    }))
}
