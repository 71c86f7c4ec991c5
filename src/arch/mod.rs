//! The only module that executes ARMv7-A system instructions.
//!
//! Everything here is compiled only for `target_arch = "arm"`; host builds of the crate
//! see none of it. Other modules reach the hardware only through these functions and
//! through the TLB backends in [`crate::tlb`].

pub mod barrier;
pub mod cp15;
pub mod tlbi;
