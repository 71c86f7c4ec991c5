//! PL011 UART console at the board's address ([`crate::board::UART_BASE`]: `0x0900_0000` on
//! QEMU `virt`), described with `tock-registers`.

use core::fmt::{self, Write};

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

/// Physical (and, in every test's map, virtual) address of the PL011.
pub const UART_BASE: usize = crate::board::UART_BASE;

register_bitfields! {u32,
    DR [
        DATA OFFSET(0) NUMBITS(8) []
    ],
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ]
}

register_structs! {
    Pl011Regs {
        (0x00 => dr: ReadWrite<u32, DR::Register>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => @END),
    }
}

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

struct Uart;

impl Uart {
    fn regs(&self) -> &'static Pl011Regs {
        // SAFETY: the board's PL011 is at UART_BASE, and every test maps it there
        // (identity) as device memory before turning the MMU on; the registers are MMIO and
        // only accessed through volatile tock-registers accessors.
        unsafe { &*(UART_BASE as *const Pl011Regs) }
    }
    fn put(&self, byte: u8) {
        let regs = self.regs();
        while regs.fr.is_set(FR::TXFF) {}
        regs.dr.write(DR::DATA.val(byte as u32));
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let _guard = LOCK.lock();
    let _ = Uart.write_fmt(args);
}

/// Prints to the console without taking the lock (for the panic and fault paths, which may
/// run while the lock is held).
#[doc(hidden)]
pub fn _print_unlocked(args: fmt::Arguments) {
    let _ = Uart.write_fmt(args);
}

/// Prints to the PL011 console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the PL011 console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
