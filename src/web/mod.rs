//! What every browser-facing route shares: the error type, rendering with
//! HTTP caching, fingerprinted static assets and the page layout.

pub mod assets;
pub mod error;
pub mod http;
pub mod layout;
pub mod session;
pub mod visitor;
