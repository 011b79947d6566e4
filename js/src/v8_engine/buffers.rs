//! ArrayBuffer memory lives outside the V8 heap, so the heap limit does
//! not see it. Each isolate gets an allocator of ours that counts backing
//! stores against a budget and refuses what would exceed it; V8 then
//! throws a catchable `RangeError` in the handler.
//!
//! Buffers the host creates itself (request bodies, KV values) are
//! allocated by Rust and bounded by the request and value sizes instead.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The ArrayBuffer budget of one isolate.
pub(crate) struct BufferBudget {
    used: AtomicUsize,
    max: usize,
    /// Set when an allocation was refused; read (and reset) per execution.
    pub(crate) refused: AtomicBool,
}

impl BufferBudget {
    pub(crate) fn new(max: usize) -> Arc<BufferBudget> {
        Arc::new(BufferBudget {
            used: AtomicUsize::new(0),
            max,
            refused: AtomicBool::new(false),
        })
    }

    fn reserve(&self, len: usize) -> bool {
        let ok = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(len).filter(|n| *n <= self.max)
            })
            .is_ok();
        if !ok {
            self.refused.store(true, Ordering::SeqCst);
        }
        ok
    }

    fn release(&self, len: usize) {
        self.used.fetch_sub(len, Ordering::SeqCst);
    }
}

/// The same layout for every call on a buffer: V8 passes back the length
/// it was allocated with.
fn layout(len: usize) -> Option<std::alloc::Layout> {
    std::alloc::Layout::from_size_align(len.max(1), 16).ok()
}

unsafe extern "C" fn allocate(b: &BufferBudget, len: usize) -> *mut c_void {
    allocate_with(b, len, true)
}

unsafe extern "C" fn allocate_uninitialized(b: &BufferBudget, len: usize) -> *mut c_void {
    allocate_with(b, len, false)
}

unsafe fn allocate_with(b: &BufferBudget, len: usize, zeroed: bool) -> *mut c_void {
    let Some(layout) = layout(len) else {
        return std::ptr::null_mut();
    };
    if !b.reserve(len) {
        return std::ptr::null_mut();
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe {
        if zeroed {
            std::alloc::alloc_zeroed(layout)
        } else {
            std::alloc::alloc(layout)
        }
    };
    if p.is_null() {
        b.release(len);
    }
    p as *mut c_void
}

unsafe extern "C" fn free(b: &BufferBudget, data: *mut c_void, len: usize) {
    if data.is_null() {
        return;
    }
    if let Some(layout) = layout(len) {
        // SAFETY: `data` came from `allocate_with`/`reallocate` with this length.
        unsafe { std::alloc::dealloc(data as *mut u8, layout) };
        b.release(len);
    }
}

unsafe extern "C" fn reallocate(
    b: &BufferBudget,
    data: *mut c_void,
    old: usize,
    new: usize,
) -> *mut c_void {
    let (Some(old_layout), Some(_)) = (layout(old), layout(new)) else {
        return std::ptr::null_mut();
    };
    if new > old && !b.reserve(new - old) {
        return std::ptr::null_mut();
    }
    // SAFETY: `data` was allocated with `old_layout`; the new size is non-zero.
    let p = unsafe { std::alloc::realloc(data as *mut u8, old_layout, new.max(1)) };
    if p.is_null() {
        if new > old {
            b.release(new - old);
        }
        return std::ptr::null_mut();
    }
    if new < old {
        b.release(old - new);
    } else if new > old {
        // SAFETY: the bytes from `old` to `new` are inside the new block.
        unsafe { std::ptr::write_bytes(p.add(old), 0, new - old) };
    }
    p as *mut c_void
}

unsafe extern "C" fn drop_budget(b: *const BufferBudget) {
    // SAFETY: the allocator holds the one reference made in `allocator`.
    drop(unsafe { Arc::from_raw(b) });
}

static VTABLE: v8::RustAllocatorVtable<BufferBudget> = v8::RustAllocatorVtable {
    allocate,
    allocate_uninitialized,
    free,
    reallocate,
    drop: drop_budget,
};

/// An ArrayBuffer allocator for one isolate, counting against `budget`.
pub(crate) fn allocator(budget: &Arc<BufferBudget>) -> v8::UniqueRef<v8::Allocator> {
    // SAFETY: the allocator owns one Arc reference, released by `drop_budget`.
    unsafe { v8::new_rust_allocator(Arc::into_raw(budget.clone()), &VTABLE) }
}
