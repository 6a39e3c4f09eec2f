//! The one integration-test binary: every test boots the real app on a
//! random port against its own fresh database, on SQLite and on PostgreSQL.

mod helpers;
mod shop;

mod accounts;
mod admin;
mod admin_catalog;
mod alerts;
mod alerts_rules;
mod browser;
mod cache;
mod cart;
mod chat;
mod chat_crash;
mod checkout;
mod cli;
mod converse;
mod crash;
mod db;
mod events;
mod integrations;
mod kb_adapters;
mod knowledge;
mod objects;
mod ops;
mod orders;
mod queue;
mod replicas;
mod schema;
mod storefront;
mod stripe;
mod webhooks;
