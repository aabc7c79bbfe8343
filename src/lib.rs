//! Companion: the backend of an AI-companion product, as one modular-monolith process.
//! See the README for the architecture and DESIGN.md for the contract.

pub mod app;
pub mod config;
pub mod modules;
pub mod platform;

pub use app::{Application, ApplicationBuilder, StopHandle};
pub use config::Settings;
