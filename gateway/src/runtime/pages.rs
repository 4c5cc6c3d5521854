//! Hands a new instance's untouched memory back to the operating system.
//!
//! wasmi creates a linear memory by writing zeros over all of it, so every page of it is
//! resident from the start: a Rust module's 1.1 MiB (its 1 MiB stack and a little data) costs
//! 1.1 MiB of RSS per instance, although it touches a few pages. After instantiation the pages
//! that still hold only zeros are released with `madvise(MADV_DONTNEED)`: the memory is the
//! allocator's private anonymous memory, whose released pages read back as zeros, so the
//! instance sees the same bytes, and the kernel maps a page again when the instance writes it.

/// The unit of the zero scan; the system's page (4 KiB, or 16 or 64 KiB on some arm64
/// kernels, the Raspberry Pi 5's among them) is a multiple of it. Releasing must use the
/// system's page: `madvise` rounds a length up to it, and would take bytes past a run.
const CHUNK: usize = 4096;

/// Memories smaller than this are left as they are: what they could give back is small, and
/// it costs the next instance page faults (wasmi writes its zeros into pages the system must
/// map again): a Rust module's cold start goes from about 60 µs to 0.4-1 ms on the benchmark
/// machine (BENCHMARKS.md).
const MIN_BYTES: usize = 256 << 10;

/// Releases the pages of `memory` that hold only zeros, if it is at least `MIN_BYTES`; the
/// bytes released.
#[cfg(target_os = "linux")]
pub(super) fn release_zero_pages(memory: &mut [u8]) -> usize {
    static ZERO: [u8; CHUNK] = [0; CHUNK];
    let page = page_size();
    if memory.len() < MIN_BYTES || page == 0 || !page.is_multiple_of(CHUNK) {
        return 0;
    }
    let start_ptr = memory.as_mut_ptr();
    let base = start_ptr as usize;
    let first = base.next_multiple_of(page) - base;
    if first >= memory.len() {
        return 0;
    }
    let pages = (memory.len() - first) / page;
    let is_zero = |i: usize| {
        memory[first + i * page..first + (i + 1) * page]
            .chunks_exact(CHUNK)
            .all(|chunk| chunk == ZERO)
    };
    let mut released = 0;
    let mut run: Option<usize> = None;
    for i in 0..=pages {
        let zero = i < pages && is_zero(i);
        match (zero, run) {
            (true, None) => run = Some(i),
            (false, Some(start)) => {
                // SAFETY (the pointer): the offset is inside `memory`.
                let ptr = unsafe { start_ptr.add(first + start * page) };
                let len = (i - start) * page;
                // SAFETY: the range lies inside `memory`, which we borrow mutably, and holds
                // only zeros; it is private anonymous memory (the allocator's), where
                // MADV_DONTNEED makes the pages read as zeros again: the bytes do not change.
                if unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) } == 0 {
                    released += len;
                }
                run = None;
            }
            _ => {}
        }
    }
    released
}

/// The system's page size.
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0)
}

/// Elsewhere `MADV_DONTNEED` need not zero the pages: nothing is released.
#[cfg(not(target_os = "linux"))]
pub(super) fn release_zero_pages(_memory: &mut [u8]) -> usize {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Which of the pages of `bytes` (from its first whole page) are resident.
    fn resident(bytes: &[u8]) -> Vec<bool> {
        let page = page_size();
        let base = bytes.as_ptr() as usize;
        let first = base.next_multiple_of(page);
        let pages = (base + bytes.len() - first) / page;
        let mut out = vec![0u8; pages];
        // SAFETY: the range is inside `bytes`; mincore writes one byte per page into `out`.
        let rc = unsafe { libc::mincore(first as *mut _, pages * page, out.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore");
        out.iter().map(|b| b & 1 == 1).collect()
    }

    #[test]
    fn zero_pages_leave_memory_and_the_bytes_stay_the_same() {
        // As wasmi makes a memory: zeros written over all of it; 64 pages, whatever their size.
        let page = page_size();
        let mut memory = vec![1u8; MIN_BYTES.max(64 * page)];
        memory.fill(0);
        memory[10 * page + 7] = 1;
        memory[40 * page] = 2;
        let before = memory.clone();
        assert!(resident(&memory).iter().all(|r| *r));

        let released = release_zero_pages(&mut memory);

        assert!(
            released >= memory.len() - 3 * page,
            "released {released} bytes"
        );
        // Residency first: reading a released page maps the kernel's shared zero page.
        let base = memory.as_ptr() as usize;
        let page_of = |offset: usize| (base + offset) / page - base.div_ceil(page);
        let now = resident(&memory);
        assert!(now[page_of(10 * page + 7)], "a page with data stays");
        assert!(now[page_of(40 * page)], "a page with data stays");
        assert!(!now[page_of(20 * page)], "a zero page left");
        assert_eq!(memory, before, "the bytes read the same");
        let mut small = vec![0u8; MIN_BYTES - CHUNK];
        assert_eq!(
            release_zero_pages(&mut small),
            0,
            "a small memory is left alone"
        );
        // Written again, a released page comes back.
        memory[20 * page] = 3;
        assert!(resident(&memory)[page_of(20 * page)]);
        assert_eq!(memory[20 * page], 3);
    }
}
