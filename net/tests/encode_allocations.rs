//! Goal: the encode path, on the server's hot path, allocates nothing but
//! the growth of its output buffer. Method: a counting global allocator
//! around one encode of a 100-byte GET response.

// The only unsafe in this crate: a GlobalAlloc impl must be `unsafe impl`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use meridian_net::{Encoder, Response, Version, VersionedValue};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; it only
// counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_get_response_allocates_only_buffer_growth() {
    let encoder = Encoder::default();
    let response = Response::Value(VersionedValue {
        version: Version { hlc: 1, origin: 2 },
        value: Bytes::from(vec![7u8; 100]),
    });
    let mut roomy = BytesMut::with_capacity(4096);
    let mut empty = BytesMut::new();

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    encoder.encode(1, &response, &mut roomy).expect("encode");
    let with_room = ALLOCATIONS.load(Ordering::SeqCst) - before;

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    encoder.encode(2, &response, &mut empty).expect("encode");
    let from_empty = ALLOCATIONS.load(Ordering::SeqCst) - before;

    assert_eq!(
        with_room, 0,
        "encoding into a buffer with room must not allocate"
    );
    assert_eq!(from_empty, 1, "encoding into an empty buffer grows it once");
    assert_eq!(roomy.len(), 16 + 12 + 4 + 100);
}
