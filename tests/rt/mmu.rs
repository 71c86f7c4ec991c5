//! A minimal MMU bring-up for tests that need translation on before the crate's own
//! page tables are in play: an identity map of RAM and the UART made of 1 MiB sections.

use armv7_mm::arch::barrier::{dsb_sy, isb};
use armv7_mm::arch::cp15::{DACR, SCTLR, SCTLR_BITS, TTBCR, TTBR0, TTBR1};
use armv7_mm::arch::tlbi;
use tock_registers::interfaces::{ReadWriteable, Writeable};

use crate::frames::RAM_BASE;

/// `TTBR0` walk attributes: inner/outer write-back write-allocate, shareable.
pub const TTBR_WALK_ATTRS: u32 = (1 << 6) | (1 << 3) | (1 << 1) | (1 << 5);

#[repr(C, align(16384))]
struct L1([u32; 4096]);

static mut BOOT_L1: L1 = L1([0; 4096]);

/// Section descriptor: normal memory, write-back write-allocate, shareable, PL1 RW only.
const SECTION_NORMAL: u32 = 0b10 | (1 << 2) | (1 << 3) | (0b001 << 12) | (1 << 16) | (0b01 << 10);
/// Section descriptor: device memory, XN, PL1 RW only.
const SECTION_DEVICE: u32 = 0b10 | (1 << 2) | (1 << 4) | (0b01 << 10);

/// Builds the identity map (RAM of `ram_size` bytes and the UART; nothing else) and turns on
/// the MMU and caches. Returns the L1 table's address.
pub fn enable_identity(ram_size: u64) -> usize {
    // SAFETY: called once per boot by CPU 0 with the MMU off; nothing else references the
    // table yet.
    let l1 = unsafe { &mut *core::ptr::addr_of_mut!(BOOT_L1) };
    for mb in 0..(ram_size >> 20) as u32 {
        let addr = RAM_BASE as u32 + (mb << 20);
        l1.0[(addr >> 20) as usize] = addr | SECTION_NORMAL;
    }
    let uart = crate::console::UART_BASE as u32;
    l1.0[(uart >> 20) as usize] = (uart & 0xfff0_0000) | SECTION_DEVICE;
    let base = l1.0.as_ptr() as u32;
    dsb_sy();
    TTBCR.set(0);
    TTBR0.set(base | TTBR_WALK_ATTRS);
    // With TTBCR.N = 0, TTBR1 is the table the crate parks TTBR0 on while it changes the
    // ASID (`armv7_mm::switch`): the boot map, global sections only.
    TTBR1.set(base | TTBR_WALK_ATTRS);
    DACR.set(0b01); // domain 0: client (permissions checked)
    tlbi::tlbiall(0);
    tlbi::iciallu(0);
    tlbi::bpiall(0);
    dsb_sy();
    isb();
    SCTLR.modify(
        SCTLR_BITS::M::Enable + SCTLR_BITS::C::SET + SCTLR_BITS::I::SET + SCTLR_BITS::Z::SET,
    );
    isb();
    base as usize
}

/// Maps the 1 MiB at `va` to `pa` as a normal-memory section in the boot map, then makes
/// it visible (`TLBIMVA` for the VA, the region had no valid entry before).
pub fn map_section(va: u32, pa: u32) {
    // SAFETY: CPU 0 owns the boot table; a single aligned word store is atomic for the
    // walker.
    unsafe {
        let l1 = &mut *core::ptr::addr_of_mut!(BOOT_L1);
        core::ptr::write_volatile(
            &mut l1.0[(va >> 20) as usize],
            (pa & 0xfff0_0000) | SECTION_NORMAL,
        );
    }
    dsb_sy();
    tlbi::tlbimva(va & 0xfff0_0000);
    dsb_sy();
    isb();
}

/// Removes the section at `va` from the boot map and invalidates its TLB entry.
pub fn unmap_section(va: u32) {
    // SAFETY: as in `map_section`.
    unsafe {
        let l1 = &mut *core::ptr::addr_of_mut!(BOOT_L1);
        core::ptr::write_volatile(&mut l1.0[(va >> 20) as usize], 0);
    }
    dsb_sy();
    tlbi::tlbimva(va & 0xfff0_0000);
    dsb_sy();
    isb();
}

// ---------------------------------------------------------------------------------------
// Raw short-descriptor helpers for tests that build their own mappings (e.g. `tlb_ops`)
// without the crate's page-table code.

/// Small-page (4 KiB) L2 descriptor for `pa`: normal memory, write-back write-allocate,
/// shareable, PL1 read/write only, execute-never; `not_global` sets nG (the entry is then
/// cached per ASID).
pub const fn small_page(pa: u32, not_global: bool) -> u32 {
    let ng = if not_global { 1 << 11 } else { 0 };
    (pa & 0xffff_f000) | ng | (1 << 10) | (0b001 << 6) | (0b01 << 4) | (1 << 3) | (1 << 2) | 0b11
}

/// L1 page-table descriptor pointing at the 1 KiB L2 table at `table_pa` (domain 0).
pub const fn l1_table_desc(table_pa: u32) -> u32 {
    (table_pa & 0xffff_fc00) | 0b01
}

/// Links the 1 KiB L2 table at `table_pa` (identity mapped, zeroed by the caller or
/// holding valid entries) for the 1 MiB at `va` in the boot map. The L1 entry must have
/// been a fault entry; no invalidate is needed for that (faults are never cached), the
/// `dsb` + `isb` make the walker see it.
pub fn link_l2_table(va: u32, table_pa: u32) {
    // SAFETY: CPU 0 owns the boot table; a single aligned word store is atomic for the
    // walker.
    unsafe {
        let l1 = &mut *core::ptr::addr_of_mut!(BOOT_L1);
        core::ptr::write_volatile(&mut l1.0[(va >> 20) as usize], l1_table_desc(table_pa));
    }
    dsb_sy();
    isb();
}

/// Clears the boot map's L1 entry for the 1 MiB at `va` *without* invalidating anything:
/// the caller must invalidate (e.g. [`flush_local_tlb`]) before reusing the table memory.
pub fn unlink_l2_table(va: u32) {
    // SAFETY: as in `link_l2_table`.
    unsafe {
        let l1 = &mut *core::ptr::addr_of_mut!(BOOT_L1);
        core::ptr::write_volatile(&mut l1.0[(va >> 20) as usize], 0);
    }
    dsb_sy();
    isb();
}

/// Writes the L2 entry for `va` in the 1 KiB table at `table_pa` (identity mapped) and
/// makes the store visible to the walker (`dsb` + `isb`), but invalidates *nothing*: a
/// translation the TLB already holds for `va` stays in use until someone invalidates it.
pub fn write_l2_entry(table_pa: u32, va: u32, desc: u32) {
    let slot = (table_pa as usize + (((va >> 12) & 0xff) as usize) * 4) as *mut u32;
    // SAFETY: the caller owns the table memory (identity mapped RAM); one aligned word.
    unsafe { core::ptr::write_volatile(slot, desc) };
    dsb_sy();
    isb();
}

/// The current ASID (`CONTEXTIDR.ASID`).
pub fn asid() -> u8 {
    use armv7_mm::arch::cp15::{CONTEXTIDR, CONTEXTIDR_BITS};
    use tock_registers::interfaces::Readable;
    CONTEXTIDR.read(CONTEXTIDR_BITS::ASID) as u8
}

/// Switches to `asid` (`CONTEXTIDR.ASID`, keeping PROCID), followed by an `isb`. The test
/// kernel runs from global section mappings, so the switch needs no TTBR change.
pub fn set_asid(asid: u8) {
    use armv7_mm::arch::cp15::{CONTEXTIDR, CONTEXTIDR_BITS};
    CONTEXTIDR.modify(CONTEXTIDR_BITS::ASID.val(u32::from(asid)));
    isb();
}

/// Invalidates this CPU's whole TLB (`dsb`, TLBIALL, `dsb`, `isb`): for test setup and
/// teardown, not for the code under test.
pub fn flush_local_tlb() {
    dsb_sy();
    tlbi::tlbiall(0);
    dsb_sy();
    isb();
}
