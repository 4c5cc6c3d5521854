//! Bosch BME280: temperature, humidity and pressure over I2C (datasheet BST-BME280-DS002).
//!
//! [`Bme280::new`] checks the chip id (0x60), soft-resets the chip, waits for it to copy its
//! calibration (NVM) and reads it, then writes the oversampling and filter settings with the
//! chip asleep. [`Bme280::measure`] runs one forced-mode measurement, waits the datasheet's
//! maximum measurement time, reads the 8 data registers in one burst and applies the
//! datasheet's integer compensation formulas (section 4.2.3: 32-bit temperature and humidity,
//! 64-bit pressure).

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use crate::{Error, Measurement};

/// The address with SDO to GND.
pub const ADDRESS_PRIMARY: u8 = 0x76;
/// The address with SDO to VDDIO.
pub const ADDRESS_SECONDARY: u8 = 0x77;
/// What register `ID` holds on a BME280.
pub const CHIP_ID: u8 = 0x60;

/// Register addresses.
pub mod reg {
    /// Calibration, first block (0x88..=0xA1: T1-T3, P1-P9, H1).
    pub const CALIB_00: u8 = 0x88;
    /// Chip id.
    pub const ID: u8 = 0xD0;
    /// Soft reset: write [`RESET_VALUE`].
    pub const RESET: u8 = 0xE0;
    /// What makes [`RESET`] reset the chip.
    pub const RESET_VALUE: u8 = 0xB6;
    /// Calibration, second block (0xE1..=0xE7: H2-H6).
    pub const CALIB_26: u8 = 0xE1;
    /// Humidity oversampling (takes effect on the next write of [`CTRL_MEAS`]).
    pub const CTRL_HUM: u8 = 0xF2;
    /// Status: bit 3 measuring, bit 0 NVM copy in progress.
    pub const STATUS: u8 = 0xF3;
    /// Temperature and pressure oversampling, and the mode.
    pub const CTRL_MEAS: u8 = 0xF4;
    /// Standby time, IIR filter.
    pub const CONFIG: u8 = 0xF5;
    /// First data register (pressure MSB); 8 bytes to humidity LSB.
    pub const DATA: u8 = 0xF7;
}

const STATUS_MEASURING: u8 = 1 << 3;
const STATUS_IM_UPDATE: u8 = 1 << 0;
const MODE_SLEEP: u8 = 0b00;
const MODE_FORCED: u8 = 0b01;

/// Oversampling of one quantity; `Skip` leaves it unmeasured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Oversampling {
    Skip = 0,
    X1 = 1,
    X2 = 2,
    X4 = 3,
    X8 = 4,
    X16 = 5,
}

impl Oversampling {
    fn samples(self) -> u32 {
        match self {
            Oversampling::Skip => 0,
            o => 1 << (o as u32 - 1),
        }
    }
}

/// IIR filter coefficient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Filter {
    Off = 0,
    X2 = 1,
    X4 = 2,
    X8 = 3,
    X16 = 4,
}

/// Measurement settings. The default is the datasheet's "weather monitoring" case
/// (section 3.5.1): 1x oversampling of everything, filter off, forced mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Temperature oversampling (it cannot be skipped: the others need it).
    pub temperature: Oversampling,
    /// Pressure oversampling.
    pub pressure: Oversampling,
    /// Humidity oversampling.
    pub humidity: Oversampling,
    /// IIR filter.
    pub filter: Filter,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            temperature: Oversampling::X1,
            pressure: Oversampling::X1,
            humidity: Oversampling::X1,
            filter: Filter::Off,
        }
    }
}

impl Config {
    fn ctrl_meas(&self, mode: u8) -> u8 {
        (self.temperature as u8) << 5 | (self.pressure as u8) << 2 | mode
    }

    /// The datasheet's maximum measurement time (section 9.1), microseconds.
    pub fn max_measurement_us(&self) -> u32 {
        let t = 2300 * self.temperature.samples();
        let p = match self.pressure.samples() {
            0 => 0,
            n => 2300 * n + 575,
        };
        let h = match self.humidity.samples() {
            0 => 0,
            n => 2300 * n + 575,
        };
        1250 + t + p + h
    }
}

/// The chip's trimming parameters, read once from its NVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

impl Calibration {
    /// Parses the two calibration blocks (26 bytes from 0x88, 7 bytes from 0xE1), as in the
    /// datasheet's table 16; H4 and H5 are 12-bit values sharing register 0xE5.
    pub fn parse(a: &[u8; 26], b: &[u8; 7]) -> Calibration {
        let u16le = |i: usize| u16::from_le_bytes([a[i], a[i + 1]]);
        let i16le = |i: usize| i16::from_le_bytes([a[i], a[i + 1]]);
        Calibration {
            t1: u16le(0),
            t2: i16le(2),
            t3: i16le(4),
            p1: u16le(6),
            p2: i16le(8),
            p3: i16le(10),
            p4: i16le(12),
            p5: i16le(14),
            p6: i16le(16),
            p7: i16le(18),
            p8: i16le(20),
            p9: i16le(22),
            h1: a[25],
            h2: i16::from_le_bytes([b[0], b[1]]),
            h3: b[2],
            h4: (i16::from(b[3] as i8) << 4) | i16::from(b[4] & 0x0F),
            h5: (i16::from(b[5] as i8) << 4) | i16::from(b[4] >> 4),
            h6: b[6] as i8,
        }
    }

    /// The two calibration blocks as the chip stores them (the inverse of [`parse`](Self::parse)).
    pub fn to_registers(&self) -> ([u8; 26], [u8; 7]) {
        let mut a = [0u8; 26];
        let words: [[u8; 2]; 12] = [
            self.t1.to_le_bytes(),
            self.t2.to_le_bytes(),
            self.t3.to_le_bytes(),
            self.p1.to_le_bytes(),
            self.p2.to_le_bytes(),
            self.p3.to_le_bytes(),
            self.p4.to_le_bytes(),
            self.p5.to_le_bytes(),
            self.p6.to_le_bytes(),
            self.p7.to_le_bytes(),
            self.p8.to_le_bytes(),
            self.p9.to_le_bytes(),
        ];
        for (i, w) in words.iter().enumerate() {
            a[2 * i..2 * i + 2].copy_from_slice(w);
        }
        a[25] = self.h1;
        let h2 = self.h2.to_le_bytes();
        let b = [
            h2[0],
            h2[1],
            self.h3,
            (self.h4 >> 4) as u8,
            ((self.h5 & 0x0F) << 4) as u8 | (self.h4 & 0x0F) as u8,
            (self.h5 >> 4) as u8,
            self.h6 as u8,
        ];
        (a, b)
    }

    /// Temperature in 0.01 °C, and `t_fine` (which pressure and humidity need), from the
    /// 20-bit raw value: the datasheet's `BME280_compensate_T_int32`.
    pub fn temperature(&self, adc_t: i32) -> (i32, i32) {
        let t1 = i32::from(self.t1);
        let var1 = (((adc_t >> 3) - (t1 << 1)) * i32::from(self.t2)) >> 11;
        let d = (adc_t >> 4) - t1;
        let var2 = (((d * d) >> 12) * i32::from(self.t3)) >> 14;
        let t_fine = var1 + var2;
        ((t_fine * 5 + 128) >> 8, t_fine)
    }

    /// Pressure in Pa as Q24.8 (divide by 256) from the 20-bit raw value: the datasheet's
    /// `BME280_compensate_P_int64`. 0 when the calibration would divide by zero.
    pub fn pressure(&self, adc_p: i32, t_fine: i32) -> u32 {
        let mut var1 = i64::from(t_fine) - 128_000;
        let mut var2 = var1 * var1 * i64::from(self.p6);
        var2 += (var1 * i64::from(self.p5)) << 17;
        var2 += i64::from(self.p4) << 35;
        var1 = ((var1 * var1 * i64::from(self.p3)) >> 8) + ((var1 * i64::from(self.p2)) << 12);
        var1 = (((1i64 << 47) + var1) * i64::from(self.p1)) >> 33;
        if var1 == 0 {
            return 0;
        }
        let mut p = 1_048_576 - i64::from(adc_p);
        p = (((p << 31) - var2) * 3125) / var1;
        let var1 = (i64::from(self.p9) * (p >> 13) * (p >> 13)) >> 25;
        let var2 = (i64::from(self.p8) * p) >> 19;
        (((p + var1 + var2) >> 8) + (i64::from(self.p7) << 4)) as u32
    }

    /// Relative humidity in %RH as Q22.10 (divide by 1024) from the 16-bit raw value: the
    /// datasheet's `bme280_compensate_H_int32`, clamped to 0..=100 %RH.
    pub fn humidity(&self, adc_h: i32, t_fine: i32) -> u32 {
        let mut v = t_fine - 76_800;
        let a =
            ((adc_h << 14) - (i32::from(self.h4) << 20) - (i32::from(self.h5) * v) + 16_384) >> 15;
        let b = (((((v * i32::from(self.h6)) >> 10)
            * (((v * i32::from(self.h3)) >> 11) + 32_768))
            >> 10)
            + 2_097_152)
            * i32::from(self.h2)
            + 8192;
        v = a * (b >> 14);
        v -= ((((v >> 15) * (v >> 15)) >> 7) * i32::from(self.h1)) >> 4;
        v = v.clamp(0, 419_430_400);
        (v >> 12) as u32
    }
}

/// A BME280 on an I2C bus.
pub struct Bme280<I2C> {
    i2c: I2C,
    address: u8,
    calibration: Calibration,
    config: Config,
}

impl<I2C: I2c> Bme280<I2C> {
    /// Finds the chip at `address`, resets it, reads its calibration and applies `config`.
    pub fn new(
        i2c: I2C,
        address: u8,
        config: Config,
        delay: &mut impl DelayNs,
    ) -> Result<Self, Error<I2C::Error>> {
        let mut dev = Bme280 {
            i2c,
            address,
            calibration: Calibration::default(),
            config,
        };
        let id = dev.read_u8(reg::ID)?;
        if id != CHIP_ID {
            return Err(Error::WrongChip(id));
        }
        dev.write(reg::RESET, reg::RESET_VALUE)?;
        // Start-up takes 2 ms; then the NVM copy must have finished (bit 0 clear).
        delay.delay_ms(2);
        let mut ready = false;
        for _ in 0..10 {
            if dev.read_u8(reg::STATUS)? & STATUS_IM_UPDATE == 0 {
                ready = true;
                break;
            }
            delay.delay_ms(1);
        }
        if !ready {
            return Err(Error::Timeout);
        }
        let mut a = [0u8; 26];
        let mut b = [0u8; 7];
        dev.read(reg::CALIB_00, &mut a)?;
        dev.read(reg::CALIB_26, &mut b)?;
        dev.calibration = Calibration::parse(&a, &b);
        dev.configure(config)?;
        Ok(dev)
    }

    /// Applies new settings (the chip is left asleep until the next [`measure`](Self::measure)).
    pub fn configure(&mut self, config: Config) -> Result<(), Error<I2C::Error>> {
        self.config = config;
        self.write(reg::CTRL_HUM, config.humidity as u8)?;
        self.write(reg::CONFIG, (config.filter as u8) << 2)?;
        self.write(reg::CTRL_MEAS, config.ctrl_meas(MODE_SLEEP))
    }

    /// The calibration read from the chip.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// One forced-mode measurement.
    pub fn measure(&mut self, delay: &mut impl DelayNs) -> Result<Measurement, Error<I2C::Error>> {
        self.write(reg::CTRL_MEAS, self.config.ctrl_meas(MODE_FORCED))?;
        delay.delay_us(self.config.max_measurement_us());
        let mut done = false;
        for _ in 0..10 {
            if self.read_u8(reg::STATUS)? & STATUS_MEASURING == 0 {
                done = true;
                break;
            }
            delay.delay_ms(1);
        }
        if !done {
            return Err(Error::Timeout);
        }
        let mut d = [0u8; 8];
        self.read(reg::DATA, &mut d)?;
        Ok(self.compensate(&d))
    }

    /// Compensates the 8 data registers (0xF7..=0xFE).
    pub fn compensate(&self, d: &[u8; 8]) -> Measurement {
        let adc_p = (i32::from(d[0]) << 12) | (i32::from(d[1]) << 4) | (i32::from(d[2]) >> 4);
        let adc_t = (i32::from(d[3]) << 12) | (i32::from(d[4]) << 4) | (i32::from(d[5]) >> 4);
        let adc_h = (i32::from(d[6]) << 8) | i32::from(d[7]);
        let c = &self.calibration;
        let (t, t_fine) = c.temperature(adc_t);
        let pressure = (self.config.pressure != Oversampling::Skip)
            .then(|| c.pressure(adc_p, t_fine) as f32 / 256.0);
        let humidity = (self.config.humidity != Oversampling::Skip)
            .then(|| c.humidity(adc_h, t_fine) as f32 / 1024.0);
        Measurement {
            temperature_c: t as f32 / 100.0,
            humidity_pct: humidity,
            pressure_pa: pressure,
        }
    }

    /// Gives the bus back.
    pub fn destroy(self) -> I2C {
        self.i2c
    }

    fn write(&mut self, register: u8, value: u8) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write(self.address, &[register, value])
            .map_err(Error::Bus)
    }

    fn read(&mut self, register: u8, buf: &mut [u8]) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write_read(self.address, &[register], buf)
            .map_err(Error::Bus)
    }

    fn read_u8(&mut self, register: u8) -> Result<u8, Error<I2C::Error>> {
        let mut b = [0u8];
        self.read(register, &mut b)?;
        Ok(b[0])
    }
}
