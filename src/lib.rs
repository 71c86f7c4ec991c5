//! # armv7-mm
//!
//! Page tables, TLB maintenance and a Linux-style `mmu_gather` for `no_std` kernels on
//! ARMv7-A.
//!
//! Layout:
//! - [`addr`]: typed virtual/physical addresses, pages, frames and ranges;
//! - [`memory`]: the kernel's memory model, through which every frame comes and goes;
//! - [`sink`]: what walkers report when they clear entries or unlink tables;
//! - [`tlb`]: the TLB backend interface and its implementations;
//! - [`table`]: the one table walker (`AddressSpace<F, M>`), generic over the descriptor
//!   format, with [`error`] the typed errors of its operations;
//! - [`short`]: VMSAv7 short-descriptor page tables (`short::AddressSpace`);
//! - [`lpae`]: long-descriptor (LPAE) page tables (`lpae::AddressSpace`), through the same
//!   walker;
//! - [`gather`]: the `MmuGather`: invalidate once, then free what was unmapped;
//! - [`asid`]: 8-bit ASID allocation with generations, and the switch to an address space;
//! - [`bringup`]: the MMU bring-up over a kernel space and the checked activation of
//!   address spaces (typed roots, [`arch::root::TableRoot`]);
//! - [`switch`]: the context-switch programs (park `TTBR0`, change the ASID, install the
//!   table) for both formats, run on the CPU or on the host CPU model;
//! - [`locked`]: the address-space lock and what must be held for each operation;
//! - [`lockless`]: software table walks without the lock, synced with table freeing;
//! - [`hazards`]: every silicon hazard handled, its source, its code and its test;
//! - [`arch`]: the one place with CP15 instructions and barriers (those only on
//!   `target_arch = "arm"`; the register layouts in `arch::fields` everywhere).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod addr;
pub mod arch;
pub mod asid;
pub mod bringup;
pub mod error;
pub mod gather;
pub mod hazards;
pub mod locked;
pub mod lockless;
pub mod lpae;
pub mod memory;
pub mod short;
pub mod sink;
pub mod switch;
pub mod table;
pub mod tlb;

pub use addr::{Frame, Page, PhysAddr, VirtAddr, VirtEnd, VirtRange, PAGE_SIZE};
pub use arch::root::TableRoot;
pub use error::Error;
pub use gather::{FlushReport, InFlight, MmuGather, Scope};
pub use memory::{MappedRun, Memory};
pub use sink::{ChangedLeaf, ClearedLeaf, MapSize, UnmapSink};
pub use tlb::{Asid, TlbBackend, TlbCounters};
