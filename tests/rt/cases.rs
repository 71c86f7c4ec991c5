//! Several named cases in one kernel, each reported as `case <name> ... ok|FAILED`.

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// A case's result: `Err(())` after the failing check has printed why.
pub type CaseResult = Result<(), ()>;

/// One named case.
pub struct Case {
    /// Printed name.
    pub name: &'static str,
    /// The case body.
    pub run: fn() -> CaseResult,
}

static CURRENT: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);

/// The case running now, if any (for the panic handler).
pub fn current() -> Option<&'static str> {
    let p = CURRENT.load(Ordering::SeqCst);
    if p.is_null() {
        return None;
    }
    let len = CURRENT_LEN.load(Ordering::SeqCst);
    // SAFETY: `p`/`len` were stored together from a `&'static str` below.
    Some(unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(p, len)) })
}

/// Runs every case (or those whose name contains the `case=` argument), prints a result line
/// for each and a summary, and exits with status 0 only if all passed and at least one ran.
pub fn run(cases: &[Case]) -> ! {
    let filter = crate::arg("case");
    let (mut passed, mut failed) = (0, 0);
    for case in cases {
        if let Some(f) = filter {
            if !case.name.contains(f) {
                continue;
            }
        }
        CURRENT_LEN.store(case.name.len(), Ordering::SeqCst);
        CURRENT.store(case.name.as_ptr() as *mut u8, Ordering::SeqCst);
        let before = crate::frames::stats().outstanding;
        let mut result = (case.run)();
        let after = crate::frames::stats().outstanding;
        if result.is_ok() && after != before {
            crate::println!(
                "    frame leak: {} frames outstanding before the case, {} after",
                before,
                after
            );
            result = Err(());
        }
        CURRENT.store(core::ptr::null_mut(), Ordering::SeqCst);
        match result {
            Ok(()) => {
                passed += 1;
                crate::println!("case {} ... ok", case.name);
            }
            Err(()) => {
                failed += 1;
                crate::println!("case {} ... FAILED", case.name);
            }
        }
    }
    crate::println!("cases: {} passed, {} failed", passed, failed);
    if failed > 0 || passed == 0 {
        crate::semihosting::exit(1)
    }
    crate::semihosting::exit(0)
}

/// Fails the current case with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::println!("    check failed at {}:{}: {}", file!(), line!(), format_args!($($arg)+));
            return Err(());
        }
    };
}

/// Fails the current case unless both values are equal.
#[macro_export]
macro_rules! ensure_eq {
    ($a:expr, $b:expr, $($arg:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            $crate::println!("    check failed at {}:{}: {:?} != {:?}: {}", file!(), line!(), a, b,
                format_args!($($arg)+));
            return Err(());
        }
    }};
}
