//! The host TLB model's walks over a [`crate::table::AddressSpace`]: its [`WalkSource`]
//! implementation, reading the tables entry by entry through the space's read-only
//! accessors the way a hardware walker would (recording every table it passes for the
//! model's walk cache). It lives here, not in `table`, so the table layer names nothing of
//! `tlb`.

use crate::addr::{PhysAddr, VirtAddr};
use crate::memory::Memory;
use crate::table::{AddressSpace, Format, Kind};
use crate::tlb::model::{Walk, WalkLeaf, WalkSource, WalkTable};

/// Walks `space` from the table at `table` (`None`: the root) at `level`, entered with
/// `ctx`, recording the tables below.
fn walk_below<F: Format, M: Memory>(
    space: &AddressSpace<F, M>,
    mut table: Option<u64>,
    mut level: u8,
    ctx: F::TableCtx,
    va: u64,
) -> Walk {
    let mut w = Walk::default();
    let mut n = 0;
    let mut ctx = ctx;
    loop {
        let raw = space.entry_for(table, level, va);
        match space.entry_kind(level, raw) {
            Kind::Invalid => return w,
            Kind::Leaf(size) => {
                w.leaf = Some(WalkLeaf {
                    va: VirtAddr::new((va & !(size.bytes() - 1)) as u32),
                    size,
                    pa: PhysAddr::new(F::leaf_pa(raw, size)),
                    global: F::leaf_global(raw, size),
                    attrs: F::leaf_attrs(raw, size, ctx),
                });
                return w;
            }
            Kind::Table => {
                let pa = F::table_pa(raw);
                let span = AddressSpace::<F, M>::entry_span(level);
                if let Some(slot) = w.tables.get_mut(n) {
                    *slot = Some(WalkTable {
                        level,
                        span_va: VirtAddr::new((va & !(span - 1)) as u32),
                        span,
                        table: PhysAddr::new(pa),
                    });
                }
                n += 1;
                ctx = F::table_ctx(raw);
                table = Some(pa);
                level += 1;
            }
        }
    }
}

impl<F: Format, M: Memory> WalkSource for AddressSpace<F, M> {
    fn walk(&self, va: VirtAddr) -> Walk {
        let (lo, hi) = self.va_bounds();
        let v = va.as_u64();
        if v < lo || v >= hi {
            return Walk::default();
        }
        walk_below(self, None, self.root_level(), F::ROOT_CTX, v)
    }

    fn walk_from(&self, level: u8, table: PhysAddr, va: VirtAddr) -> Walk {
        if level < self.root_level()
            || level >= F::LAST_LEVEL
            || table.as_u64() >= F::TABLE_PA_LIMIT
        {
            return Walk::default();
        }
        // The context a walk-cache entry would carry (short: the L1 entry's PXN) is the
        // current parent entry's while it still points at `table`; otherwise the root's
        // (the model compares attributes, not the enforcement of PXN).
        let mut ctx = F::ROOT_CTX;
        let (mut p, mut l) = (None, self.root_level());
        while l <= level {
            let raw = self.entry_for(p, l, va.as_u64());
            if self.entry_kind(l, raw) != Kind::Table {
                break;
            }
            if l == level {
                if F::table_pa(raw) == table.as_u64() {
                    ctx = F::table_ctx(raw);
                }
                break;
            }
            p = Some(F::table_pa(raw));
            l += 1;
        }
        walk_below(self, Some(table.as_u64()), level + 1, ctx, va.as_u64())
    }
}
