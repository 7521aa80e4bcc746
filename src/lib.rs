//! unionfs: a FUSE union filesystem that serves container image layers straight
//! from their tarballs.
//!
//! # Architecture
//!
//! ```text
//! layer tars ──scan once──▶ tar::LayerIndex (cached on disk) ─┐
//!                                                             ▼
//!                                stack::Stack — lookup/readdir across layers,
//!                                top wins, whiteouts hide, opaque stops
//!                                                             │
//!                                fuse adapter (inodes, handles, replies)
//! ```
//!
//! Each module knows nothing of the ones above it: [`tar`] is the tar format and
//! its index, [`stack`] is overlayfs merge semantics over indexes, and the FUSE
//! adapter only translates.
//!
//! # Glossary (overlayfs words, used verbatim)
//! - *layer*: one read-only tar; *lower*: any layer; *upper*: the writable directory.
//! - *merged*: the union view; a *merged directory* has contributions from several layers.
//! - *whiteout*: `.wh.NAME`, hides NAME below; *opaque*: `.wh..wh..opq`, a directory
//!   that does not merge with those below.
#![deny(missing_docs)]

pub mod blob;
pub mod cache;
pub mod commit;
pub mod error;
pub mod fuse;
pub mod idmap;
pub mod image;
pub mod inode;
pub mod inspect;
pub mod layers;
pub mod mount;
pub mod overlay;
pub mod registry;
pub mod report;
pub mod stack;
pub mod sys;
pub mod tar;
pub mod upper;
pub mod whiteout;

pub use error::{Error, Result};
