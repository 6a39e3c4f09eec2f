//! Cart: schema only so far; behaviour arrives with the shop capability.

pub mod entity;
