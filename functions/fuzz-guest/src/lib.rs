//! The host ABI's fuzz guest: it imports every host function of ABI v1 and runs its event
//! payload as a program of host calls with arbitrary pointers, lengths and values, so that a
//! fuzzer (`kiri::fuzzing::HostAbi`, the `host_abi` target) reaches every host function with
//! whatever a hostile module could pass: out of bounds, negative, overlapping, huge.
//!
//! Built for `wasm32-unknown-unknown` by `make functions`; on other targets only its constants
//! are compiled (the tests write programs with them).
//!
//! A program is a sequence of instructions, each an opcode byte (taken modulo 16) and its
//! operands; a program that ends early reads zeros, and running off its end returns 0.
//!
//! | op | instruction |
//! |---|---|
//! | 0 / 1 | `emit` / `publish` (topic ptr, len, payload ptr, len) |
//! | 2 | `respond` (ptr, len) |
//! | 3 | `log` (level, ptr, len) |
//! | 4 | `now_ms` |
//! | 5 / 6 | `config` / `kv_get` (key ptr, len, out ptr, cap) |
//! | 7 | `kv_put` (key ptr, len, value ptr, len) |
//! | 8 | `kv_delete` (key ptr, len) |
//! | 9 | `kv_list` (prefix ptr, len, out ptr, cap) |
//! | 10 | `caller` (out ptr, cap) |
//! | 11 | `memory.grow` by a byte's worth of pages |
//! | 12 | spin a byte times 1,000 loop iterations (fuel and the wall clock) |
//! | 13 | return an operand as the result code |
//! | 14 | trap (`unreachable`) if the next byte is `0x55` |
//! | 15 | run the next instruction a byte's number of times (hits the per-invocation limits) |
//!
//! An operand is a tag byte (modulo 8) and what the tag reads: `0` a byte, `1` two bytes, `2`
//! four bytes (any 32-bit value: negative, huge), `3` the payload's address plus a byte (the
//! program's own bytes as topics, keys, values), `4` the address of [`WORDS`] plus a byte
//! (topics and keys the gateway's harness configures), `5` the address of the output buffer
//! plus two bytes, `6` the memory's size minus a byte (its last bytes and just past them),
//! `7` the result of the previous host call.
#![cfg_attr(target_arch = "wasm32", no_std)]

/// The opcodes (taken modulo 16).
pub mod op {
    /// `emit(topic ptr, len, payload ptr, len)`.
    pub const EMIT: u8 = 0;
    /// `publish(topic ptr, len, payload ptr, len)`.
    pub const PUBLISH: u8 = 1;
    /// `respond(ptr, len)`.
    pub const RESPOND: u8 = 2;
    /// `log(level, ptr, len)`.
    pub const LOG: u8 = 3;
    /// `now_ms()`.
    pub const NOW_MS: u8 = 4;
    /// `config(key ptr, len, out ptr, cap)`.
    pub const CONFIG: u8 = 5;
    /// `kv_get(key ptr, len, out ptr, cap)`.
    pub const KV_GET: u8 = 6;
    /// `kv_put(key ptr, len, value ptr, len)`.
    pub const KV_PUT: u8 = 7;
    /// `kv_delete(key ptr, len)`.
    pub const KV_DELETE: u8 = 8;
    /// `kv_list(prefix ptr, len, out ptr, cap)`.
    pub const KV_LIST: u8 = 9;
    /// `caller(out ptr, cap)`.
    pub const CALLER: u8 = 10;
    /// `memory.grow` by the next byte's number of pages.
    pub const GROW: u8 = 11;
    /// Loop the next byte times 1,000 iterations.
    pub const SPIN: u8 = 12;
    /// Return an operand as the result code.
    pub const RETURN: u8 = 13;
    /// Trap if the next byte is [`TRAP_KEY`].
    pub const TRAP: u8 = 14;
    /// Run the next instruction the next byte's number of times.
    pub const REPEAT: u8 = 15;
    /// What [`TRAP`] wants to see.
    pub const TRAP_KEY: u8 = 0x55;
}

/// The operand tags (taken modulo 8).
pub mod tag {
    /// One byte.
    pub const BYTE: u8 = 0;
    /// Two bytes, little-endian.
    pub const U16: u8 = 1;
    /// Four bytes, little-endian: any 32-bit value.
    pub const RAW: u8 = 2;
    /// The payload's address plus a byte.
    pub const PAYLOAD: u8 = 3;
    /// The address of [`super::WORDS`] plus a byte.
    pub const WORD: u8 = 4;
    /// The output buffer's address plus two bytes (little-endian).
    pub const OUT: u8 = 5;
    /// The memory's size minus a byte.
    pub const EDGE: u8 = 6;
    /// The previous host call's result.
    pub const LAST: u8 = 7;
}

/// Text the harness's configuration knows (allowed and refused topics, keys, config keys),
/// NUL-separated so a fuzzer can point at any of them or run over into the next.
pub const WORDS: &[u8] =
    b"out/a\0alerts/x/y\0local/n\0a/#\0$sys/x\0k1\0k2\0kv/a\0limit\0unit\0big\0user-\0\xff\xfe\0";

#[cfg(target_arch = "wasm32")]
mod guest {
    use core::arch::wasm32;
    use core::ptr::addr_of_mut;

    use super::{op, tag};

    #[link(wasm_import_module = "kiri")]
    extern "C" {
        #[link_name = "emit"]
        fn host_emit(tp: i32, tl: i32, pp: i32, pl: i32) -> i32;
        #[link_name = "publish"]
        fn host_publish(tp: i32, tl: i32, pp: i32, pl: i32) -> i32;
        #[link_name = "respond"]
        fn host_respond(p: i32, l: i32) -> i32;
        #[link_name = "log"]
        fn host_log(level: i32, p: i32, l: i32);
        #[link_name = "now_ms"]
        fn host_now_ms() -> i64;
        #[link_name = "config"]
        fn host_config(kp: i32, kl: i32, op: i32, oc: i32) -> i32;
        #[link_name = "kv_get"]
        fn host_kv_get(kp: i32, kl: i32, op: i32, oc: i32) -> i32;
        #[link_name = "kv_put"]
        fn host_kv_put(kp: i32, kl: i32, vp: i32, vl: i32) -> i32;
        #[link_name = "kv_delete"]
        fn host_kv_delete(kp: i32, kl: i32) -> i32;
        #[link_name = "kv_list"]
        fn host_kv_list(pp: i32, pl: i32, op: i32, oc: i32) -> i32;
        #[link_name = "caller"]
        fn host_caller(op: i32, oc: i32) -> i32;
    }

    /// Where the host writes each event (`kiri_alloc`).
    static mut EVENT: [u8; 65536] = [0; 65536];
    /// Where host calls may write their answers.
    static mut OUT: [u8; 4096] = [0; 4096];

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        wasm32::unreachable()
    }

    #[no_mangle]
    pub extern "C" fn kiri_abi_version() -> i32 {
        kiri_abi::ABI_VERSION
    }

    #[no_mangle]
    pub extern "C" fn kiri_alloc(len: i32) -> i32 {
        if (0..=65536).contains(&len) {
            addr_of_mut!(EVENT) as i32
        } else {
            0
        }
    }

    struct Program<'a> {
        code: &'a [u8],
        at: usize,
        payload: i32,
        last: i32,
    }

    impl Program<'_> {
        fn byte(&mut self) -> u8 {
            let b = self.code.get(self.at).copied().unwrap_or(0);
            self.at += 1;
            b
        }

        fn bytes<const N: usize>(&mut self) -> [u8; N] {
            core::array::from_fn(|_| self.byte())
        }

        fn operand(&mut self) -> i32 {
            match self.byte() % 8 {
                tag::BYTE => i32::from(self.byte()),
                tag::U16 => i32::from(u16::from_le_bytes(self.bytes())),
                tag::RAW => i32::from_le_bytes(self.bytes()),
                tag::PAYLOAD => self.payload.wrapping_add(i32::from(self.byte())),
                tag::WORD => (super::WORDS.as_ptr() as i32).wrapping_add(i32::from(self.byte())),
                tag::OUT => (addr_of_mut!(OUT) as i32)
                    .wrapping_add(i32::from(u16::from_le_bytes(self.bytes()))),
                tag::EDGE => {
                    ((wasm32::memory_size(0) * 65536) as i32).wrapping_sub(i32::from(self.byte()))
                }
                _ => self.last,
            }
        }

        fn operands<const N: usize>(&mut self) -> [i32; N] {
            core::array::from_fn(|_| self.operand())
        }

        /// Runs one instruction; `Some(rc)` ends the program with that result.
        fn step(&mut self) -> Option<i32> {
            let op = self.byte() % 16;
            // SAFETY: the host functions take plain integers; the host checks every pointer.
            self.last = unsafe {
                match op {
                    op::EMIT => {
                        let [a, b, c, d] = self.operands();
                        host_emit(a, b, c, d)
                    }
                    op::PUBLISH => {
                        let [a, b, c, d] = self.operands();
                        host_publish(a, b, c, d)
                    }
                    op::RESPOND => {
                        let [a, b] = self.operands();
                        host_respond(a, b)
                    }
                    op::LOG => {
                        let [a, b, c] = self.operands();
                        host_log(a, b, c);
                        0
                    }
                    op::NOW_MS => host_now_ms() as i32,
                    op::CONFIG => {
                        let [a, b, c, d] = self.operands();
                        host_config(a, b, c, d)
                    }
                    op::KV_GET => {
                        let [a, b, c, d] = self.operands();
                        host_kv_get(a, b, c, d)
                    }
                    op::KV_PUT => {
                        let [a, b, c, d] = self.operands();
                        host_kv_put(a, b, c, d)
                    }
                    op::KV_DELETE => {
                        let [a, b] = self.operands();
                        host_kv_delete(a, b)
                    }
                    op::KV_LIST => {
                        let [a, b, c, d] = self.operands();
                        host_kv_list(a, b, c, d)
                    }
                    op::CALLER => {
                        let [a, b] = self.operands();
                        host_caller(a, b)
                    }
                    op::GROW => wasm32::memory_grow(0, usize::from(self.byte())) as i32,
                    op::SPIN => {
                        let mut x = 0u32;
                        for i in 0..u32::from(self.byte()) * 1000 {
                            x = core::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                        }
                        x as i32
                    }
                    op::RETURN => return Some(self.operand()),
                    op::TRAP => {
                        if self.byte() == op::TRAP_KEY {
                            wasm32::unreachable()
                        }
                        self.last
                    }
                    _ => {
                        let times = self.byte();
                        let start = self.at;
                        for _ in 0..times {
                            self.at = start;
                            if let Some(rc) = self.step() {
                                return Some(rc);
                            }
                        }
                        self.last
                    }
                }
            };
            None
        }
    }

    #[no_mangle]
    pub extern "C" fn kiri_on_event(_tp: i32, _tl: i32, pp: i32, pl: i32, _at: i64) -> i32 {
        // SAFETY: the host wrote `pl` payload bytes at `pp`, inside EVENT.
        let code = unsafe { core::slice::from_raw_parts(pp as usize as *const u8, pl as usize) };
        let mut program = Program {
            code,
            at: 0,
            payload: pp,
            last: 0,
        };
        while program.at < code.len() {
            if let Some(rc) = program.step() {
                return rc;
            }
        }
        0
    }
}
