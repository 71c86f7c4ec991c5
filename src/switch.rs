//! The context-switch programs, at their old path.
//!
//! They moved to [`crate::arch::switch`] (the architected order of `TTBR0`, `CONTEXTIDR`
//! and `TTBCR` writes is knowledge of the CPU, and the `arch` layer's MMU functions run
//! them); this path re-exports them for one release (see CHANGELOG.md) and will then be
//! removed.

pub use crate::arch::switch::*;
