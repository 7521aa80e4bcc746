//! Subcommands that have a file of their own.

pub mod commit;
pub mod inspect;
