//! The real host: imports from the `kiri` module, and the scratch buffer behind `kiri_alloc`.

use core::sync::atomic::{AtomicUsize, Ordering};

#[link(wasm_import_module = "kiri")]
extern "C" {
    #[link_name = "emit"]
    fn kiri_emit(tp: *const u8, tl: usize, pp: *const u8, pl: usize) -> i32;
    #[link_name = "publish"]
    fn kiri_publish(tp: *const u8, tl: usize, pp: *const u8, pl: usize) -> i32;
    #[link_name = "respond"]
    fn kiri_respond(p: *const u8, l: usize) -> i32;
    #[link_name = "log"]
    fn kiri_log(level: i32, p: *const u8, l: usize);
    #[link_name = "now_ms"]
    fn kiri_now_ms() -> i64;
    #[link_name = "config"]
    fn kiri_config(kp: *const u8, kl: usize, op: *mut u8, oc: usize) -> i32;
    #[link_name = "http_request"]
    fn kiri_http_request(op: *mut u8, oc: usize) -> i32;
    #[link_name = "http_response"]
    fn kiri_http_response(status: i32, hp: *const u8, hl: usize) -> i32;
    #[link_name = "config_json"]
    fn kiri_config_json(kp: *const u8, kl: usize, op: *mut u8, oc: usize) -> i32;
    #[link_name = "kv_get"]
    fn kiri_kv_get(kp: *const u8, kl: usize, op: *mut u8, oc: usize) -> i32;
    #[link_name = "kv_put"]
    fn kiri_kv_put(kp: *const u8, kl: usize, vp: *const u8, vl: usize) -> i32;
    #[link_name = "kv_delete"]
    fn kiri_kv_delete(kp: *const u8, kl: usize) -> i32;
    #[link_name = "kv_list"]
    fn kiri_kv_list(pp: *const u8, pl: usize, op: *mut u8, oc: usize) -> i32;
    #[link_name = "caller"]
    fn kiri_caller(op: *mut u8, oc: usize) -> i32;
    #[link_name = "input_format"]
    fn kiri_input_format() -> i32;
}

pub fn input_format() -> i32 {
    // SAFETY: no arguments; the host returns a code.
    unsafe { kiri_input_format() }
}

pub fn caller(out: &mut [u8]) -> i32 {
    // SAFETY: `out` is writable for its length; the host writes at most that many bytes.
    unsafe { kiri_caller(out.as_mut_ptr(), out.len()) }
}

pub fn kv_get(key: &[u8], out: &mut [u8]) -> i32 {
    // SAFETY: `out` is writable for its length; the host writes at most that many bytes.
    unsafe { kiri_kv_get(key.as_ptr(), key.len(), out.as_mut_ptr(), out.len()) }
}

pub fn kv_put(key: &[u8], value: &[u8]) -> i32 {
    // SAFETY: both slices are valid for their lengths; the host only reads them.
    unsafe { kiri_kv_put(key.as_ptr(), key.len(), value.as_ptr(), value.len()) }
}

pub fn kv_delete(key: &[u8]) -> i32 {
    // SAFETY: the slice is valid for its length; the host only reads it.
    unsafe { kiri_kv_delete(key.as_ptr(), key.len()) }
}

pub fn kv_list(prefix: &[u8], out: &mut [u8]) -> i32 {
    // SAFETY: as for kv_get.
    unsafe { kiri_kv_list(prefix.as_ptr(), prefix.len(), out.as_mut_ptr(), out.len()) }
}

pub fn emit(topic: &[u8], payload: &[u8]) -> i32 {
    // SAFETY: both slices are valid for their lengths; the host only reads them.
    unsafe { kiri_emit(topic.as_ptr(), topic.len(), payload.as_ptr(), payload.len()) }
}

pub fn publish(topic: &[u8], payload: &[u8]) -> i32 {
    // SAFETY: as for emit.
    unsafe { kiri_publish(topic.as_ptr(), topic.len(), payload.as_ptr(), payload.len()) }
}

pub fn respond(body: &[u8]) -> i32 {
    // SAFETY: the slice is valid for its length; the host only reads it.
    unsafe { kiri_respond(body.as_ptr(), body.len()) }
}

pub fn log(level: i32, msg: &[u8]) {
    // SAFETY: the slice is valid for its length; the host only reads it.
    unsafe { kiri_log(level, msg.as_ptr(), msg.len()) }
}

pub fn now_ms() -> i64 {
    // SAFETY: no arguments.
    unsafe { kiri_now_ms() }
}

pub fn http_request(out: &mut [u8]) -> i32 {
    // SAFETY: `out` is writable for its length; the host writes at most that many bytes.
    unsafe { kiri_http_request(out.as_mut_ptr(), out.len()) }
}

pub fn http_response(status: i32, headers: &[u8]) -> i32 {
    // SAFETY: the slice is valid for its length; the host only reads it.
    unsafe { kiri_http_response(status, headers.as_ptr(), headers.len()) }
}

pub fn config_json(key: &[u8], out: &mut [u8]) -> i32 {
    // SAFETY: `out` is writable for its length; the host writes at most that many bytes.
    unsafe { kiri_config_json(key.as_ptr(), key.len(), out.as_mut_ptr(), out.len()) }
}

pub fn config(key: &[u8], out: &mut [u8]) -> i32 {
    // SAFETY: `out` is writable for its length; the host writes at most that many bytes.
    unsafe { kiri_config(key.as_ptr(), key.len(), out.as_mut_ptr(), out.len()) }
}

// One reusable scratch region for the event the host writes in. It only grows (doubling),
// so the memory it takes is at most about twice the largest event seen.
static SCRATCH_PTR: AtomicUsize = AtomicUsize::new(0);
static SCRATCH_CAP: AtomicUsize = AtomicUsize::new(0);
const PAGE: usize = 65536;

pub fn alloc(len: i32) -> i32 {
    if len < 0 {
        return 0;
    }
    let len = len as usize;
    let cap = SCRATCH_CAP.load(Ordering::Relaxed);
    if len <= cap && cap > 0 {
        return SCRATCH_PTR.load(Ordering::Relaxed) as i32;
    }
    let want = len.max(cap * 2).max(PAGE);
    let pages = want.div_ceil(PAGE);
    let old = core::arch::wasm32::memory_grow(0, pages);
    if old == usize::MAX {
        return 0;
    }
    SCRATCH_PTR.store(old * PAGE, Ordering::Relaxed);
    SCRATCH_CAP.store(pages * PAGE, Ordering::Relaxed);
    (old * PAGE) as i32
}
