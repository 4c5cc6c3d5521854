//! A simulated BME280: a software chip behind the embedded-hal `I2c` trait, with the real
//! chip's registers (id, reset, calibration, control, status, data), so the real
//! [`Bme280`](crate::bme280::Bme280) driver runs against it unchanged. Its signal is
//! realistic: a daily temperature and humidity cycle, slow pressure drift, noise, and now and
//! then a spike (an alert for the threshold example). The raw values it reports are the ones
//! the chip's compensation formulas turn into that signal.

use core::f32::consts::TAU;

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use crate::bme280::{reg, Calibration, ADDRESS_PRIMARY, CHIP_ID};

const DAY_MS: u64 = 86_400_000;

/// The simulated chip's trimming parameters: those of the datasheet's worked example for
/// temperature and pressure, and a typical chip's for humidity.
pub const CALIBRATION: Calibration = Calibration {
    t1: 27504,
    t2: 26435,
    t3: -1000,
    p1: 36477,
    p2: -10685,
    p3: 3024,
    p4: 2855,
    p5: 140,
    p6: -7,
    p7: 15500,
    p8: -14600,
    p9: 6000,
    h1: 75,
    h2: 362,
    h3: 0,
    h4: 313,
    h5: 50,
    h6: 30,
};

/// The only error: no chip at the address asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack;

impl embedded_hal::i2c::Error for Nack {
    fn kind(&self) -> ErrorKind {
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
    }
}

/// The values the simulated chip measures at a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    /// °C.
    pub temperature_c: f32,
    /// %RH.
    pub humidity_pct: f32,
    /// Pa.
    pub pressure_pa: f32,
}

/// A simulated BME280 at [`ADDRESS_PRIMARY`].
pub struct SimBme280 {
    regs: [u8; 256],
    pointer: u8,
    rng: u32,
    phase: f32,
    now_ms: u64,
    step_ms: u64,
    clock_set: bool,
    clock: Option<fn() -> u64>,
    last: Truth,
    spikes: u32,
}

impl SimBme280 {
    /// A chip whose noise and daily phase come from `seed` (give each node its own).
    pub fn new(seed: u32) -> SimBme280 {
        let mut s = SimBme280 {
            regs: [0; 256],
            pointer: 0,
            rng: seed.wrapping_mul(2_654_435_761) | 1,
            phase: (seed % 360) as f32 / 360.0 * 0.5,
            now_ms: 0,
            step_ms: 1000,
            clock_set: false,
            clock: None,
            last: Truth {
                temperature_c: 0.0,
                humidity_pct: 0.0,
                pressure_pa: 0.0,
            },
            spikes: 0,
        };
        s.power_on();
        s
    }

    /// A chip that reads the time of each measurement from `clock` (ms; wall clock or uptime).
    pub fn with_clock(seed: u32, clock: fn() -> u64) -> SimBme280 {
        SimBme280 {
            clock: Some(clock),
            ..SimBme280::new(seed)
        }
    }

    /// Sets the time the next measurement is taken at (ms; wall clock or uptime). Without it
    /// (or a clock), each measurement is one second after the previous one.
    pub fn set_time_ms(&mut self, ms: u64) {
        self.now_ms = ms;
        self.clock_set = true;
    }

    /// What the last measurement was meant to read (before the chip's quantisation).
    pub fn last_truth(&self) -> Truth {
        self.last
    }

    /// Spikes produced so far.
    pub fn spikes(&self) -> u32 {
        self.spikes
    }

    fn power_on(&mut self) {
        self.regs = [0; 256];
        self.regs[reg::ID as usize] = CHIP_ID;
        let (a, b) = CALIBRATION.to_registers();
        let c0 = reg::CALIB_00 as usize;
        self.regs[c0..c0 + 26].copy_from_slice(&a);
        let c1 = reg::CALIB_26 as usize;
        self.regs[c1..c1 + 7].copy_from_slice(&b);
    }

    /// Marsaglia's xorshift32: uniform noise in [-1, 1).
    fn noise(&mut self) -> f32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    fn truth(&mut self) -> Truth {
        let day = (self.now_ms % DAY_MS) as f32 / DAY_MS as f32;
        let daily = libm::sinf(TAU * (day + self.phase));
        let slow = libm::sinf(TAU * ((self.now_ms % (3 * DAY_MS)) as f32 / (3 * DAY_MS) as f32));
        let mut temperature_c = 21.0 + 4.0 * daily + 0.2 * self.noise();
        // About one reading in 200 is a spike of 6 to 10 °C.
        if self.noise() > 0.99 {
            temperature_c += 8.0 + 2.0 * self.noise();
            self.spikes += 1;
        }
        let humidity_pct = (55.0 - 12.0 * daily + 0.8 * self.noise()).clamp(5.0, 95.0);
        let pressure_pa = 101_325.0 + 250.0 * slow + 8.0 * self.noise();
        Truth {
            temperature_c,
            humidity_pct,
            pressure_pa,
        }
    }

    /// A forced measurement: raw values that compensate to the signal, into 0xF7..=0xFE.
    fn measure(&mut self) {
        if let Some(clock) = self.clock {
            self.now_ms = clock();
        } else if !self.clock_set {
            self.now_ms += self.step_ms;
        }
        self.clock_set = false;
        let t = self.truth();
        self.last = t;
        let c = &CALIBRATION;
        let target_t = (t.temperature_c * 100.0) as i32;
        let adc_t = search(1 << 20, |adc| c.temperature(adc).0 >= target_t);
        let t_fine = c.temperature(adc_t).1;
        let target_p = (t.pressure_pa * 256.0) as u32;
        // Pressure falls as the raw value rises.
        let adc_p = search(1 << 20, |adc| c.pressure(adc, t_fine) <= target_p);
        let target_h = (t.humidity_pct * 1024.0) as u32;
        let adc_h = search(1 << 16, |adc| c.humidity(adc, t_fine) >= target_h);
        let d = reg::DATA as usize;
        self.regs[d] = (adc_p >> 12) as u8;
        self.regs[d + 1] = (adc_p >> 4) as u8;
        self.regs[d + 2] = ((adc_p & 0xF) << 4) as u8;
        self.regs[d + 3] = (adc_t >> 12) as u8;
        self.regs[d + 4] = (adc_t >> 4) as u8;
        self.regs[d + 5] = ((adc_t & 0xF) << 4) as u8;
        self.regs[d + 6] = (adc_h >> 8) as u8;
        self.regs[d + 7] = adc_h as u8;
    }

    fn write_register(&mut self, register: u8, value: u8) {
        match register {
            reg::RESET if value == reg::RESET_VALUE => self.power_on(),
            reg::CTRL_MEAS => {
                self.regs[reg::CTRL_MEAS as usize] = value;
                if value & 0b11 == 0b01 || value & 0b11 == 0b10 {
                    self.measure();
                    // Back to sleep when done, as the chip does.
                    self.regs[reg::CTRL_MEAS as usize] = value & !0b11;
                }
            }
            reg::CTRL_HUM | reg::CONFIG => self.regs[register as usize] = value,
            _ => {} // read-only registers ignore writes
        }
    }
}

/// The smallest value in `0..limit` for which `ok` holds (`ok` is monotonic), or `limit - 1`.
fn search(limit: i32, ok: impl Fn(i32) -> bool) -> i32 {
    let (mut lo, mut hi) = (0, limit - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

impl ErrorType for SimBme280 {
    type Error = Nack;
}

impl I2c for SimBme280 {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), Nack> {
        if address != ADDRESS_PRIMARY {
            return Err(Nack);
        }
        for op in ops {
            match op {
                // A write is a register address, then (register, value) pairs after the first
                // value: [reg, value, reg, value, ...].
                Operation::Write(bytes) => {
                    if let Some(&first) = bytes.first() {
                        self.pointer = first;
                    }
                    for pair in bytes.chunks_exact(2) {
                        self.write_register(pair[0], pair[1]);
                    }
                }
                Operation::Read(buf) => {
                    for b in buf.iter_mut() {
                        *b = self.regs[self.pointer as usize];
                        self.pointer = self.pointer.wrapping_add(1);
                    }
                }
            }
        }
        Ok(())
    }
}
