//! Hands a new instance's untouched memory back to the operating system.
//!
//! wasmi creates a linear memory by writing zeros over all of it, so every page of it is
//! resident from the start: a Rust module's 1.1 MiB (its 1 MiB stack and a little data) costs
//! 1.1 MiB of RSS per instance, although it touches a few pages. After instantiation the pages
//! that still hold only zeros are released with `madvise(MADV_DONTNEED)`: the memory is the
//! allocator's private anonymous memory, whose released pages read back as zeros, so the
//! instance sees the same bytes, and the kernel maps a page again when the instance writes it.

/// The page size assumed for the scan. A smaller page than the system's is harmless: `madvise`
/// on a range that is not aligned to the system's pages fails and the range is kept.
const PAGE: usize = 4096;

/// Memories smaller than this are left as they are: what they could give back is small, and
/// it costs the next instance page faults (wasmi writes its zeros into pages the system must
/// map again): a Rust module's cold start goes from about 60 to 440 µs on the benchmark
/// machine (BENCHMARKS.md), a one-page module's would grow by a third.
const MIN_BYTES: usize = 256 << 10;

/// Releases the pages of `memory` that hold only zeros, if it is at least `MIN_BYTES`; the
/// bytes released.
#[cfg(target_os = "linux")]
pub(super) fn release_zero_pages(memory: &mut [u8]) -> usize {
    static ZERO: [u8; PAGE] = [0; PAGE];
    if memory.len() < MIN_BYTES {
        return 0;
    }
    let base = memory.as_mut_ptr() as usize;
    let first = base.next_multiple_of(PAGE) - base;
    if first >= memory.len() {
        return 0;
    }
    let pages = (memory.len() - first) / PAGE;
    let mut released = 0;
    let mut run: Option<usize> = None;
    for i in 0..=pages {
        let zero = i < pages && memory[first + i * PAGE..first + (i + 1) * PAGE] == ZERO;
        match (zero, run) {
            (true, None) => run = Some(i),
            (false, Some(start)) => {
                let ptr = memory[first + start * PAGE..].as_mut_ptr();
                let len = (i - start) * PAGE;
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
        let base = bytes.as_ptr() as usize;
        let first = base.next_multiple_of(PAGE);
        let pages = (base + bytes.len() - first) / PAGE;
        let mut out = vec![0u8; pages];
        // SAFETY: the range is inside `bytes`; mincore writes one byte per page into `out`.
        let rc = unsafe { libc::mincore(first as *mut _, pages * PAGE, out.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore");
        out.iter().map(|b| b & 1 == 1).collect()
    }

    #[test]
    fn zero_pages_leave_memory_and_the_bytes_stay_the_same() {
        // As wasmi makes a memory: zeros written over all of it.
        let mut memory = vec![1u8; MIN_BYTES];
        memory.fill(0);
        memory[10 * PAGE + 7] = 1;
        memory[40 * PAGE] = 2;
        let before = memory.clone();
        assert!(resident(&memory).iter().all(|r| *r));

        let released = release_zero_pages(&mut memory);

        assert!(
            released >= MIN_BYTES - 3 * PAGE,
            "released {released} bytes"
        );
        // Residency first: reading a released page maps the kernel's shared zero page.
        let base = memory.as_ptr() as usize;
        let page_of = |offset: usize| (base + offset) / PAGE - base.div_ceil(PAGE);
        let now = resident(&memory);
        assert!(now[page_of(10 * PAGE + 7)], "a page with data stays");
        assert!(now[page_of(40 * PAGE)], "a page with data stays");
        assert!(!now[page_of(20 * PAGE)], "a zero page left");
        assert_eq!(memory, before, "the bytes read the same");
        let mut small = vec![0u8; MIN_BYTES - PAGE];
        assert_eq!(
            release_zero_pages(&mut small),
            0,
            "a small memory is left alone"
        );
        // Written again, a released page comes back.
        memory[20 * PAGE] = 3;
        assert!(resident(&memory)[page_of(20 * PAGE)]);
        assert_eq!(memory[20 * PAGE], 3);
    }
}
