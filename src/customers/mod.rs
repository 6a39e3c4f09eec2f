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

use crate::platform::cache::{Cache, first_limit_reached};
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
    /// The shopper proved `phone` is theirs by sending a code from it.
    pub phone_verified: bool,
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

/// Name, email and WhatsApp number as sign-up and the profile form take them.
struct Details {
    name: String,
    email: String,
    phone: Option<String>,
    /// Only with a number to send to.
    whatsapp_opt_in: bool,
}

impl Details {
    fn check(name: &str, email: &str, phone: &str, opt_in: bool) -> Result<Details, AccountError> {
        let email = normalise_email(email).ok_or_else(|| {
            AccountError::Invalid("Enter an email address like name@example.com.".into())
        })?;
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(AccountError::Invalid("Enter your name.".into()));
        }
        let phone = match phone.trim() {
            "" => None,
            raw => Some(
                normalise_phone(raw)
                    .ok_or_else(|| AccountError::Invalid(model::PHONE_HINT.into()))?,
            ),
        };
        Ok(Details {
            name: name.to_string(),
            email,
            whatsapp_opt_in: opt_in && phone.is_some(),
            phone,
        })
    }
}

/// Checks a new password's length and hashes it off the async workers.
async fn new_password_hash(password: &str) -> Result<String, AccountError> {
    if !(model::MIN_PASSWORD..=model::MAX_PASSWORD).contains(&password.chars().count()) {
        return Err(AccountError::Invalid(format!(
            "Choose a password of {} to {} characters.",
            model::MIN_PASSWORD,
            model::MAX_PASSWORD
        )));
    }
    let password = password.to_string();
    Ok(blocking(move || model::hash_password(&password)).await??)
}

/// Creates an account and returns its id.
pub async fn sign_up(writer: &Writer, form: &SignUp) -> Result<i64, AccountError> {
    let details = Details::check(
        &form.name,
        &form.email,
        &form.phone,
        form.whatsapp_opt_in.is_some(),
    )?;
    let password_hash = new_password_hash(&form.password).await?;
    let id = repo::create(
        writer,
        repo::NewCustomer {
            email: details.email,
            name: details.name,
            whatsapp_opt_in: details.whatsapp_opt_in,
            phone: details.phone,
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
    let limits = [
        (format!("login:account:{email}"), ATTEMPTS_PER_ACCOUNT),
        (format!("login:address:{client}"), ATTEMPTS_PER_ADDRESS),
    ];
    if let Some(wait) = first_limit_reached(cache, &limits, ATTEMPT_WINDOW)
        .await
        .map_err(|error| AccountError::Internal(error.into()))?
    {
        metrics::counter!("kedai_login_throttled_total").increment(1);
        return Err(AccountError::Throttled(wait));
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
    let details = Details::check(
        &form.name,
        &form.email,
        &form.phone,
        form.whatsapp_opt_in.is_some(),
    )?;
    if !repo::update_profile(
        writer,
        id,
        details.name,
        details.email,
        details.phone,
        details.whatsapp_opt_in,
    )
    .await?
    {
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
    let hash = new_password_hash(new).await?;
    repo::update_password(writer, id, hash).await?;
    Ok(())
}

/// How long a reset link works.
pub const RESET_TTL: Duration = Duration::from_secs(30 * 60);

fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Sends a single-use, expiring reset link to the WhatsApp number of the
/// account matching `contact` (an email or a number). Says nothing about
/// whether one matched; throttled per contact and per client address.
pub async fn request_password_reset(
    writer: &Writer,
    cache: &dyn Cache,
    contact: &str,
    client: &str,
    public_url: &str,
    log_links: bool,
) -> Result<(), AccountError> {
    let account = if let Some(email) = normalise_email(contact) {
        repo::find_by_email(&writer.db, &email).await?
    } else if let Some(phone) = normalise_phone(contact) {
        repo::find_by_phone(&writer.db, &phone).await?
    } else {
        return Err(AccountError::Invalid(
            "Enter your email address or WhatsApp number.".into(),
        ));
    };
    let limits = [
        (
            format!("reset:contact:{}", contact.trim().to_lowercase()),
            3,
        ),
        (format!("reset:address:{client}"), 20),
    ];
    if let Some(wait) = first_limit_reached(cache, &limits, Duration::from_secs(3600))
        .await
        .map_err(|error| AccountError::Internal(error.into()))?
    {
        return Err(AccountError::Throttled(wait));
    }
    let Some((customer_id, phone)) = account.and_then(|a| a.phone.map(|phone| (a.id, phone)))
    else {
        return Ok(());
    };
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let expires_at = time::OffsetDateTime::now_utc() + RESET_TTL;
    let link = format!("{}/account/reset/{token}", public_url.trim_end_matches('/'));
    let text = format!(
        "Kedai: someone asked to reset your password. If it was you, open {link} within 30 minutes. If not, ignore this message."
    );
    // The message goes out through the event bus: retried if WhatsApp is
    // down, and no call to WhatsApp inside this request (whose timing
    // would tell whether an account matched).
    repo::create_reset(
        writer,
        customer_id,
        token_hash(&token),
        expires_at,
        serde_json::json!({ "customer_id": customer_id, "phone": phone, "link": link, "text": text }),
    )
    .await?;
    if log_links {
        // Only the embedded outbox does this, so a demo can be followed
        // without a phone; the Twilio adapter never logs message bodies.
        tracing::info!(link = %link, "password reset link recorded (embedded messaging)");
    }
    Ok(())
}

/// True when the reset token is unused and unexpired.
pub async fn reset_token_is_valid(
    db: &DatabaseConnection,
    token: &str,
) -> Result<bool, sea_orm::DbErr> {
    Ok(repo::valid_reset(db, &token_hash(token)).await?.is_some())
}

/// Sets a new password through a reset token; returns the customer.
pub async fn reset_password(writer: &Writer, token: &str, new: &str) -> Result<i64, AccountError> {
    let hash = new_password_hash(new).await?;
    repo::consume_reset(writer, &token_hash(token), hash)
        .await?
        .ok_or_else(|| {
            AccountError::Invalid("This reset link has expired or was already used.".into())
        })
}

pub async fn find(db: &DatabaseConnection, id: i64) -> Result<Option<Customer>, sea_orm::DbErr> {
    Ok(repo::find_by_id(db, id).await?.map(|c| Customer {
        id: c.id,
        email: c.email.unwrap_or_default(),
        name: c.name,
        phone: c.phone,
        whatsapp_opt_in: c.whatsapp_opt_in,
        phone_verified: c.phone_verified_at.is_some(),
    }))
}

/// How long a WhatsApp verification code works, and how many wrong codes
/// void it.
pub const PHONE_CODE_TTL: Duration = Duration::from_secs(30 * 60);
pub const PHONE_CODE_ATTEMPTS: i32 = 5;

pub use repo::CodeCheck;

/// Makes a six-digit code that proves the account's WhatsApp number once
/// the shopper sends it from that number (`LINK 123456`); returns the code
/// to show. A new code replaces the one before.
pub async fn start_phone_verification(writer: &Writer, id: i64) -> Result<String, AccountError> {
    // 122 random bits from the OS's generator; the modulo bias over a
    // million is far below anything a guesser could use.
    let code = format!("{:06}", uuid::Uuid::new_v4().as_u128() % 1_000_000);
    let expires_at = time::OffsetDateTime::now_utc() + PHONE_CODE_TTL;
    if !repo::set_phone_code(writer, id, token_hash(&code), expires_at).await? {
        return Err(AccountError::Invalid(
            "Add your WhatsApp number to your details first.".into(),
        ));
    }
    Ok(code)
}

/// Checks a code that arrived on WhatsApp from `phone` (Twilio vouches for
/// the sender); a match marks the account's number verified.
pub async fn verify_phone_code(
    writer: &Writer,
    phone: &str,
    code: &str,
) -> Result<CodeCheck, sea_orm::DbErr> {
    repo::check_phone_code(writer, phone, &token_hash(code), PHONE_CODE_ATTEMPTS).await
}

/// The account whose verified WhatsApp number is `phone`: the only account
/// the assistant may tell that number about.
pub async fn verified_by_phone(
    db: &DatabaseConnection,
    phone: &str,
) -> Result<Option<i64>, sea_orm::DbErr> {
    repo::verified_by_phone(db, phone).await
}
