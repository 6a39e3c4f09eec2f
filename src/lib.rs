//! Kedai: one binary that runs an online shop with a WhatsApp shopping
//! assistant. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod alerts;
pub mod analytics;
pub mod app;
pub mod cart;
pub mod catalog;
pub mod chat;
pub mod checkout;
pub mod cli;
pub mod commands;
pub mod config;
pub mod customers;
pub mod events;
pub mod knowledge;
pub mod logistics;
pub mod notify;
pub mod ops;
pub mod orders;
pub mod platform;
pub mod web;
