//! Signed-in sessions: a random id in an HttpOnly cookie, the state in the
//! cache (in-process, or Redis shared by replicas), with sliding expiry.
//! A new id is issued at every sign-in, so a planted cookie never becomes
//! a signed-in session.

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use serde::{Deserialize, Serialize};

use crate::platform::cache::{Cache, CacheError};

pub const COOKIE: &str = "kedai_session";
/// The back-office's session cookie (separate from shoppers').
pub const ADMIN_COOKIE: &str = "kedai_admin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// The signed-in account: a customer's id, or an admin's in an admin
    /// session.
    pub customer_id: i64,
    /// Unix time of sign-in.
    pub signed_in_at: i64,
}

#[derive(Clone)]
pub struct Sessions {
    cache: Arc<dyn Cache>,
    ttl: Duration,
    cookie: &'static str,
    prefix: &'static str,
}

fn well_formed(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Sessions {
    pub fn new(cache: Arc<dyn Cache>, ttl: Duration) -> Sessions {
        Sessions {
            cache,
            ttl,
            cookie: COOKIE,
            prefix: "session:",
        }
    }

    /// Admin sessions: their own cookie and keys, so a shopper's session
    /// never opens the back-office.
    pub fn for_admins(cache: Arc<dyn Cache>, ttl: Duration) -> Sessions {
        Sessions {
            cache,
            ttl,
            cookie: ADMIN_COOKIE,
            prefix: "admin-session:",
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// The request's session, extending its life (sliding expiry).
    pub async fn current(
        &self,
        req: &HttpRequest,
    ) -> Result<Option<(String, SessionData)>, CacheError> {
        let Some(cookie) = req.cookie(self.cookie) else {
            return Ok(None);
        };
        let id = cookie.value().to_string();
        if !well_formed(&id) {
            return Ok(None);
        }
        let Some(bytes) = self.cache.get(&self.key(&id)).await? else {
            return Ok(None);
        };
        let Ok(data) = serde_json::from_slice::<SessionData>(&bytes) else {
            return Ok(None);
        };
        self.cache.touch(&self.key(&id), self.ttl).await?;
        Ok(Some((id, data)))
    }

    /// Starts a session for a customer; returns its new id.
    pub async fn start(&self, customer_id: i64) -> Result<String, CacheError> {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let data = SessionData {
            customer_id,
            signed_in_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        let bytes = serde_json::to_vec(&data).unwrap_or_default();
        self.cache.set(&self.key(&id), &bytes, self.ttl).await?;
        Ok(id)
    }

    pub async fn end(&self, id: &str) -> Result<(), CacheError> {
        self.cache.delete(&self.key(id)).await
    }

    pub fn cookie(&self, id: &str, secure: bool) -> Cookie<'static> {
        Cookie::build(self.cookie, id.to_string())
            .path("/")
            .http_only(true)
            .secure(secure)
            .same_site(SameSite::Lax)
            .max_age(CookieDuration::seconds(self.ttl.as_secs() as i64))
            .finish()
    }

    /// A cookie that removes the session cookie.
    pub fn removal(&self, secure: bool) -> Cookie<'static> {
        let mut cookie = self.cookie("", secure);
        cookie.make_removal();
        cookie
    }
}
