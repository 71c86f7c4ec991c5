//! Bitfield layouts of the CP15 registers the crate reads or writes.
//!
//! These are plain data descriptions (no instructions), so they are compiled on every
//! target: the host-testable decisions in [`crate::tlb`] (backend selection, errata) decode
//! register *values* with them through
//! [`LocalRegisterCopy`](tock_registers::LocalRegisterCopy), and on ARM the accessors in
//! `cp15` (which re-exports everything here) read and write the live registers with the same
//! layouts.
//!
//! Layouts follow the ARMv7-A Architecture Reference Manual (short-descriptor views, plus the
//! LPAE long-descriptor views where the crate will need them).

// `register_bitfields!` generates items (field value enums, `Register` types) that cannot
// carry doc comments; the registers and their fields themselves are documented.
#![allow(missing_docs)]

use tock_registers::register_bitfields;

register_bitfields! {u32,
    /// System Control Register.
    pub SCTLR_BITS [
        /// MMU enable.
        M OFFSET(0) NUMBITS(1) [Disable = 0, Enable = 1],
        /// Alignment fault checking.
        A OFFSET(1) NUMBITS(1) [],
        /// Data and unified caches enable.
        C OFFSET(2) NUMBITS(1) [],
        /// Branch prediction enable.
        Z OFFSET(11) NUMBITS(1) [],
        /// Instruction cache enable.
        I OFFSET(12) NUMBITS(1) [],
        /// High exception vectors.
        V OFFSET(13) NUMBITS(1) [],
        /// Write implies XN.
        WXN OFFSET(19) NUMBITS(1) [],
        /// TEX remap enable.
        TRE OFFSET(28) NUMBITS(1) [],
        /// Access flag enable.
        AFE OFFSET(29) NUMBITS(1) [],
        /// Thumb exception entry.
        TE OFFSET(30) NUMBITS(1) []
    ],
    /// Translation Table Base Control Register. `N`/`PD0`/`PD1` are the short-descriptor
    /// view (`EAE` = 0); the `T0SZ`.. fields are the long-descriptor view (`EAE` = 1).
    pub TTBCR_BITS [
        /// Short descriptors: width of the TTBR0 region; TTBR0 translates VAs below
        /// `1 << (32 - N)`.
        N OFFSET(0) NUMBITS(3) [],
        /// Short descriptors: translation table walks through TTBR0 disabled.
        PD0 OFFSET(4) NUMBITS(1) [],
        /// Short descriptors: translation table walks through TTBR1 disabled.
        PD1 OFFSET(5) NUMBITS(1) [],
        /// Long descriptors: size offset of the TTBR0 region.
        T0SZ OFFSET(0) NUMBITS(3) [],
        /// Long descriptors: walks through TTBR0 disabled.
        EPD0 OFFSET(7) NUMBITS(1) [],
        /// Long descriptors: inner cacheability of TTBR0 walks.
        IRGN0 OFFSET(8) NUMBITS(2) [NonCacheable = 0, WriteBackWriteAllocate = 1,
            WriteThrough = 2, WriteBackNoWriteAllocate = 3],
        /// Long descriptors: outer cacheability of TTBR0 walks.
        ORGN0 OFFSET(10) NUMBITS(2) [NonCacheable = 0, WriteBackWriteAllocate = 1,
            WriteThrough = 2, WriteBackNoWriteAllocate = 3],
        /// Long descriptors: shareability of TTBR0 walks.
        SH0 OFFSET(12) NUMBITS(2) [NonShareable = 0, OuterShareable = 2, InnerShareable = 3],
        /// Long descriptors: size offset of the TTBR1 region.
        T1SZ OFFSET(16) NUMBITS(3) [],
        /// Long descriptors: the ASID comes from TTBR1 (1) or TTBR0 (0).
        A1 OFFSET(22) NUMBITS(1) [],
        /// Long descriptors: walks through TTBR1 disabled.
        EPD1 OFFSET(23) NUMBITS(1) [],
        /// Long descriptors: inner cacheability of TTBR1 walks.
        IRGN1 OFFSET(24) NUMBITS(2) [],
        /// Long descriptors: outer cacheability of TTBR1 walks.
        ORGN1 OFFSET(26) NUMBITS(2) [],
        /// Long descriptors: shareability of TTBR1 walks.
        SH1 OFFSET(28) NUMBITS(2) [],
        /// Extended address enable (LPAE long descriptors).
        EAE OFFSET(31) NUMBITS(1) []
    ],
    /// Translation Table Base Register 0/1, 32-bit (short-descriptor) view: walk attributes
    /// in the low bits, table base above (its width depends on `TTBCR.N`).
    pub TTBR_BITS [
        /// Inner cacheability bit 1 (`IRGN[1]`; with the multiprocessing extensions).
        IRGN_1 OFFSET(0) NUMBITS(1) [],
        /// Walks are to shareable memory.
        S OFFSET(1) NUMBITS(1) [],
        /// Implementation defined.
        IMP OFFSET(2) NUMBITS(1) [],
        /// Outer cacheability of walks.
        RGN OFFSET(3) NUMBITS(2) [NonCacheable = 0, WriteBackWriteAllocate = 1,
            WriteThrough = 2, WriteBackNoWriteAllocate = 3],
        /// Walks are to outer shareable (0) or inner shareable (1) memory.
        NOS OFFSET(5) NUMBITS(1) [],
        /// Inner cacheability bit 0 (`IRGN[0]`).
        IRGN_0 OFFSET(6) NUMBITS(1) [],
        /// Table base (bits \[31:14\] with `TTBCR.N` = 0; fewer low bits are used for larger N).
        BASE OFFSET(14) NUMBITS(18) []
    ],
    /// Domain Access Control Register: two bits per domain.
    pub DACR_BITS [
        D0 OFFSET(0) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D1 OFFSET(2) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D2 OFFSET(4) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D3 OFFSET(6) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D4 OFFSET(8) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D5 OFFSET(10) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D6 OFFSET(12) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D7 OFFSET(14) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D8 OFFSET(16) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D9 OFFSET(18) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D10 OFFSET(20) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D11 OFFSET(22) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D12 OFFSET(24) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D13 OFFSET(26) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D14 OFFSET(28) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3],
        D15 OFFSET(30) NUMBITS(2) [NoAccess = 0, Client = 1, Manager = 3]
    ],
    /// Context ID Register (short-descriptor view: it carries the current ASID).
    pub CONTEXTIDR_BITS [
        /// Address space identifier of the current process.
        ASID OFFSET(0) NUMBITS(8) [],
        /// Process identifier (for debug and trace; not used by translation).
        PROCID OFFSET(8) NUMBITS(24) []
    ],
    /// Primary Region Remap Register (used when `SCTLR.TRE` = 1).
    pub PRRR_BITS [
        /// Memory type for TEX\[0\]:C:B = n: 0 strongly ordered, 1 device, 2 normal.
        TR0 OFFSET(0) NUMBITS(2) [StronglyOrdered = 0, Device = 1, Normal = 2],
        TR1 OFFSET(2) NUMBITS(2) [StronglyOrdered = 0, Device = 1, Normal = 2],
        TR2 OFFSET(4) NUMBITS(2) [StronglyOrdered = 0, Device = 1, Normal = 2],
        TR3 OFFSET(6) NUMBITS(2) [StronglyOrdered = 0, Device = 1, Normal = 2],
        TR4 OFFSET(8) NUMBITS(2) [StronglyOrdered = 0, Device = 1, Normal = 2],
        TR5 OFFSET(10) NUMBITS(2) [StronglyOrdered = 0, Device = 1, Normal = 2],
        TR6 OFFSET(12) NUMBITS(2) [StronglyOrdered = 0, Device = 1, Normal = 2],
        TR7 OFFSET(14) NUMBITS(2) [StronglyOrdered = 0, Device = 1, Normal = 2],
        /// Shareability of device memory with S = 0.
        DS0 OFFSET(16) NUMBITS(1) [],
        /// Shareability of device memory with S = 1.
        DS1 OFFSET(17) NUMBITS(1) [],
        /// Shareability of normal memory with S = 0.
        NS0 OFFSET(18) NUMBITS(1) [],
        /// Shareability of normal memory with S = 1.
        NS1 OFFSET(19) NUMBITS(1) [],
        /// Not-outer-shareable for region n (bits \[31:24\]).
        NOS OFFSET(24) NUMBITS(8) []
    ],
    /// Normal Memory Remap Register (used when `SCTLR.TRE` = 1).
    pub NMRR_BITS [
        /// Inner cacheability for region n.
        IR0 OFFSET(0) NUMBITS(2) [NonCacheable = 0, WriteBackWriteAllocate = 1,
            WriteThrough = 2, WriteBackNoWriteAllocate = 3],
        IR1 OFFSET(2) NUMBITS(2) [],
        IR2 OFFSET(4) NUMBITS(2) [],
        IR3 OFFSET(6) NUMBITS(2) [],
        IR4 OFFSET(8) NUMBITS(2) [],
        IR5 OFFSET(10) NUMBITS(2) [],
        IR6 OFFSET(12) NUMBITS(2) [],
        IR7 OFFSET(14) NUMBITS(2) [],
        /// Outer cacheability for region n.
        OR0 OFFSET(16) NUMBITS(2) [NonCacheable = 0, WriteBackWriteAllocate = 1,
            WriteThrough = 2, WriteBackNoWriteAllocate = 3],
        OR1 OFFSET(18) NUMBITS(2) [],
        OR2 OFFSET(20) NUMBITS(2) [],
        OR3 OFFSET(22) NUMBITS(2) [],
        OR4 OFFSET(24) NUMBITS(2) [],
        OR5 OFFSET(26) NUMBITS(2) [],
        OR6 OFFSET(28) NUMBITS(2) [],
        OR7 OFFSET(30) NUMBITS(2) []
    ],
    /// Physical Address Register after an `ATS1C**` operation, 32-bit (short-descriptor)
    /// view. With `F` = 1 only `FST` is meaningful; with `F` = 0 the others are.
    pub PAR_BITS [
        /// The translation aborted.
        F OFFSET(0) NUMBITS(1) [],
        /// On a fault: fault status (FS\[4:0\] in bits \[5:1\], external abort type in 6).
        FST OFFSET(1) NUMBITS(6) [],
        /// Success: the translation came from a supersection.
        SS OFFSET(1) NUMBITS(1) [],
        /// Success: outer memory attributes.
        OUTER OFFSET(2) NUMBITS(2) [],
        /// Success: inner memory attributes.
        INNER OFFSET(4) NUMBITS(3) [],
        /// Success: shareable.
        SH OFFSET(7) NUMBITS(1) [],
        /// Success: non-secure.
        NS OFFSET(9) NUMBITS(1) [],
        /// Success: not outer shareable.
        NOS OFFSET(10) NUMBITS(1) [],
        /// The register holds the long-descriptor (64-bit) format.
        LPAE OFFSET(11) NUMBITS(1) [],
        /// Success: bits \[31:12\] of the physical address.
        PA OFFSET(12) NUMBITS(20) []
    ],
    /// Data Fault Status Register. `FS_LO`/`DOMAIN`/`FS_HI` are the short-descriptor view;
    /// `STATUS` is the long-descriptor view (`LPAE` = 1).
    pub DFSR_BITS [
        /// Short descriptors: fault status bits \[3:0\].
        FS_LO OFFSET(0) NUMBITS(4) [],
        /// Short descriptors: domain of the faulting access (where reported).
        DOMAIN OFFSET(4) NUMBITS(4) [],
        /// Long descriptors: fault status code.
        STATUS OFFSET(0) NUMBITS(6) [],
        /// The register uses the long-descriptor format.
        LPAE OFFSET(9) NUMBITS(1) [],
        /// Short descriptors: fault status bit 4.
        FS_HI OFFSET(10) NUMBITS(1) [],
        /// The faulting access was a write.
        WNR OFFSET(11) NUMBITS(1) [],
        /// External abort type.
        EXT OFFSET(12) NUMBITS(1) [],
        /// The abort came from a cache maintenance operation.
        CM OFFSET(13) NUMBITS(1) []
    ],
    /// Instruction Fault Status Register (same layout as DFSR without WnR, domain, CM).
    pub IFSR_BITS [
        /// Short descriptors: fault status bits \[3:0\].
        FS_LO OFFSET(0) NUMBITS(4) [],
        /// Long descriptors: fault status code.
        STATUS OFFSET(0) NUMBITS(6) [],
        /// The register uses the long-descriptor format.
        LPAE OFFSET(9) NUMBITS(1) [],
        /// Short descriptors: fault status bit 4.
        FS_HI OFFSET(10) NUMBITS(1) [],
        /// External abort type.
        EXT OFFSET(12) NUMBITS(1) []
    ],
    /// Multiprocessor Affinity Register.
    pub MPIDR_BITS [
        /// Affinity level 0 (CPU number in a cluster).
        AFF0 OFFSET(0) NUMBITS(8) [],
        /// Affinity level 1.
        AFF1 OFFSET(8) NUMBITS(8) [],
        /// Affinity level 2.
        AFF2 OFFSET(16) NUMBITS(8) [],
        /// Lowest affinity level is multithreaded.
        MT OFFSET(24) NUMBITS(1) [],
        /// Uniprocessor system (only meaningful when `MP` is set).
        U OFFSET(30) NUMBITS(1) [],
        /// Multiprocessing extensions implemented (register in the MP format).
        MP OFFSET(31) NUMBITS(1) []
    ],
    /// Main ID Register.
    pub MIDR_BITS [
        /// Revision: the `p` in `rNpM`.
        REVISION OFFSET(0) NUMBITS(4) [],
        /// Primary part number (0xC0F Cortex-A15, 0xC07 Cortex-A7, 0xC09 Cortex-A9).
        PARTNUM OFFSET(4) NUMBITS(12) [],
        /// Architecture (0xF: defined by the CPUID scheme).
        ARCHITECTURE OFFSET(16) NUMBITS(4) [],
        /// Variant: the `r` in `rNpM`.
        VARIANT OFFSET(20) NUMBITS(4) [],
        /// Implementer code.
        IMPLEMENTER OFFSET(24) NUMBITS(8) [Arm = 0x41, Broadcom = 0x42, Qualcomm = 0x51]
    ],
    /// Revision ID Register: implementation defined. The fields named here are the ones
    /// Cortex-A15 uses to report ECO fixes for erratum 798181.
    pub REVIDR_BITS [
        /// Cortex-A15 r2p2 and later: ECO fix for erratum 798181 (partial).
        A15_798181_FIX OFFSET(4) NUMBITS(1) [],
        /// Cortex-A15 r2p4..r3p2: the updated ECO fix for erratum 798181 (with bit 4: none
        /// of the workaround is needed).
        A15_798181_FIX_UPDATE OFFSET(9) NUMBITS(1) []
    ],
    /// Memory Model Feature Register 0.
    pub ID_MMFR0_BITS [
        /// VMSA support (3: ARMv7 with PXN absent, 4: with PXN, 5: with LPAE).
        VMSA OFFSET(0) NUMBITS(4) [],
        /// PMSA support.
        PMSA OFFSET(4) NUMBITS(4) [],
        /// Outermost shareability.
        OUTERSHR OFFSET(8) NUMBITS(4) [],
        /// Shareability levels.
        SHARELVL OFFSET(12) NUMBITS(4) [],
        /// Tightly coupled memory.
        TCM OFFSET(16) NUMBITS(4) [],
        /// Auxiliary registers.
        AUXREG OFFSET(20) NUMBITS(4) [],
        /// Fast context switch extension (0 or 1: present; 0 on ARMv7 with LPAE).
        FCSE OFFSET(24) NUMBITS(4) [],
        /// Innermost shareability.
        INNERSHR OFFSET(28) NUMBITS(4) []
    ],
    /// Memory Model Feature Register 1.
    pub ID_MMFR1_BITS [
        /// L1 Harvard cache maintenance by VA.
        L1HVDVA OFFSET(0) NUMBITS(4) [],
        /// L1 unified cache maintenance by VA.
        L1UNIVA OFFSET(4) NUMBITS(4) [],
        /// L1 Harvard cache maintenance by set/way.
        L1HVDSW OFFSET(8) NUMBITS(4) [],
        /// L1 unified cache maintenance by set/way.
        L1UNISW OFFSET(12) NUMBITS(4) [],
        /// L1 Harvard cache maintenance (ARMv6 style).
        L1HVD OFFSET(16) NUMBITS(4) [],
        /// L1 unified cache maintenance (ARMv6 style).
        L1UNI OFFSET(20) NUMBITS(4) [],
        /// L1 cache test and clean.
        L1TSTCLN OFFSET(24) NUMBITS(4) [],
        /// Branch predictor: when BPIALL/BPIMVA are required (4: never, predictor is
        /// transparent).
        BPRED OFFSET(28) NUMBITS(4) []
    ],
    /// Memory Model Feature Register 2.
    pub ID_MMFR2_BITS [
        /// L1 Harvard foreground cache maintenance.
        L1HVDFG OFFSET(0) NUMBITS(4) [],
        /// L1 Harvard background cache maintenance.
        L1HVDBG OFFSET(4) NUMBITS(4) [],
        /// L1 Harvard range cache maintenance.
        L1HVDRNG OFFSET(8) NUMBITS(4) [],
        /// Harvard TLB maintenance operations.
        HVDTLB OFFSET(12) NUMBITS(4) [],
        /// Unified TLB maintenance (6: all ARMv7 forms including by ASID and VA-all-ASID).
        UNITLB OFFSET(16) NUMBITS(4) [],
        /// Memory barrier operations.
        MEMBARR OFFSET(20) NUMBITS(4) [],
        /// WFI stall.
        WFISTALL OFFSET(24) NUMBITS(4) [],
        /// Hardware access flag management.
        HWACCFLG OFFSET(28) NUMBITS(4) []
    ],
    /// Memory Model Feature Register 3.
    pub ID_MMFR3_BITS [
        /// Cache maintenance by VA.
        CMAINTVA OFFSET(0) NUMBITS(4) [],
        /// Cache maintenance by set/way.
        CMAINTSW OFFSET(4) NUMBITS(4) [],
        /// Branch predictor maintenance.
        BPMAINT OFFSET(8) NUMBITS(4) [],
        /// Maintenance broadcast: 0 none (operations act on this CPU only), 1 cache and
        /// branch predictor operations broadcast but TLB operations do not, 2 all of them,
        /// including TLB maintenance, broadcast in the inner shareable domain.
        MAINTBCST OFFSET(12) NUMBITS(4) [
            None = 0,
            CacheOnly = 1,
            All = 2
        ],
        /// Privileged access never (ARMv8 AArch32).
        PAN OFFSET(16) NUMBITS(4) [],
        /// Coherent walk: 1 means table updates need no cache clean to the point of
        /// unification before the walker sees them.
        COHWALK OFFSET(20) NUMBITS(4) [],
        /// Cached memory size.
        CMEMSZ OFFSET(24) NUMBITS(4) [],
        /// Supersection support (0: supported, 0xF: not).
        SUPERSEC OFFSET(28) NUMBITS(4) []
    ],
    /// Auxiliary Control Register: IMPLEMENTATION DEFINED. Only the bits the crate
    /// checks are described, at the position the Cortex-A5/A7/A9/A12/A15/A17 and
    /// Brahma-B15 give them (which parts have which: `crate::tlb::select::ActlrBits`);
    /// every other bit is left as it is (read-modify-write).
    pub ACTLR_BITS [
        /// Cortex-A5/A9 `FW`: cache and TLB maintenance operations of this core are
        /// broadcast (with `SMP`). Another function, or reserved, on other parts.
        FW OFFSET(0) NUMBITS(1) [],
        /// `SMP` (the A9 TRM's "SMP/nAMP"): the core takes part in coherency and in
        /// broadcast maintenance.
        SMP OFFSET(6) NUMBITS(1) [],
        /// Cortex-A7 `DDVM`: Distributed Virtual Memory transactions (how maintenance is
        /// broadcast) disabled. Another function, or reserved, on other parts.
        A7_DDVM OFFSET(15) NUMBITS(1) []
    ],
    /// Plain 32-bit register without named fields.
    pub RAW [
        /// The whole register.
        VALUE OFFSET(0) NUMBITS(32) []
    ]
}

register_bitfields! {u64,
    /// Translation Table Base Register 0/1, 64-bit (long-descriptor) view.
    pub TTBR64_BITS [
        /// Table base address (bits \[39:x\]; low bits below the table alignment are zero).
        BADDR OFFSET(0) NUMBITS(40) [],
        /// ASID (when `TTBCR.A1` selects this TTBR).
        ASID OFFSET(48) NUMBITS(8) []
    ],
    /// Physical Address Register, 64-bit (long-descriptor) view.
    pub PAR64_BITS [
        /// The translation aborted.
        F OFFSET(0) NUMBITS(1) [],
        /// On a fault: fault status code.
        FST OFFSET(1) NUMBITS(6) [],
        /// Success: shareability.
        SH OFFSET(7) NUMBITS(2) [],
        /// Success: non-secure.
        NS OFFSET(9) NUMBITS(1) [],
        /// The register holds the long-descriptor format.
        LPAE OFFSET(11) NUMBITS(1) [],
        /// Success: bits \[39:12\] of the physical address.
        PA OFFSET(12) NUMBITS(28) [],
        /// Success: memory attributes (MAIR encoding).
        ATTR OFFSET(56) NUMBITS(8) []
    ]
}

/// Fault status `FS[4:0]` of a short-descriptor DFSR/IFSR value (`FS[4]` is bit 10).
#[must_use]
pub const fn short_fault_status(fsr: u32) -> u8 {
    ((fsr & 0xf) | ((fsr >> 6) & 0x10)) as u8
}
