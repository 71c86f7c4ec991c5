//! Properties of how the ASID allocator hands numbers out (issue 15), checked against a
//! small model on random workloads:
//!
//! - a context keeps its ASID across any number of switches, on any CPU, within a
//!   generation; with fewer than 255 contexts ever live there is never a rollover;
//! - a rollover happens only when all 255 numbers of the generation are in use;
//! - after a rollover a context still running on some CPU keeps its number, and an
//!   old-generation context whose number nobody took in the new generation gets it back;
//! - no two contexts hold the same number in one generation, ASID 0 is never handed out;
//! - every CPU is told to flush its local TLB exactly once per rollover, at its first switch
//!   after it;
//! - fresh numbers are searched next-fit: from the number after the last one handed out
//!   (a released number is handed out next).
//!
//! Each property is a reason an allocator is adopted (no TLB storm of needless rollovers),
//! not a detail: an allocator that re-numbers a running context on every switch is still
//! safe, and only these tests notice it.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::string::String;
use std::vec::Vec;

const CPUS: usize = 4;

struct Xorshift(u64);
impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What the model knows of one context: its number and the generation it was handed out
/// in (the count of rollovers then).
struct Live {
    key: usize,
    ctx: AsidContext,
    last: Option<(u64, u8)>,
}

/// The model of the allocator's observable behaviour.
struct Model {
    alloc: AsidAllocator<CPUS>,
    live: Vec<Live>,
    next_key: usize,
    /// Per CPU: the context (key) it runs and that context's ASID.
    running: [Option<(usize, u8)>; CPUS],
    /// Numbers in use in the current generation, and by whom.
    in_use: BTreeMap<u8, usize>,
    /// Per CPU: a local flush is owed (a rollover happened since its last switch).
    owed: [bool; CPUS],
    /// Where the next search for a fresh number starts (next-fit check).
    search_from: usize,
    switches: u64,
    rollovers_seen: u64,
}

impl Model {
    fn new() -> Self {
        Self {
            alloc: AsidAllocator::new(),
            live: Vec::new(),
            next_key: 0,
            running: [None; CPUS],
            in_use: BTreeMap::new(),
            owed: [false; CPUS],
            search_from: 1,
            switches: 0,
            rollovers_seen: 0,
        }
    }

    fn create(&mut self) {
        self.live.push(Live {
            key: self.next_key,
            ctx: AsidContext::new(),
            last: None,
        });
        self.next_key += 1;
    }

    fn is_running(&self, key: usize) -> bool {
        self.running
            .iter()
            .any(|r| matches!(r, Some((k, _)) if *k == key))
    }

    /// Destroys a context no CPU runs: forgets it (its number stays taken), or releases
    /// its number (as after a broadcast teardown flush).
    fn destroy(&mut self, idx: usize, release: bool) -> Result<(), String> {
        if self.is_running(self.live[idx].key) {
            return Ok(());
        }
        let l = self.live.swap_remove(idx);
        if !release {
            return Ok(());
        }
        let current = matches!(l.last, Some((g, _)) if g == self.rollovers_seen);
        let got = self.alloc.release(l.ctx);
        match (current, got) {
            (true, Some(a)) => {
                let (_, mine) = l.last.unwrap();
                if a.0 != mine {
                    return Err(format!("release gave back {} for ASID {mine}", a.0));
                }
                self.in_use.remove(&a.0);
                self.search_from = a.0 as usize;
            }
            (false, None) => {}
            (c, g) => return Err(format!("release of a current={c} context returned {g:?}")),
        }
        Ok(())
    }

    fn switch(&mut self, cpu: usize, idx: usize) -> Result<(), String> {
        let n = self.switches;
        self.switches += 1;
        let key = self.live[idx].key;
        let before = self.alloc.rollovers();
        let sw = self.alloc.switch_to(cpu, &self.live[idx].ctx).unwrap();
        let after = self.alloc.rollovers();
        let err = |m: String| Err(format!("switch {n} (cpu {cpu}, context {key}): {m}"));
        if sw.asid == RESERVED_ASID {
            return err("handed out ASID 0".into());
        }
        if self.live[idx].ctx.asid() != Some(sw.asid) {
            return err("the context does not record the ASID it was given".into());
        }
        let rolled = after != before;
        if after > before + 1 {
            return err(format!("{} rollovers in one switch", after - before));
        }
        if rolled {
            // Only on exhaustion: every one of the 255 numbers was in use.
            if self.in_use.len() != ASID_COUNT - 1 {
                return err(format!(
                    "rolled over with only {} of 255 numbers in use",
                    self.in_use.len()
                ));
            }
            self.rollovers_seen += 1;
            // The new generation starts with the numbers running CPUs hold.
            self.in_use.clear();
            self.search_from = 1;
            for (k, a) in self.running.iter().flatten() {
                self.in_use.insert(*a, *k);
            }
            self.owed = [true; CPUS];
        }
        let generation = self.rollovers_seen;
        match self.live[idx].last {
            Some((g, a)) if g == generation => {
                if sw.asid.0 != a || sw.allocated {
                    return err(format!(
                        "had ASID {a} of this generation, got {} (allocated {})",
                        sw.asid.0, sw.allocated
                    ));
                }
            }
            Some((_, a)) if self.in_use.get(&a) == Some(&key) => {
                // Reserved for it: it ran on a CPU at the rollover (and may still).
                if sw.asid.0 != a {
                    return err(format!(
                        "ran on a CPU with ASID {a} at the rollover, but got {}",
                        sw.asid.0
                    ));
                }
            }
            Some((_, a)) if !rolled && !self.in_use.contains_key(&a) => {
                if sw.asid.0 != a {
                    return err(format!(
                        "old number {a} is free in this generation, but got {}",
                        sw.asid.0
                    ));
                }
            }
            _ => {
                // A fresh number: next-fit from the last one handed out, a released one
                // first.
                if !rolled {
                    let want = self.next_fit();
                    if Some(sw.asid.0) != want {
                        return err(format!(
                            "fresh number {} but the next-fit search gives {want:?}",
                            sw.asid.0
                        ));
                    }
                }
                self.search_from = sw.asid.0 as usize + 1;
            }
        }
        match self.in_use.get(&sw.asid.0) {
            Some(&owner) if owner != key => {
                return err(format!(
                    "ASID {} is context {owner}'s in this generation",
                    sw.asid.0
                ))
            }
            _ => {}
        }
        self.in_use.insert(sw.asid.0, key);
        if sw.flush_local_tlb != self.owed[cpu] {
            return err(format!(
                "flush_local_tlb {} but a flush is owed: {}",
                sw.flush_local_tlb, self.owed[cpu]
            ));
        }
        self.owed[cpu] = false;
        self.live[idx].last = Some((generation, sw.asid.0));
        self.running[cpu] = Some((key, sw.asid.0));
        Ok(())
    }

    /// The number a next-fit search hands out now (the allocator's policy, see `release`).
    fn next_fit(&self) -> Option<u8> {
        let free = |a: usize| !self.in_use.contains_key(&(a as u8));
        let start = self.search_from.clamp(1, ASID_COUNT);
        (start..ASID_COUNT)
            .chain(1..start)
            .find(|&a| free(a))
            .map(|a| a as u8)
    }
}

/// A random workload; `churn` destroys (and sometimes releases) contexts.
fn workload(seed: u64, steps: usize, max_live: usize, churn: bool) -> Result<Model, String> {
    let mut m = Model::new();
    let mut rng = Xorshift(seed);
    for _ in 0..max_live.min(8) {
        m.create();
    }
    for _ in 0..steps {
        let op = rng.below(16);
        if op == 0 && m.live.len() < max_live {
            m.create();
        } else if op == 1 && churn && m.live.len() > 1 {
            let idx = rng.below(m.live.len());
            let release = rng.below(2) == 0;
            m.destroy(idx, release)?;
            if m.live.len() < max_live {
                m.create();
            }
        } else if !m.live.is_empty() {
            let cpu = rng.below(CPUS);
            let idx = rng.below(m.live.len());
            m.switch(cpu, idx)?;
        }
    }
    Ok(m)
}

#[test]
fn fewer_than_255_live_contexts_keep_their_asids_and_never_roll_over() {
    for (seed, live) in [(1u64, 254usize), (7, 100), (99, 2)] {
        // Grow to `live` contexts, then switch among them at random on 4 CPUs.
        let mut m = Model::new();
        for _ in 0..live {
            m.create();
        }
        let mut rng = Xorshift(seed | 0x1234_5678_0000);
        for _ in 0..20_000 {
            let cpu = rng.below(CPUS);
            let idx = rng.below(m.live.len());
            m.switch(cpu, idx).unwrap();
        }
        assert_eq!(m.alloc.rollovers(), 0, "{live} live contexts");
        let asids: BTreeSet<u8> = m
            .live
            .iter()
            .filter_map(|l| l.ctx.asid())
            .map(|a| a.0)
            .collect();
        let used = m.live.iter().filter(|l| l.last.is_some()).count();
        assert_eq!(asids.len(), used, "numbers are unique");
    }
}

#[test]
fn model_holds_with_many_contexts_and_rollovers() {
    let m = workload(0x2545_f491_4f6c_dd1d, 60_000, 400, false).unwrap();
    assert!(m.rollovers_seen >= 5, "only {} rollovers", m.rollovers_seen);
}

#[test]
fn model_holds_with_churn_and_releases() {
    for seed in [3u64, 0xdead_beef, 0x9e37_79b9_7f4a_7c15] {
        let m = workload(seed, 40_000, 300, true).unwrap();
        assert!(m.rollovers_seen >= 1, "seed {seed:#x}: no rollover");
    }
    // Mostly below 255 live, with churn: rollovers only come from forgotten numbers.
    let m = workload(11, 40_000, 120, true).unwrap();
    assert!(m.switches > 30_000);
}

#[test]
fn a_context_running_through_a_rollover_keeps_its_number_everywhere() {
    let alloc = AsidAllocator::<2>::new();
    let runner = AsidContext::new();
    let first = alloc.switch_to(0, &runner).unwrap().asid;
    let others: Vec<AsidContext> = (0..255).map(|_| AsidContext::new()).collect();
    for c in &others {
        let _ = alloc.switch_to(1, c).unwrap();
    }
    assert_eq!(alloc.rollovers(), 1);
    // CPU 1 (which has switched since the rollover) picks the running context up too: it
    // is renewed with the same number, not given a new one.
    let sw = alloc.switch_to(1, &runner).unwrap();
    assert_eq!(sw.asid, first);
    assert!(
        !sw.flush_local_tlb,
        "CPU 1 already flushed at its rollover switch"
    );
    // CPU 0 still owes its flush, although the context is of the new generation now.
    let sw = alloc.switch_to(0, &runner).unwrap();
    assert_eq!(sw.asid, first);
    assert!(sw.flush_local_tlb, "CPU 0 owes the flush of the rollover");
}

#[test]
fn an_old_number_nobody_took_is_kept_after_a_rollover() {
    let alloc = AsidAllocator::<1>::new();
    let ctxs: Vec<AsidContext> = (0..256).map(|_| AsidContext::new()).collect();
    for c in &ctxs {
        let _ = alloc.switch_to(0, c).unwrap();
    }
    assert_eq!(alloc.rollovers(), 1);
    // Context 199 had ASID 200 in the first generation; the new one has handed out only
    // ASID 1 (to context 255), so 200 is free and context 199 keeps it.
    assert_eq!(ctxs[199].asid(), Some(Asid(200)));
    let sw = alloc.switch_to(0, &ctxs[199]).unwrap();
    assert_eq!(sw.asid, Asid(200));
    assert!(sw.allocated, "renewed in the new generation");
    // Context 0's old number 1 went to context 255: context 0 gets a fresh one.
    let sw = alloc.switch_to(0, &ctxs[0]).unwrap();
    assert_ne!(sw.asid, Asid(1));
    assert_ne!(sw.asid, Asid(200));
}

/// Teeth for the model: an allocator that re-numbers on each slow-path switch is caught.
#[test]
fn teeth_the_model_catches_renumbering() {
    let mut m = Model::new();
    m.create();
    m.create();
    m.switch(0, 0).unwrap();
    m.switch(1, 1).unwrap();
    // Simulate a buggy allocator: the context silently loses its number.
    m.live[0].ctx.id.store(0, Ordering::Relaxed);
    assert!(m.switch(1, 0).is_err());
}

/// The fast path of a switch (the context has a number of this generation, the CPU has
/// switched since the last rollover) takes no lock: with the allocator's lock held
/// elsewhere it still completes. (Without it every switch would serialise all CPUs.)
#[test]
fn a_switch_within_the_generation_takes_no_lock() {
    let alloc = AsidAllocator::<2>::new();
    let ctx = AsidContext::new();
    let first = alloc.switch_to(0, &ctx).unwrap();
    // The first switch on CPU 1 takes the lock (its slot is empty); the next may not.
    assert_eq!(alloc.switch_to(1, &ctx).unwrap().asid, first.asid);
    let (alloc, ctx) = (&alloc, &ctx);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let guard = alloc.inner.lock();
        s.spawn(move || {
            let sw = alloc.switch_to(1, ctx).unwrap();
            let _ = tx.send(alloc.switch_to(1, ctx).unwrap() == sw);
        });
        // The first switch on CPU 1 takes the lock (it owes nothing, but its slot is
        // empty); only the second may take the fast path. Let the first one through.
        let _ = rx.recv_timeout(std::time::Duration::from_millis(0));
        drop(guard);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let guard = alloc.inner.lock();
        s.spawn(move || {
            let _ = tx.send(alloc.switch_to(1, ctx).unwrap());
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        drop(guard);
        let sw = got.expect("the switch waited for the allocator lock: no fast path");
        assert_eq!(sw.asid, first.asid);
        assert!(!sw.allocated && !sw.flush_local_tlb);
    });
}
