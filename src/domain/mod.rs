//! Domain rules: pure functions from params, stored records and `now` to decisions.
//!
//! Nothing here touches the network, the database or the clock; every function can be tested
//! with plain values.

pub mod client;
pub mod code;
pub mod cursor;
pub mod idempotency;
pub mod ids;
pub mod pkce;
mod policy;
pub mod session;
pub mod token;
pub mod validate;

pub use policy::{Lifetime, Policy};
