//! The heap limit of a QuickJS realm, enforced by the allocator itself.
//!
//! QuickJS's own memory limit refuses an allocation without telling anyone
//! but the caller, and when QuickJS cannot even allocate its out-of-memory
//! error it throws `null`, which a script may catch and carry on. V8's heap
//! limit cannot be caught. So the realm's runtime allocates through
//! [`BudgetAllocator`]: it counts every block against the limit, refuses
//! past it, and sets the realm's `out_of_memory` flag at the moment it
//! refuses. The engine then reports `JSHeapLimitExceeded` whatever the
//! script did with the error, and drops the realm.

use std::cell::Cell;
use std::rc::Rc;

use rquickjs::allocator::Allocator;

/// What a realm may allocate, and what it has.
pub(super) struct Budget {
    limit: usize,
    used: Cell<usize>,
    /// Shared with the realm's watch: set on the first refusal.
    out_of_memory: Rc<Cell<bool>>,
}

impl Budget {
    pub(super) fn new(limit: usize, out_of_memory: Rc<Cell<bool>>) -> Rc<Budget> {
        Rc::new(Budget {
            limit,
            used: Cell::new(0),
            out_of_memory,
        })
    }

    /// Bytes allocated now.
    pub(super) fn used(&self) -> usize {
        self.used.get()
    }

    /// Bytes that can still be allocated.
    pub(super) fn room(&self) -> usize {
        self.limit.saturating_sub(self.used.get())
    }

    /// Whether `extra` more bytes fit; a refusal marks the realm.
    fn admit(&self, extra: usize) -> bool {
        if extra > self.room() {
            self.out_of_memory.set(true);
            return false;
        }
        true
    }
}

/// The system allocator, counted against a [`Budget`].
pub(super) struct BudgetAllocator(pub(super) Rc<Budget>);

fn usable(ptr: *mut u8) -> usize {
    // SAFETY: `ptr` came from this allocator's malloc/calloc/realloc.
    unsafe { libc::malloc_usable_size(ptr.cast()) }
}

// SAFETY: every block comes from the C allocator (aligned for any type,
// at least `usize`); `usable_size` is the C allocator's own answer for it.
unsafe impl Allocator for BudgetAllocator {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.0.admit(size) {
            return std::ptr::null_mut();
        }
        // SAFETY: plain C allocation.
        let ptr = unsafe { libc::malloc(size) }.cast::<u8>();
        if !ptr.is_null() {
            self.0.used.set(self.0.used.get() + usable(ptr));
        }
        ptr
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        let Some(total) = count.checked_mul(size) else {
            return std::ptr::null_mut();
        };
        if !self.0.admit(total) {
            return std::ptr::null_mut();
        }
        // SAFETY: plain C allocation.
        let ptr = unsafe { libc::calloc(count, size) }.cast::<u8>();
        if !ptr.is_null() {
            self.0.used.set(self.0.used.get() + usable(ptr));
        }
        ptr
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        let size = usable(ptr);
        self.0.used.set(self.0.used.get().saturating_sub(size));
        // SAFETY: the caller passes a block of this allocator.
        unsafe { libc::free(ptr.cast()) };
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        if ptr.is_null() {
            return self.alloc(new_size);
        }
        let old = usable(ptr);
        if new_size > old && !self.0.admit(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller passes a block of this allocator; on failure
        // the old block stays valid and counted.
        let moved = unsafe { libc::realloc(ptr.cast(), new_size) }.cast::<u8>();
        if !moved.is_null() {
            let used = self.0.used.get().saturating_sub(old) + usable(moved);
            self.0.used.set(used);
        }
        moved
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        usable(ptr)
    }
}
