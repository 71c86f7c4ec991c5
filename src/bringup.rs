//! Bringing a kernel up over the crate's own tables, and switching to address spaces by
//! their typed roots: the upper-layer convenience over [`crate::arch::root`] (which knows
//! no descriptor format) for [`crate::short::AddressSpace`] and
//! [`crate::lpae::AddressSpace`].
//!
//! ```rust,ignore
//! // From reset, MMU off: the kernel's table maps the kernel identity (VA = PA).
//! let mut kernel = AddressSpace::new(mem, Layout::Kernel { n: 2 }, features)?;
//! kernel.map(ram, ram_pa, Attributes::KERNEL_IMAGE, MapSize::Super16M)?;
//! let mut user = AddressSpace::new(mem, Layout::User { n: 2 }, features)?;
//! // SAFETY: `kernel` maps this code, its stack and data identity (see `arch::mmu::bring_up`).
//! unsafe { kernel.bring_up()? };            // TTBCR, TTBR1, DACR, PRRR/NMRR, SCTLR
//! unsafe { user.activate(Asid(1))? };       // checked against TTBCR.N: SplitMismatch if not
//! ```
//!
//! Every table carries what it was built for ([`TableRoot`]: format and layout), so the
//! activation refuses a table built for another split or format with a typed
//! [`crate::error::ActivateError`] instead of loading it; the raw `crate::arch::mmu::activate` (an
//! address) remains for kernels that build their own tables.

#[cfg(target_arch = "arm")]
use crate::arch::error::ActivateError;
use crate::arch::root::{RootFormat, RootLayout, TableRoot};
use crate::lpae::Lpae;
use crate::memory::Memory;
use crate::short::Short;
use crate::table::{AddressSpace, Layout};
#[cfg(target_arch = "arm")]
use crate::tlb::Asid;

impl From<Layout> for RootLayout {
    fn from(layout: Layout) -> Self {
        match layout {
            Layout::Whole => RootLayout::Whole,
            Layout::User { n } => RootLayout::User { n },
            Layout::Kernel { n } => RootLayout::Kernel { n },
            Layout::UserLow { t1sz } => RootLayout::UserLow { t1sz },
            Layout::KernelHigh { t1sz } => RootLayout::KernelHigh { t1sz },
        }
    }
}

impl<M: Memory> AddressSpace<Short, M> {
    /// This space's root table with its format and layout, for the checked activation
    /// and the bring-up.
    #[must_use]
    pub fn table_root(&self) -> TableRoot {
        TableRoot::new(self.root(), RootFormat::Short, self.layout().into())
    }

    /// Turns the MMU on over this kernel space (`Layout::Kernel` or `Layout::Whole`):
    /// [`crate::arch::mmu::bring_up`] with [`Self::table_root`].
    ///
    /// # Errors
    /// As [`crate::arch::mmu::bring_up`]: [`ActivateError::WrongHalf`] for a `User` space,
    /// [`ActivateError::MmuAlreadyOn`], [`ActivateError::BadTableBase`].
    ///
    /// # Safety
    /// As [`crate::arch::mmu::bring_up`]: the MMU is off, and this space maps identity the
    /// code running the enable, everything run afterwards, the stack and every address the
    /// kernel uses (at or above the split, if any).
    #[cfg(target_arch = "arm")]
    pub unsafe fn bring_up(&self) -> Result<(), ActivateError> {
        // SAFETY: the caller's contract.
        unsafe { crate::arch::mmu::bring_up(&self.table_root()) }
    }

    /// Switches this CPU's `TTBR0` to this process space with `asid`, checked against the
    /// live `TTBCR` and `SCTLR` ([`crate::arch::mmu::activate_root`]).
    ///
    /// # Errors
    /// As [`crate::arch::mmu::activate_root`]: [`ActivateError::SplitMismatch`] when the
    /// space's layout is not the CPU's split, [`ActivateError::WrongHalf`] for a kernel
    /// space, [`ActivateError::FormatMismatch`], [`ActivateError::AccessFlagEnabled`],
    /// [`ActivateError::ReservedAsid`], ...
    ///
    /// # Safety
    /// As [`crate::arch::mmu::activate`]: everything the CPU uses after the switch is mapped
    /// identically by the new context, and this CPU's entries tagged `asid` are this
    /// space's (the ASID allocator, [`crate::asid`], guarantees it).
    #[cfg(target_arch = "arm")]
    pub unsafe fn activate(&self, asid: Asid) -> Result<(), ActivateError> {
        // SAFETY: the caller's contract.
        unsafe { crate::arch::mmu::activate_root(&self.table_root(), asid) }
    }
}

impl<M: Memory> AddressSpace<Lpae, M> {
    /// This space's root table with its format and layout.
    #[must_use]
    pub fn table_root(&self) -> TableRoot {
        TableRoot::new(self.root(), RootFormat::Lpae, self.layout().into())
    }

    /// Turns the MMU on over this long-descriptor kernel space:
    /// [`crate::arch::lpae::bring_up`] with [`Self::table_root`].
    ///
    /// # Errors
    /// As [`crate::arch::lpae::bring_up`].
    ///
    /// # Safety
    /// As [`crate::arch::lpae::bring_up`].
    #[cfg(target_arch = "arm")]
    pub unsafe fn bring_up(&self) -> Result<(), ActivateError> {
        // SAFETY: the caller's contract.
        unsafe { crate::arch::lpae::bring_up(&self.table_root()) }
    }

    /// Switches this CPU's `TTBR0` to this process space with `asid`, checked against the
    /// live `TTBCR` ([`crate::arch::lpae::activate_root`]).
    ///
    /// # Errors
    /// As [`crate::arch::lpae::activate_root`].
    ///
    /// # Safety
    /// As [`crate::arch::lpae::activate`].
    #[cfg(target_arch = "arm")]
    pub unsafe fn activate(&self, asid: Asid) -> Result<(), ActivateError> {
        // SAFETY: the caller's contract.
        unsafe { crate::arch::lpae::activate_root(&self.table_root(), asid) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::error::ActivateError;
    use crate::short::host::HostMemory;

    #[test]
    fn spaces_hand_out_roots_that_carry_their_layout() {
        let mem = HostMemory::new();
        let user = AddressSpace::<Short, _>::new(
            mem.clone(),
            Layout::User { n: 2 },
            crate::short::Features::ALL,
        )
        .unwrap();
        let root = user.table_root();
        assert_eq!(root.pa(), user.root());
        assert_eq!(root.format(), RootFormat::Short);
        assert_eq!(root.layout(), RootLayout::User { n: 2 });
        // The issue's case: under `TTBCR.N = 1` this table is refused by name.
        assert_eq!(
            root.check_ttbr0(1, 0),
            Err(ActivateError::SplitMismatch { table: 2, ttbcr: 1 })
        );
        assert_eq!(root.check_ttbr0(2, 0), Ok(()));
        let kernel =
            AddressSpace::<Lpae, _>::new(mem, Layout::Kernel { n: 1 }, crate::lpae::Features::ALL)
                .unwrap();
        let root = kernel.table_root();
        assert_eq!(root.format(), RootFormat::Lpae);
        assert_eq!(root.layout(), RootLayout::Kernel { n: 1 });
        assert_eq!(
            root.check_ttbr0(1 << 31 | 1, 0),
            Err(ActivateError::WrongHalf)
        );
        let regs = crate::arch::root::MmuRegisters::lpae(&root, true, [0, 0], 0).unwrap();
        assert_eq!(regs.ttbr1, kernel.root().as_u64());
    }
}
