//! VMSAv7 short-descriptor translation tables (the classic two-level format).
//!
//! - [`descriptor`]: the L1/L2 entry formats as `bitflags` types;
//! - [`attrs`]: memory type, permissions, execute, global and shareable, and their one
//!   translation to bits (TEX remap; [`attrs::PRRR`]/[`attrs::NMRR`] are the values the
//!   kernel programs);
//! - [`Short`]: the [`Format`](crate::table::Format) the generic walker of
//!   [`crate::table`] uses for these tables, and [`Features`];
//! - [`AddressSpace`]: an L1 table and its L2 tables, with `map`, `translate`,
//!   `mappings` (walk), `protect`, `unmap` and `free_tables` — the generic
//!   [`crate::table::AddressSpace`] with the format filled in. The long-descriptor tables
//!   ([`crate::lpae`]) run through the same code; the rules below hold for both.
//!
//! # Table packing
//!
//! An L2 table is 1 KiB (256 entries for one 1 MiB region). The four L2 tables of the four
//! consecutive 1 MiB regions of one 4 MiB-aligned VA *group* share one 4 KiB frame; the
//! table of region `r` sits at byte offset `(r % 4) * 1 KiB`. The frame is allocated when
//! the first of the four tables is needed and is released only by
//! `AddressSpace::free_tables`, when all four tables are empty and the whole 4 MiB group
//! lies within `[floor, ceiling)` — the group is the unit of table freeing (as a PMD-sized
//! unit is in Linux). A densely mapped 1 GiB of 4 KiB pages therefore costs exactly 1 MiB
//! of L2 tables (256 frames) plus the L1 table (16 KiB); 256 MiB costs 256 KiB.
//!
//! Invariant: all L1 table entries of a group point into the same frame, at their slots;
//! the frame is found through any of them. A table entry is only ever removed by
//! `free_tables` (together with its siblings), so a frame can never become unreferenced
//! while allocated. A region of a group that has a frame can still be mapped by a section:
//! the region's slot in the frame then stays zero. A region that has an (even empty) L2
//! table is mapped with pages, never with a section, until its tables are freed: replacing
//! a table entry by a section would need break-before-make.
//!
//! Freeing a frame: every L1 entry that pointed into it is cleared and reported with
//! `UnmapSink::table_unlinked(region_va, 1 MiB, global)`, then the frame with
//! `table_memory_freed(frame, 1)`. The TLB flush therefore covers each 1 MiB region whose
//! table lived in the frame (one by-VA invalidate in each drops its walk-cache entry).
//!
//! # Break-before-make
//!
//! No operation writes one valid descriptor over another with a different output address
//! or size. `map` only writes entries that are invalid (and refuses with
//! [`MapError::AlreadyMapped`](crate::error::MapError) otherwise); replacing a mapping is
//! `unmap` → TLB flush (by the sink, e.g. the gather) → `map`. `protect` rewrites live
//! entries in place but changes only access permissions and XN (and PXN of sections),
//! which the architecture allows without break-before-make; memory type, shareability
//! and nG are kept.
//!
//! # Partial unmaps
//!
//! `unmap` and `protect` of part of a large page, section or supersection are refused with
//! [`UnmapError::PartialBlock`](crate::error::UnmapError), checked before anything is
//! cleared. `unmap_split` and `protect_split` split instead, with break-before-make
//! through the sink: the table frames are allocated first (a failure changes nothing), the
//! block is cleared, its invalidate reported and *flushed* (`UnmapSink::flush_now`), then
//! smaller leaves are written (old attributes outside the range, the change inside). The
//! API is explicit because the window between break and make unmaps the whole block for
//! every CPU: a kernel must not split the block holding its running code, its stack or
//! the tables' own mapping, and other CPUs touching the block in the window take a
//! translation fault to retry (see [`crate::table::AddressSpace::unmap_split`]).
//!
//! # Failure without loss
//!
//! `map` runs in two phases: it first walks the whole range deciding every mapping size,
//! checking overlap, reachability and PXN compatibility and counting the L2 frames it
//! will need; it then allocates all of them (chained through their own first word, no
//! side storage), returning them all if any allocation fails. Only then does it write. So
//! a failed `map` — at any allocation — leaves the tables bit-for-bit as they were and
//! holds no frame. `unmap`, `protect` and `free_tables` allocate nothing and check their
//! refusals before writing.
//!
//! # TTBR0/TTBR1 split, ASIDs
//!
//! [`Layout::Whole`] is one table for all 4 GiB (`TTBCR.N = 0`). With `TTBCR.N = n > 0`,
//! a [`Layout::User`] table (`16 KiB >> n`) translates `[0, 2^(32-n))` through `TTBR0` and
//! a [`Layout::Kernel`] table (16 KiB) the rest through `TTBR1`. User mappings are
//! never global (`Attributes::global = false`; `map` refuses a global leaf in a
//! [`Layout::User`] table with
//! [`MapError::GlobalInUserSpace`](crate::error::MapError::GlobalInUserSpace)): their TLB
//! entries carry the ASID current at the walk, so switching `TTBR0` and ASID together (see
//! `crate::arch::mmu::activate`) needs no flush. Kernel mappings are global.
//!
//! # Walk coherency
//!
//! Every descriptor store is one aligned 32-bit volatile store (single-copy atomic). When
//! [`Features::coherent_walk`] is false (`ID_MMFR3.CohWalk == 0`) each written entry is
//! cleaned to the point of unification. Every operation ends with `dsb ish(st)` + `isb` on
//! the target, so a `map` can be used at once and a following TLB maintenance batch sees
//! the cleared entries. The TTBR walk attributes (write-back cacheable, inner shareable
//! walks) are chosen by `crate::arch::mmu`.
//!
//! # Host use
//!
//! Nothing here is ARM-specific except the barriers, so the address space runs on the host
//! over any [`Memory`](crate::Memory); `host::HostMemory` (feature `std`) is one, and with
//! feature `tlb-model` an address space is a `tlb::model::WalkSource` for the host TLB
//! model.

pub mod attrs;
pub mod descriptor;
mod format;
#[cfg(any(test, feature = "std"))]
pub mod host;
#[cfg(test)]
mod tests;

pub use crate::table::{Changed, Layout, Lookup, Mapping, Translation, WalkCounts};
pub use attrs::{Access, Attributes, Execute, MemoryType, NMRR, PRRR};
pub use descriptor::{L1Desc, L1Kind, L2Desc, L2Kind};
pub use format::{Features, Short};

/// A short-descriptor address space: one L1 table and the L2 tables it points to (the
/// generic [`crate::table::AddressSpace`] in the [`Short`] format).
pub type AddressSpace<M> = crate::table::AddressSpace<Short, M>;

/// Iterator over the leaf mappings of a range of a short-descriptor space.
pub type Mappings<'a, M> = crate::table::Mappings<'a, Short, M>;
