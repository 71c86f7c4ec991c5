//! Reset entry, per-CPU stacks and the exception vector table.
//!
//! CPU 0 enters `_start` in SVC mode with the MMU off. Each CPU gets its own SVC stack and
//! small abort/undefined-mode stacks, indexed by `MPIDR.Aff0`, so that secondary CPUs
//! can use the same path: on `virt` they are started later (PSCI `CPU_ON` with `_start`
//! as entry); on the boards where every CPU enters `_start` at reset
//! ([`crate::board::Secondaries::Pen`]) a secondary waits in the pen, after its stacks and
//! vectors are set up and before it touches anything CPU 0 initialises, until
//! [`crate::smp::start`] releases it.

use core::arch::global_asm;

/// Maximum number of CPUs the runtime gives stacks to.
pub const MAX_CPUS: usize = 4;
/// SVC-mode stack per CPU.
pub const STACK_SIZE: usize = 64 * 1024;
/// Abort/undefined-mode stack per CPU.
pub const EXC_STACK_SIZE: usize = 4 * 1024;

#[repr(C, align(16))]
struct Stacks<const N: usize>([u8; N]);

#[no_mangle]
#[link_section = ".stacks"]
static mut RT_SVC_STACKS: Stacks<{ STACK_SIZE * MAX_CPUS }> = Stacks([0; STACK_SIZE * MAX_CPUS]);
#[no_mangle]
#[link_section = ".stacks"]
static mut RT_EXC_STACKS: Stacks<{ EXC_STACK_SIZE * MAX_CPUS }> =
    Stacks([0; EXC_STACK_SIZE * MAX_CPUS]);

global_asm!(
    r#"
    .section .text.boot, "ax"
    .arm
    .global _start
_start:
    cpsid aif
    mrc p15, 0, r4, c0, c0, 5       @ MPIDR
    and r4, r4, #0xff               @ Aff0 = CPU number
    cmp r4, #{max_cpus}
    bhs 9f

    @ Abort and undefined modes: exception stacks (top of this CPU's slot).
    ldr r5, ={exc_stacks}
    add r6, r4, #1
    ldr r7, ={exc_size}
    mla r5, r6, r7, r5
    cps #0x17
    mov sp, r5
    cps #0x1b
    mov sp, r5
    cps #0x13

    @ SVC stack.
    ldr r5, ={svc_stacks}
    ldr r7, ={svc_size}
    mla sp, r6, r7, r5

    @ Vectors.
    ldr r5, =rt_vectors
    mcr p15, 0, r5, c12, c0, 0
    isb

    cmp r4, #0
    bne 1f
    @ CPU 0 clears .bss. The stacks live in their own NOLOAD section, so this does not
    @ clear the stack we are running on.
    ldr r0, =__bss_start
    ldr r1, =__bss_end
    mov r5, #0
2:  cmp r0, r1
    strlo r5, [r0], #4
    blo 2b
3:  mov r0, r4
    bl rt_primary_entry
    b 9f
1:
    .if {pen}
    @ Held until `smp::start` sets this CPU's word of the pen (in .data, which CPU 0
    @ never clears; read with the MMU and caches off, so CPU 0 cleans it to PoC).
    ldr r5, ={pen_words}
    add r5, r5, r4, lsl #2
4:  ldr r6, [r5]
    cmp r6, #0
    bne 5f
    wfe
    b 4b
5:  dmb
    .endif
    mov r0, r4
    bl rt_secondary_entry
9:  wfe
    b 9b
    .ltorg

    .section .text.vectors, "ax"
    .align 5
    .global rt_vectors
rt_vectors:
    ldr pc, =rt_exc_reset
    ldr pc, =rt_exc_undef
    ldr pc, =rt_exc_svc
    ldr pc, =rt_exc_pabt
    ldr pc, =rt_exc_dabt
    ldr pc, =rt_exc_reset
    ldr pc, =rt_exc_irq
    ldr pc, =rt_exc_fiq
    .ltorg

rt_exc_reset:
    mov r0, #0
    b rt_exc_fatal_stub
rt_exc_undef:
    sub lr, lr, #4
    mov r0, #1
    b rt_exc_fatal_stub
rt_exc_svc:
    sub lr, lr, #4
    mov r0, #2
    b rt_exc_fatal_stub
    @ IRQ (rt::gic): return state and scratch registers onto the interrupted SVC stack
    @ (IRQ mode has none), the Rust handler on an 8-byte aligned stack, then back.
rt_exc_irq:
    sub lr, lr, #4
    srsdb sp!, #0x13
    cps #0x13
    push {{r0-r3, r12, lr}}
    and r1, sp, #4
    sub sp, sp, r1
    push {{r1, r2}}
    bl rt_irq
    pop {{r1, r2}}
    add sp, sp, r1
    pop {{r0-r3, r12, lr}}
    rfeia sp!
rt_exc_fiq:
    sub lr, lr, #4
    mov r0, #7
    b rt_exc_fatal_stub
rt_exc_fatal_stub:
    mov r1, lr
    bl rt_exception_fatal
    b .

    @ Data abort: LR = faulting instruction + 8. The Rust handler returns where to resume.
rt_exc_dabt:
    sub lr, lr, #8
    push {{r0-r3, r12, lr}}
    mov r0, lr
    bl rt_data_abort
    str r0, [sp, #20]
    pop {{r0-r3, r12, lr}}
    movs pc, lr

    @ Prefetch abort: LR = faulting instruction + 4. The handler gets the interrupted
    @ mode's LR (the return address of a probe's `blx`) so that an expected instruction
    @ fault can resume after the call.
rt_exc_pabt:
    sub lr, lr, #4
    push {{r0-r3, r12, lr}}
    mov r0, lr
    cps #0x13
    mov r1, lr
    cps #0x17
    bl rt_prefetch_abort
    str r0, [sp, #20]
    pop {{r0-r3, r12, lr}}
    movs pc, lr
    .ltorg
"#,
    max_cpus = const MAX_CPUS,
    exc_stacks = sym RT_EXC_STACKS,
    exc_size = const EXC_STACK_SIZE,
    svc_stacks = sym RT_SVC_STACKS,
    svc_size = const STACK_SIZE,
    pen = const (crate::board::SECONDARIES as u32 == crate::board::Secondaries::Pen as u32) as u32,
    pen_words = sym crate::smp::RT_PEN,
);
