//! Business modules. Each is a folder whose `mod.rs` is its public face (traits, their plain
//! data types, `routes`, a constructor); everything else in it is private. Modules call each
//! other only through those traits, wired by `app.rs`. See the README, "Adding a module".
pub mod admin;
pub mod billing;
pub mod catalog;
pub mod chat;
pub mod identity;
pub mod media;
pub mod privacy;
