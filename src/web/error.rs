//! The one error type route handlers return, each variant documented by
//! the HTTP status it becomes. Browsers get a page in the shop's style;
//! internal causes are logged with their chain and never shown.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use super::http::HTML;
use super::layout::Layout;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 404: no such page, or not one this visitor may see.
    #[error("not found")]
    NotFound,
    /// 400: the request itself is wrong; the message is shown as is.
    #[error("{0}")]
    BadRequest(String),
    /// 403: a form without a valid CSRF token; nothing was changed.
    #[error("forbidden")]
    Forbidden,
    /// 503: a dependency is down or the process is shutting down.
    #[error("service unavailable")]
    Unavailable,
    /// 500: anything else. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for AppError {
    fn from(error: sea_orm::DbErr) -> Self {
        AppError::Internal(anyhow::Error::new(error).context("database error"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub layout: Layout<'a>,
    pub status: u16,
    pub heading: &'a str,
    pub message: &'a str,
}

impl ErrorPage<'_> {
    /// Renders the error page; falls back to plain text if even that fails.
    pub fn respond(status: StatusCode, heading: &str, message: &str) -> HttpResponse {
        let page = ErrorPage {
            layout: Layout::new(format!("{heading} — Kedai"), &[]),
            status: status.as_u16(),
            heading,
            message,
        };
        match page.render() {
            Ok(body) => HttpResponse::build(status)
                .content_type(HTML)
                .insert_header(("cache-control", "no-store"))
                .body(body),
            Err(_) => HttpResponse::build(status).body(message.to_string()),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Forbidden => StatusCode::FORBIDDEN,
            AppError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::NotFound => ErrorPage::respond(
                StatusCode::NOT_FOUND,
                "Page not found",
                "We looked everywhere, but there is nothing at this address. It may have moved or sold out for good.",
            ),
            AppError::BadRequest(message) => {
                ErrorPage::respond(StatusCode::BAD_REQUEST, "That did not work", message)
            }
            AppError::Forbidden => ErrorPage::respond(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "For your safety we did not change anything. Please go back, reload the page and try again.",
            ),
            AppError::Unavailable => ErrorPage::respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "Back in a moment",
                "The shop is busy or restarting. Please try again in a few seconds.",
            ),
            AppError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                ErrorPage::respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Sorry, something broke on our side. It has been logged and we will look into it.",
                )
            }
        }
    }
}

/// The default service: any path no route matched.
pub async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}
