//! A Kiri sensor node for QEMU's `lm3s6965evb` board (a Cortex-M3): it samples a simulated
//! BME280 (the real driver over the simulated chip's I2C registers) every
//! [`PERIOD_MS`], turns each measurement into numbered readings and writes them, framed
//! (COBS + CRC-32, see `kiri-node`), to UART0. `make qemu-node` runs it with UART0 on a local
//! socket; `kiri-sensor --source tcp:127.0.0.1:PORT` reads it.
//!
//! QEMU's UART model needs no set-up; on a real LM3S6965 enable UART0's clock and pins first.
//! SysTick runs from the 12 MHz core clock the board starts on.
#![no_std]
#![no_main]
#![deny(missing_docs)]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use embedded_hal::delay::DelayNs;
use kiri_drivers::bme280::{Bme280, Config, ADDRESS_PRIMARY};
use kiri_drivers::sim::SimBme280;
use kiri_node::{encode_frame, Node, Schedule, MAX_FRAME};
use panic_halt as _;

/// The node's id: the `sensor` of its readings.
const NODE_ID: &str = "qemu-node-1";
/// How often it samples, ms.
const PERIOD_MS: u64 = 200;
/// The core clock, Hz.
const CPU_HZ: u32 = 12_000_000;

/// Milliseconds since start (wraps after 49 days; `uptime_ms` extends it).
static MILLIS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

/// Busy-waits by counting core cycles.
struct CycleDelay;

impl DelayNs for CycleDelay {
    fn delay_ns(&mut self, ns: u32) {
        let cycles = u64::from(ns) * u64::from(CPU_HZ) / 1_000_000_000;
        cortex_m::asm::delay(cycles as u32 + 1);
    }
}

/// UART0 of the LM3S6965 (datasheet section 13.6).
mod uart0 {
    const DR: *mut u32 = 0x4000_C000 as *mut u32;
    const FR: *const u32 = 0x4000_C018 as *const u32;
    const FR_TXFF: u32 = 1 << 5;

    /// Writes `bytes`, waiting while the transmit FIFO is full.
    pub fn write(bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: fixed, aligned MMIO register addresses of UART0 on this chip; this is
            // the only code that touches them.
            unsafe {
                while core::ptr::read_volatile(FR) & FR_TXFF != 0 {}
                core::ptr::write_volatile(DR, u32::from(b));
            }
        }
    }
}

/// 64-bit uptime from the wrapping 32-bit tick counter.
struct Uptime {
    last: u32,
    high: u64,
}

impl Uptime {
    fn now_ms(&mut self) -> u64 {
        let low = MILLIS.load(Ordering::Relaxed);
        if low < self.last {
            self.high += 1 << 32;
        }
        self.last = low;
        self.high | u64::from(low)
    }
}

#[entry]
fn main() -> ! {
    let mut cp = cortex_m::Peripherals::take().expect("peripherals taken once");
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(CPU_HZ / 1000 - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_interrupt();
    cp.SYST.enable_counter();

    let mut delay = CycleDelay;
    let mut sensor = loop {
        let chip = SimBme280::with_clock(1, || u64::from(MILLIS.load(Ordering::Relaxed)));
        match Bme280::new(chip, ADDRESS_PRIMARY, Config::default(), &mut delay) {
            Ok(s) => break s,
            Err(_) => delay.delay_ms(1000),
        }
    };
    let mut node = Node::new(NODE_ID, 0);
    let mut schedule = Schedule::new(PERIOD_MS, 0);
    let mut clock = Uptime { last: 0, high: 0 };
    let mut frame = [0u8; MAX_FRAME];
    // A delimiter first: a receiver that was listening ends whatever it had and starts clean.
    uart0::write(&[0]);
    loop {
        let now = clock.now_ms();
        if schedule.due(now) {
            // A failed measurement is skipped; the sequence numbers show no gap for it, as
            // nothing was measured.
            if let Ok(m) = sensor.measure(&mut delay) {
                let _ = node.readings(&m, now, None, |r| {
                    let n = encode_frame(r, &mut frame)?;
                    uart0::write(&frame[..n]);
                    Ok::<(), kiri_node::ReadingError>(())
                });
            }
        }
        cortex_m::asm::wfi();
    }
}
