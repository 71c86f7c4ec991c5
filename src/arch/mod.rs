//! The only module that executes ARMv7-A system instructions.
//!
//! The instruction modules (`barrier`, `cp15`, `tlbi`) are compiled only for
//! `target_arch = "arm"`; host builds of the crate see none of them. [`fields`] (register
//! layouts, no instructions) and [`root`] (typed table roots and the register values of
//! the MMU bring-up, pure functions) are compiled everywhere so that host code and host tests can
//! decode register values with the same definitions. Other modules reach the hardware only
//! through these functions and through the TLB backends in [`crate::tlb`].

#[cfg(target_arch = "arm")]
pub mod ats;
#[cfg(target_arch = "arm")]
pub mod barrier;
pub mod context;
#[cfg(target_arch = "arm")]
pub mod cp15;
pub mod cpu;
pub mod error;
pub mod features;
pub mod fields;
pub mod insn;
#[cfg(target_arch = "arm")]
pub mod lpae;
pub mod memattr;
#[cfg(target_arch = "arm")]
pub mod mmu;
pub mod root;
pub mod switch;
#[cfg(target_arch = "arm")]
pub mod tlbi;
