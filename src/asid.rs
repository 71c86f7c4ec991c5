//! ASID allocation for 8-bit ASIDs, with generations and lazy per-CPU flushes on rollover.
//!
//! # Why
//!
//! Non-global translations are tagged with the ASID that was current when they were
//! loaded, so two address spaces must never be live under the same ASID on a CPU whose TLB
//! may still hold the other one's entries. There are only 255 usable ASIDs (ASID 0 is
//! reserved, see below), and a kernel may have thousands of address spaces.
//!
//! # How
//!
//! Every address space carries an [`AsidContext`]: its ASID together with the *generation*
//! in which it was handed out. The allocator hands out free ASIDs of the current
//! generation. When none is left it *rolls over*:
//!
//! 1. the generation number goes up, so every context of the old generation is stale and
//!    will get a new ASID the next time it is switched to ([`AsidAllocator::switch_to`]);
//! 2. the ASID that each CPU is running right now is *reserved*: it stays valid in the new
//!    generation for that address space, so running CPUs need not be interrupted;
//! 3. every CPU is marked as needing one local invalidate-all. A CPU does it the next time
//!    it switches address space ([`Switch::flush_local_tlb`]), before using any ASID of the
//!    new generation, because its TLB may hold entries of an old-generation address space
//!    under a number that is about to be reused.
//!
//! So a rollover costs each CPU exactly one local `TLBIALL`, at a moment when it is
//! switching anyway, and no IPI. The fast path of a switch (the address space already has
//! an ASID of the current generation) takes no lock: a compare-and-swap on the CPU's
//! *active* slot, which a concurrent rollover either sees (and reserves the ASID) or
//! invalidates (and the switch falls back to the locked path).
//!
//! # ASID 0
//!
//! ASID 0 is never handed out, so no non-global entry is ever tagged with it. (The switch
//! no longer needs a reserved ASID: it parks `TTBR0` while the ASID changes, see
//! [`crate::arch::switch`]. ASID 0 stays unused, like Linux's.)
//!
//! # Switching
//!
//! `AsidAllocator::activate` / `activate_lpae` (ARM only) are the whole context switch of
//! `TTBR0`: they ask the allocator for the ASID, then run the format's program of
//! [`crate::arch::switch`] (park `TTBR0`, the owed local `TLBIALL` while parked, the ASID, the
//! table, un-park; for LPAE one 64-bit write). [`AsidAllocator::activate_on`] and
//! [`AsidAllocator::activate_lpae_on`] are the same on any [`SysRegs`], which is how the
//! host CPU model runs this exact path. [`crate::locked::LockedAddressSpace`] keeps the
//! [`AsidContext`] next to the page-table lock, so its gathers name the ASID the space
//! has when they flush.
//!
//! # Teardown and immediate reuse
//!
//! A destroyed address space's ASID is normally just forgotten: its number stays taken
//! until the next rollover, whose local flushes clear any entries still tagged with it.
//! A kernel that tears down many short-lived spaces can instead hand the number back with
//! [`AsidAllocator::release`] once the teardown flush (a *broadcast* whole-ASID or full
//! invalidate, as the teardown gather issues with a broadcast backend) has completed:
//! then no TLB holds an entry tagged with it, and the next space may use it at once.
//! That is the one case in which [`Switch::flush_local_tlb`] is not needed although the
//! number had an earlier owner: the broadcast flush did the job for every CPU.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::addr::PhysAddr;
use crate::arch::error::ActivateError;
use crate::arch::switch::{switch_lpae, switch_short, ShortWalk};
use crate::tlb::{Asid, SysRegs};

/// Number of ASID values (8-bit ASIDs).
pub const ASID_COUNT: usize = 256;
/// The ASID reserved for the context-switch sequence; never handed out.
pub const RESERVED_ASID: Asid = Asid(0);

const ASID_BITS: u32 = 8;
const ASID_MASK: u64 = (1 << ASID_BITS) - 1;
const GENERATION_ONE: u64 = 1 << ASID_BITS;

/// The per-address-space half: which ASID (and generation) it last got.
///
/// Starts unassigned; lives with the address space, outside any lock.
#[derive(Debug, Default)]
pub struct AsidContext {
    /// `generation | asid`, 0 = never assigned.
    id: AtomicU64,
}

impl AsidContext {
    /// A context that has never run.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            id: AtomicU64::new(0),
        }
    }

    /// The ASID this address space last got, if it ever got one (it may be stale if a
    /// rollover happened since; [`AsidAllocator::switch_to`] refreshes it).
    #[must_use]
    pub fn asid(&self) -> Option<Asid> {
        match self.id.load(Ordering::Acquire) {
            0 => None,
            id => Some(Asid((id & ASID_MASK) as u8)),
        }
    }
}

/// What a CPU must do to run an address space.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use = "the ASID must be programmed, and the local TLB flushed if asked"]
pub struct Switch {
    /// The ASID to program (with the switch of [`crate::arch::switch`]).
    pub asid: Asid,
    /// A rollover happened since this CPU last switched: invalidate this CPU's entire TLB
    /// (local `TLBIALL`) before running with `asid`.
    pub flush_local_tlb: bool,
    /// This switch had to allocate a new ASID (slow path).
    pub allocated: bool,
}

/// Why `AsidAllocator::activate` (ARM only) failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SwitchError {
    /// The CPU number is not below the allocator's `CPUS`.
    NoSuchCpu(usize),
    /// The architected switch refused the table.
    Activate(ActivateError),
    /// The address space is not a `TTBR0` table (a [`crate::short::Layout::Kernel`]
    /// space is loaded once into `TTBR1`, not switched to).
    NotTtbr0,
}

struct Inner<const CPUS: usize> {
    /// One bit per ASID of the current generation: in use.
    map: [u32; ASID_COUNT / 32],
    /// Where the next search for a free ASID starts.
    next: usize,
    /// Per CPU: the id it was running at the last rollover.
    reserved: [u64; CPUS],
    /// Per CPU: a local invalidate-all is owed before the next switch completes.
    flush_pending: [bool; CPUS],
    /// Rollovers so far.
    rollovers: u64,
}

/// The allocator, shared by all CPUs (`CPUS` = the most CPUs the kernel runs).
pub struct AsidAllocator<const CPUS: usize> {
    generation: AtomicU64,
    /// Per CPU: the id it runs now; 0 while a rollover has taken it away.
    active: [AtomicU64; CPUS],
    inner: spin::Mutex<Inner<CPUS>>,
}

impl<const CPUS: usize> Default for AsidAllocator<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize> AsidAllocator<CPUS> {
    /// A fresh allocator (generation 1, every ASID but 0 free).
    #[must_use]
    pub const fn new() -> Self {
        // After a rollover at most CPUS ASIDs are reserved, plus ASID 0: at least one must
        // stay free, so the search after a rollover cannot fail.
        const { assert!(CPUS >= 1 && CPUS < ASID_COUNT - 1) };
        let mut map = [0u32; ASID_COUNT / 32];
        map[0] = 1; // ASID 0 is reserved.
        Self {
            generation: AtomicU64::new(GENERATION_ONE),
            active: [const { AtomicU64::new(0) }; CPUS],
            inner: spin::Mutex::new(Inner {
                map,
                next: 1,
                reserved: [0; CPUS],
                flush_pending: [false; CPUS],
                rollovers: 0,
            }),
        }
    }

    /// Number of rollovers so far.
    pub fn rollovers(&self) -> u64 {
        self.inner.lock().rollovers
    }

    /// CPU `cpu` (below `CPUS`) is about to run the address space of `ctx`: returns the
    /// ASID to use and whether the local TLB must be flushed first. Returns `None` only if
    /// `cpu >= CPUS`.
    pub fn switch_to(&self, cpu: usize, ctx: &AsidContext) -> Option<Switch> {
        let slot = self.active.get(cpu)?;
        let id = ctx.id.load(Ordering::Relaxed);
        let old_active = slot.load(Ordering::Relaxed);
        // Fast path: current generation, and no rollover has taken this CPU's slot. The CAS
        // publishes `id` as active so that a rollover reserves it.
        if old_active != 0
            && id != 0
            && same_generation(id, self.generation.load(Ordering::Relaxed))
            && slot
                .compare_exchange(old_active, id, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(Switch {
                asid: asid_of(id),
                flush_local_tlb: false,
                allocated: false,
            });
        }

        let mut inner = self.inner.lock();
        let mut id = ctx.id.load(Ordering::Relaxed);
        let mut allocated = false;
        if id == 0 || !same_generation(id, self.generation.load(Ordering::Relaxed)) {
            id = self.new_id(&mut inner, id);
            ctx.id.store(id, Ordering::Release);
            allocated = true;
        }
        let flush_local_tlb = core::mem::take(&mut inner.flush_pending[cpu]);
        slot.store(id, Ordering::Release);
        Some(Switch {
            asid: asid_of(id),
            flush_local_tlb,
            allocated,
        })
    }

    /// Hands the ASID of a destroyed address space back for reuse in this generation, and
    /// makes it the next one handed out. Returns it, or `None` if there is nothing to give
    /// back (never assigned, or assigned in an earlier generation: the number is then
    /// free already or reserved for a CPU that still runs it since the rollover).
    ///
    /// Call it only after a *broadcast* invalidate of that ASID (or of everything) has
    /// completed with every CPU switched away from the destroyed tables (or parked on a
    /// table without non-global entries): the teardown gather of
    /// [`crate::locked::LockedAddressSpace::destroy`] with an inner-shareable backend does
    /// both. Otherwise a CPU could still hold entries of the old space under the number
    /// and the next owner would see them.
    pub fn release(&self, ctx: AsidContext) -> Option<Asid> {
        let id = ctx.id.load(Ordering::Acquire);
        let mut inner = self.inner.lock();
        if id == 0 || !same_generation(id, self.generation.load(Ordering::Relaxed)) {
            return None;
        }
        let asid = (id & ASID_MASK) as usize;
        let (w, b) = (asid / 32, asid % 32);
        inner.map[w] &= !(1 << b);
        inner.next = asid;
        Some(asid_of(id))
    }

    /// Switches this CPU (`cpu`, below `CPUS`) to the address space of `ctx`, whose
    /// `TTBR0` table is `root`: the root is checked against the live `TTBCR` and `SCTLR`
    /// ([`crate::arch::root::TableRoot::check_ttbr0`]), then [`AsidAllocator::switch_to`],
    /// then the format's switch ([`crate::arch::switch::switch_short`] with this core's walk
    /// attributes, or [`crate::arch::switch::switch_lpae`]) with the ASID it gave and the local
    /// flush it owes. Returns what the allocator decided.
    ///
    /// # Errors
    /// [`SwitchError::Activate`] with the mismatch (format, split, kernel half, `AFE`)
    /// before the allocator is asked; [`SwitchError::NoSuchCpu`] (nothing changed);
    /// [`SwitchError::Activate`] if the table base is unusable (the ASID was assigned, the
    /// registers were not changed).
    ///
    /// # Safety
    /// As [`crate::arch::mmu::activate`]: everything the CPU uses after the switch must be
    /// mapped identically by `root` (below the `TTBCR` split) and `TTBR1`. `ctx` must be
    /// the context of the space at `root`, and `cpu` this CPU's number.
    #[cfg(target_arch = "arm")]
    pub unsafe fn activate(
        &self,
        cpu: usize,
        ctx: &AsidContext,
        root: &crate::arch::root::TableRoot,
    ) -> Result<Switch, SwitchError> {
        use crate::arch::root::{check_live, RootFormat};
        check_live(root).map_err(SwitchError::Activate)?;
        let cp15 = &mut crate::tlb::Cp15;
        match root.format() {
            RootFormat::Short => {
                let walk = crate::arch::mmu::walk_attributes();
                // SAFETY: the caller's contract; `Cp15` is this CPU.
                unsafe { self.activate_on(cp15, cpu, ctx, root.pa(), walk) }
            }
            // SAFETY: the caller's contract; `Cp15` is this CPU.
            RootFormat::Lpae => unsafe { self.activate_lpae_on(cp15, cpu, ctx, root.pa()) },
        }
    }

    /// `AsidAllocator::activate` for a long-descriptor (LPAE) space: the ASID and the
    /// table in one 64-bit `TTBR0` write, the owed local flush while `TTBR0` is parked
    /// ([`crate::arch::switch::switch_lpae`]). The same as `AsidAllocator::activate` (which
    /// follows the root's format), refusing a short-descriptor root.
    ///
    /// # Errors
    /// As `AsidAllocator::activate`.
    ///
    /// # Safety
    /// As `AsidAllocator::activate`, and `crate::arch::lpae::enable` (or `bring_up`) has
    /// run on this CPU.
    #[cfg(target_arch = "arm")]
    pub unsafe fn activate_lpae(
        &self,
        cpu: usize,
        ctx: &AsidContext,
        root: &crate::arch::root::TableRoot,
    ) -> Result<Switch, SwitchError> {
        if root.format() != crate::arch::root::RootFormat::Lpae {
            return Err(SwitchError::Activate(ActivateError::FormatMismatch));
        }
        // SAFETY: the caller's contract.
        unsafe { self.activate(cpu, ctx, root) }
    }

    /// `AsidAllocator::activate` on any [`SysRegs`]: the CPU, or the host CPU model,
    /// which runs this exact path (allocator decision, then [`switch_short`]).
    ///
    /// # Errors
    /// As `AsidAllocator::activate`.
    ///
    /// # Safety
    /// When `regs` is this CPU: as `AsidAllocator::activate`.
    pub unsafe fn activate_on<S: SysRegs>(
        &self,
        regs: &mut S,
        cpu: usize,
        ctx: &AsidContext,
        root: PhysAddr,
        walk: ShortWalk,
    ) -> Result<Switch, SwitchError> {
        let sw = self
            .switch_to(cpu, ctx)
            .ok_or(SwitchError::NoSuchCpu(cpu))?;
        // SAFETY: the caller's contract for the mappings; the allocator guarantees that
        // this CPU's entries under `sw.asid` belong to `ctx`'s space unless it asks for the
        // local flush, which `switch_short` then does.
        let _done = unsafe { switch_short(regs, root, walk, sw.asid, sw.flush_local_tlb) }
            .map_err(SwitchError::Activate)?;
        Ok(sw)
    }

    /// `AsidAllocator::activate_lpae` on any [`SysRegs`] (see
    /// [`AsidAllocator::activate_on`]).
    ///
    /// # Errors
    /// As `AsidAllocator::activate`.
    ///
    /// # Safety
    /// When `regs` is this CPU: as `AsidAllocator::activate_lpae`.
    pub unsafe fn activate_lpae_on<S: SysRegs>(
        &self,
        regs: &mut S,
        cpu: usize,
        ctx: &AsidContext,
        root: PhysAddr,
    ) -> Result<Switch, SwitchError> {
        let sw = self
            .switch_to(cpu, ctx)
            .ok_or(SwitchError::NoSuchCpu(cpu))?;
        // SAFETY: as in `activate_on`, with `switch_lpae`.
        let _done = unsafe { switch_lpae(regs, root, sw.asid, sw.flush_local_tlb) }
            .map_err(SwitchError::Activate)?;
        Ok(sw)
    }

    fn new_id(&self, inner: &mut Inner<CPUS>, old: u64) -> u64 {
        let generation = self.generation.load(Ordering::Relaxed);
        if old != 0 {
            let asid = (old & ASID_MASK) as usize;
            let renewed = make_id(generation, asid);
            // Reserved at the last rollover (still running somewhere): keep it, in every
            // CPU's reservation, under the new generation.
            let mut was_reserved = false;
            for r in inner.reserved.iter_mut() {
                if *r == old {
                    *r = renewed;
                    was_reserved = true;
                }
            }
            if was_reserved {
                return renewed;
            }
            // Otherwise keep the old number if nobody took it in this generation.
            if !test_and_set(&mut inner.map, asid) {
                return renewed;
            }
        }
        let asid = match find_free(&inner.map, inner.next) {
            Some(a) => a,
            None => {
                self.roll_over(inner);
                find_free(&inner.map, 1)
                    .expect("unreachable: a rollover leaves at most CPUS of 255 ASIDs in use")
            }
        };
        test_and_set(&mut inner.map, asid);
        // The next search starts here: this number is taken now, so it moves on to the
        // one after (next-fit, which spreads reuse over the whole space).
        inner.next = asid;
        make_id(self.generation.load(Ordering::Relaxed), asid)
    }

    fn roll_over(&self, inner: &mut Inner<CPUS>) {
        self.generation.fetch_add(GENERATION_ONE, Ordering::Relaxed);
        inner.map = [0; ASID_COUNT / 32];
        inner.map[0] = 1;
        for cpu in 0..CPUS {
            let mut id = self.active[cpu].swap(0, Ordering::AcqRel);
            // A CPU that has not switched since the previous rollover still runs its
            // reserved ASID.
            if id == 0 {
                id = inner.reserved[cpu];
            }
            if id != 0 {
                test_and_set(&mut inner.map, (id & ASID_MASK) as usize);
            }
            inner.reserved[cpu] = id;
            inner.flush_pending[cpu] = true;
        }
        inner.next = 1;
        inner.rollovers += 1;
    }
}

fn same_generation(id: u64, generation: u64) -> bool {
    (id ^ generation) >> ASID_BITS == 0
}

/// `generation | asid`, written as a sum: the generation's low `ASID_BITS` are zero, so
/// `|`, `^` and `+` agree, and with `+` no mutation of the operator is a no-op.
fn make_id(generation: u64, asid: usize) -> u64 {
    generation + asid as u64
}

fn asid_of(id: u64) -> Asid {
    Asid((id & ASID_MASK) as u8)
}

fn test_and_set(map: &mut [u32; ASID_COUNT / 32], asid: usize) -> bool {
    let (w, b) = (asid / 32, asid % 32);
    let was = map[w] & (1 << b) != 0;
    map[w] |= 1 << b;
    was
}

fn find_free(map: &[u32; ASID_COUNT / 32], from: usize) -> Option<usize> {
    (from.max(1)..ASID_COUNT)
        .chain(1..from.max(1))
        .find(|&a| map[a / 32] & (1 << (a % 32)) == 0)
}

#[cfg(test)]
#[path = "asid_tests.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::format;
    use std::string::String;
    use std::vec::Vec;

    /// A per-CPU TLB that remembers, for each ASID, which address space filled entries
    /// under it; a switch that lets a CPU see another space's entries is the bug.
    struct Cpu {
        cached: HashMap<u8, usize>,
    }

    fn run(spaces: usize, cpus: usize, steps: usize, honour_flush: bool) -> Result<u64, String> {
        const MAX: usize = 4;
        let alloc = AsidAllocator::<MAX>::new();
        let ctxs: Vec<AsidContext> = (0..spaces).map(|_| AsidContext::new()).collect();
        let mut tlbs: Vec<Cpu> = (0..cpus)
            .map(|_| Cpu {
                cached: HashMap::new(),
            })
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for step in 0..steps {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let cpu = (seed % cpus as u64) as usize;
            let space = ((seed >> 20) % spaces as u64) as usize;
            let sw = alloc.switch_to(cpu, &ctxs[space]).unwrap();
            if sw.asid == RESERVED_ASID {
                return Err(format!("step {step}: handed out the reserved ASID"));
            }
            if sw.flush_local_tlb && honour_flush {
                tlbs[cpu].cached.clear();
            }
            match tlbs[cpu].cached.get(&sw.asid.0) {
                Some(&owner) if owner != space => {
                    return Err(format!(
                        "step {step}: cpu {cpu} runs space {space} with ASID {} but its TLB \
                         holds entries of space {owner} under it",
                        sw.asid.0
                    ))
                }
                _ => {}
            }
            tlbs[cpu].cached.insert(sw.asid.0, space);
        }
        Ok(alloc.rollovers())
    }

    #[test]
    fn few_spaces_never_roll_over() {
        assert_eq!(run(100, 4, 5_000, true), Ok(0));
    }

    #[test]
    fn many_spaces_roll_over_without_sharing_an_asid() {
        let rollovers = run(2_000, 4, 40_000, true).unwrap();
        assert!(
            rollovers > 10,
            "only {rollovers} rollovers: the test does not exercise them"
        );
    }

    #[test]
    fn ignoring_the_local_flush_is_caught() {
        // Teeth: the same workload with the owed TLBIALL skipped must be detected.
        assert!(run(2_000, 4, 40_000, false).is_err());
    }

    #[test]
    fn running_asid_survives_rollover() {
        let alloc = AsidAllocator::<2>::new();
        let running = AsidContext::new();
        let first = alloc.switch_to(0, &running).unwrap();
        let others: Vec<AsidContext> = (0..600).map(|_| AsidContext::new()).collect();
        for c in &others {
            let _ = alloc.switch_to(1, c).unwrap();
        }
        assert!(alloc.rollovers() >= 2);
        // CPU 0 never switched: its ASID was reserved through every rollover.
        let again = alloc.switch_to(0, &running).unwrap();
        assert_eq!(again.asid, first.asid);
        assert!(
            again.flush_local_tlb,
            "CPU 0 owes a flush after the rollovers"
        );
        for c in &others {
            if let Some(a) = c.asid() {
                let live_gen = same_generation(
                    c.id.load(Ordering::Relaxed),
                    alloc.generation.load(Ordering::Relaxed),
                );
                assert!(
                    !(live_gen && a == first.asid),
                    "reserved ASID handed to another space"
                );
            }
        }
    }

    #[test]
    fn release_hands_the_number_to_the_next_space() {
        let alloc = AsidAllocator::<2>::new();
        assert_eq!(alloc.release(AsidContext::new()), None, "never assigned");
        let a = AsidContext::new();
        let b = AsidContext::new();
        let asid_a = alloc.switch_to(1, &a).unwrap().asid;
        let _ = alloc.switch_to(0, &b).unwrap();
        assert_eq!(alloc.release(a), Some(asid_a));
        let c = AsidContext::new();
        let sw = alloc.switch_to(0, &c).unwrap();
        assert_eq!(sw.asid, asid_a, "the released number is handed out next");
        assert!(sw.allocated && !sw.flush_local_tlb);
        // Released numbers are unique again: nobody else of this generation has it.
        let d = AsidContext::new();
        assert_ne!(alloc.switch_to(0, &d).unwrap().asid, asid_a);
    }

    #[test]
    fn release_of_an_old_generation_gives_nothing_back() {
        let alloc = AsidAllocator::<1>::new();
        let old = AsidContext::new();
        let _ = alloc.switch_to(0, &old).unwrap();
        let others: Vec<AsidContext> = (0..300).map(|_| AsidContext::new()).collect();
        for c in &others {
            let _ = alloc.switch_to(0, c).unwrap();
        }
        assert!(alloc.rollovers() >= 1);
        assert_eq!(alloc.release(old), None);
    }

    /// Spaces are created, run on random CPUs and destroyed; a destroyed space's ASID is
    /// released after a broadcast flush of it (or, with the bug, without one). The model
    /// TLBs must never show a CPU entries of another space under its current ASID.
    fn run_with_teardown(broadcast_flush: bool) -> Result<u64, String> {
        const CPUS: usize = 4;
        let alloc = AsidAllocator::<CPUS>::new();
        let mut live: Vec<(usize, AsidContext)> = Vec::new();
        let mut next_space = 0usize;
        let mut tlbs: Vec<HashMap<u8, usize>> = (0..CPUS).map(|_| HashMap::new()).collect();
        // What each CPU runs: (space, asid), or parked with the ASID of a dead space.
        let mut running: Vec<Option<usize>> = std::vec![None; CPUS];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let op = seed % 8;
            if live.len() < 3 || op < 2 {
                live.push((next_space, AsidContext::new()));
                next_space += 1;
            } else if op == 2 {
                // Destroy a space no CPU runs, flush its ASID everywhere, release it.
                let idx = (seed >> 8) as usize % live.len();
                let (space, _) = &live[idx];
                if running.contains(&Some(*space)) {
                    continue;
                }
                let (space, ctx) = live.swap_remove(idx);
                if let Some(a) = ctx.asid() {
                    if broadcast_flush {
                        for t in &mut tlbs {
                            t.retain(|&k, &mut owner| !(k == a.0 && owner == space));
                        }
                    }
                }
                let _ = alloc.release(ctx);
            } else {
                let cpu = (seed >> 16) as usize % CPUS;
                let idx = (seed >> 24) as usize % live.len();
                let (space, ctx) = &live[idx];
                let sw = alloc.switch_to(cpu, ctx).unwrap();
                if sw.flush_local_tlb {
                    tlbs[cpu].clear();
                }
                if let Some(&owner) = tlbs[cpu].get(&sw.asid.0) {
                    if owner != *space {
                        return Err(format!(
                            "step {step}: cpu {cpu} runs space {space} with ASID {} and \
                             sees entries of space {owner}",
                            sw.asid.0
                        ));
                    }
                }
                tlbs[cpu].insert(sw.asid.0, *space);
                running[cpu] = Some(*space);
            }
        }
        Ok(alloc.rollovers())
    }

    #[test]
    fn released_numbers_are_safe_after_a_broadcast_flush() {
        let rollovers = run_with_teardown(true).unwrap();
        assert!(rollovers >= 1, "no rollover exercised");
    }

    #[test]
    fn teeth_release_without_the_broadcast_flush_is_caught() {
        assert!(run_with_teardown(false).is_err());
    }

    #[test]
    fn bad_cpu_is_refused() {
        let alloc = AsidAllocator::<2>::new();
        assert!(alloc.switch_to(2, &AsidContext::new()).is_none());
    }
}
