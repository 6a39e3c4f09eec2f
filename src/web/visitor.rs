//! Who is browsing, without an account: a random visitor token in an
//! HttpOnly cookie, and CSRF tokens bound to it.
//!
//! The CSRF token of a visitor is HMAC-SHA256(server.secret_key, token), so
//! no server state is needed and every replica sharing the secret accepts
//! it. A form post whose token does not match the visitor's cookie is
//! refused with 403 before anything changes. Pages that carry a token are
//! personal and never publicly cached.

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub const COOKIE: &str = "kedai_visitor";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visitor {
    pub token: String,
    /// True when the request carried no valid cookie: the response must set it.
    pub is_new: bool,
}

impl Visitor {
    /// The visitor of a request: the cookie's token when it is well formed,
    /// otherwise a new random one.
    pub fn of(req: &HttpRequest) -> Visitor {
        match req.cookie(COOKIE) {
            Some(cookie) if is_token(cookie.value()) => Visitor {
                token: cookie.value().to_string(),
                is_new: false,
            },
            _ => Visitor {
                token: uuid::Uuid::new_v4().simple().to_string(),
                is_new: true,
            },
        }
    }

    /// The cookie to set: HttpOnly, SameSite=Lax, Secure on https, 30 days.
    pub fn cookie(&self, secure: bool) -> Cookie<'static> {
        Cookie::build(COOKIE, self.token.clone())
            .path("/")
            .http_only(true)
            .secure(secure)
            .same_site(SameSite::Lax)
            .max_age(CookieDuration::days(30))
            .finish()
    }
}

impl Visitor {
    /// Sets the visitor cookie on a response when the request had none.
    pub fn remember(
        &self,
        response: &mut actix_web::HttpResponse,
        secure: bool,
    ) -> Result<(), super::error::AppError> {
        if self.is_new {
            response.add_cookie(&self.cookie(secure)).map_err(|error| {
                super::error::AppError::Internal(anyhow::anyhow!("could not set a cookie: {error}"))
            })?;
        }
        Ok(())
    }
}

fn is_token(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Issues and checks CSRF tokens.
#[derive(Clone)]
pub struct Csrf {
    key: SecretString,
}

impl Csrf {
    pub fn new(key: SecretString) -> Csrf {
        Csrf { key }
    }

    fn mac(&self, visitor: &Visitor) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(b"csrf:");
        mac.update(visitor.token.as_bytes());
        mac
    }

    pub fn token_for(&self, visitor: &Visitor) -> String {
        hex::encode(self.mac(visitor).finalize().into_bytes())
    }

    /// Constant-time check of a submitted token. A visitor without a cookie
    /// (a new one) never passes: a real form always came with the cookie.
    pub fn verify(&self, visitor: &Visitor, submitted: &str) -> bool {
        if visitor.is_new {
            return false;
        }
        match hex::decode(submitted) {
            Ok(bytes) => self.mac(visitor).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visitor(token: &str) -> Visitor {
        Visitor {
            token: token.to_string(),
            is_new: false,
        }
    }

    #[test]
    fn tokens_verify_for_their_visitor_only() {
        let csrf = Csrf::new(SecretString::from("server-secret".to_string()));
        let alice = visitor(&"a".repeat(32));
        let bob = visitor(&"b".repeat(32));
        let token = csrf.token_for(&alice);
        assert!(csrf.verify(&alice, &token));
        assert!(!csrf.verify(&bob, &token));
        assert!(!csrf.verify(&alice, ""));
        assert!(!csrf.verify(&alice, "zz"));
        let other_server = Csrf::new(SecretString::from("another".to_string()));
        assert!(!other_server.verify(&alice, &token));
        let new = Visitor {
            is_new: true,
            ..alice.clone()
        };
        assert!(!csrf.verify(&new, &token));
    }

    #[test]
    fn only_well_formed_cookies_are_accepted() {
        assert!(is_token(&"0123456789abcdef".repeat(2)));
        assert!(!is_token("short"));
        assert!(!is_token(&"g".repeat(32)));
    }
}

/// The visitor of a form post, once its CSRF token checks out; 403 (and a
/// counted, logged rejection) otherwise.
pub fn verified_visitor(
    req: &HttpRequest,
    csrf: &Csrf,
    submitted: &str,
) -> Result<Visitor, super::error::AppError> {
    let visitor = Visitor::of(req);
    if !csrf.verify(&visitor, submitted) {
        metrics::counter!("kedai_csrf_rejected_total").increment(1);
        tracing::warn!(path = req.path(), "form post without a valid CSRF token");
        return Err(super::error::AppError::Forbidden);
    }
    Ok(visitor)
}

/// Signs order links, so a guest reaches their order from the
/// confirmation page (or a message) and nobody can guess another's.
#[derive(Clone)]
pub struct OrderLinks {
    key: SecretString,
}

impl OrderLinks {
    pub fn new(key: SecretString) -> OrderLinks {
        OrderLinks { key }
    }

    fn mac(&self, public_id: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(b"order:");
        mac.update(public_id.as_bytes());
        mac
    }

    /// `/orders/<public id>?t=<signature>`
    pub fn url(&self, public_id: &str) -> String {
        let signature = hex::encode(&self.mac(public_id).finalize().into_bytes()[..16]);
        format!("/orders/{public_id}?t={signature}")
    }

    pub fn verify(&self, public_id: &str, signature: &str) -> bool {
        match hex::decode(signature) {
            Ok(bytes) if bytes.len() == 16 => {
                self.mac(public_id).verify_truncated_left(&bytes).is_ok()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod order_link_tests {
    use super::*;

    #[test]
    fn order_links_verify_for_their_order_only() {
        let links = OrderLinks::new(SecretString::from("secret".to_string()));
        let url = links.url("order-a");
        let signature = url.split_once("?t=").unwrap().1;
        assert!(links.verify("order-a", signature));
        assert!(!links.verify("order-b", signature));
        assert!(!links.verify("order-a", "00"));
        assert!(!links.verify("order-a", ""));
    }
}
