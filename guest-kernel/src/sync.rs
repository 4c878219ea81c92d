//! Global state for a kernel with one CPU and no interrupts, only exceptions.
//!
//! Nothing runs concurrently, but an exception can arrive while a global is in use (a fault in
//! the middle of the VMM is the very bug this kernel reproduces), so [`Global`] notices
//! re-entry and reports it instead of handing out a second `&mut`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

pub struct Global<T> {
    name: &'static str,
    busy: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: one CPU; `busy` makes every access exclusive, including from exception handlers.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(None),
        }
    }

    /// Set (or replace) the value.
    pub fn set(&self, value: T) {
        self.with_slot(|slot| *slot = Some(value));
    }

    /// Run `f` on the value; `None` if it was never set.
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.with_slot(|slot| slot.as_mut().map(f))
    }

    /// Run `f` on the value, which the kernel set during boot.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let name = self.name;
        self.try_with(f)
            .unwrap_or_else(|| panic!("{name} used before it was set up"))
    }

    fn with_slot<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        if self.busy.swap(true, Ordering::Acquire) {
            panic!(
                "{} re-entered: an exception arrived while it was in use",
                self.name
            );
        }
        // SAFETY: `busy` was false, so no other reference to the value exists.
        let result = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        result
    }
}

/// A value set once during boot and then only read, for tables the CPU keeps pointers to
/// (GDT, TSS, IDT), which must live at a fixed address for ever.
pub struct Once<T> {
    ready: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: written once before `ready` is set, read-only afterwards; one CPU.
unsafe impl<T> Sync for Once<T> {}

impl<T> Once<T> {
    pub const fn new() -> Self {
        Self {
            ready: AtomicBool::new(false),
            value: UnsafeCell::new(None),
        }
    }

    /// Store `value`, or panic if this was already set up.
    pub fn init(&'static self, value: T) -> &'static T {
        assert!(
            !self.ready.swap(true, Ordering::AcqRel),
            "a boot-time table was set up twice"
        );
        // SAFETY: `ready` was false, so this is the only access ever made with `&mut`.
        let slot = unsafe { &mut *self.value.get() };
        slot.insert(value)
    }
}
