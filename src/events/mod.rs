//! Domain events: the outbox written in the same transaction as each change,
//! and the idempotency keys of provider events already processed.

pub mod entity;
