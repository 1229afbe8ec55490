//! Helpers shared by several test files (each `mod common;` compiles its own copy, and not
//! every file uses every item).
#![allow(dead_code)]

pub mod child;
pub mod config;
pub mod placement;
pub mod proc;
pub mod rng;
