//! shm-arena (skeleton, being written).
pub mod codec;
mod error;
pub use error::{Error, Result, Role};
