//! Sensor drivers for Kiri's sensor nodes, written from the manufacturers' datasheets against
//! the embedded-hal 1.0 traits, so the same code runs on a Raspberry Pi (Linux I2C through
//! `linux-embedded-hal`) and on a microcontroller.
//!
//! - [`bme280`]: Bosch BME280, temperature, humidity and pressure.
//! - [`sht3x`]: Sensirion SHT3x (SHT30/31/35), temperature and humidity, every word CRC-checked.
//! - [`sim`]: a software BME280 behind the same `I2c` trait, with a realistic signal, for demos,
//!   tests and load.
//!
//! Each driver owns its bus while it lives and gives it back with `destroy()`.
#![no_std]
#![deny(missing_docs, unsafe_code)]

pub mod bme280;
pub mod sht3x;
pub mod sim;

/// A driver error: the bus failed, or the device answered something it should not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The I2C transfer failed (NACK, arbitration loss, bus error...).
    Bus(E),
    /// The device at the address is not the expected chip (the id it reported).
    WrongChip(u8),
    /// A checksum did not match: the data is not used.
    Crc,
    /// The device did not finish in the time its datasheet allows.
    Timeout,
}

/// One measurement, in SI-ish units as the reading format carries them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Degrees Celsius.
    pub temperature_c: f32,
    /// Relative humidity, percent, when measured.
    pub humidity_pct: Option<f32>,
    /// Pascal, when the sensor measures pressure.
    pub pressure_pa: Option<f32>,
}
