//! Sensirion SHT3x (SHT30, SHT31, SHT35): temperature and humidity over I2C (datasheet
//! "SHT3x-DIS", version 7).
//!
//! Single-shot measurements without clock stretching: the driver sends the command, waits the
//! datasheet's maximum duration for the repeatability, and reads 6 bytes: temperature and
//! humidity words, each followed by its CRC-8 (polynomial 0x31, init 0xFF). A word whose CRC
//! does not match is an error ([`Error::Crc`]), never a silently wrong value.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use crate::{Error, Measurement};

/// The address with ADDR to VSS.
pub const ADDRESS_PRIMARY: u8 = 0x44;
/// The address with ADDR to VDD.
pub const ADDRESS_SECONDARY: u8 = 0x45;

/// Commands (16 bits, sent MSB first).
pub mod cmd {
    /// Single shot, high repeatability, no clock stretching.
    pub const MEASURE_HIGH: u16 = 0x2400;
    /// Single shot, medium repeatability, no clock stretching.
    pub const MEASURE_MEDIUM: u16 = 0x240B;
    /// Single shot, low repeatability, no clock stretching.
    pub const MEASURE_LOW: u16 = 0x2416;
    /// Soft reset.
    pub const SOFT_RESET: u16 = 0x30A2;
    /// Heater on.
    pub const HEATER_ON: u16 = 0x306D;
    /// Heater off.
    pub const HEATER_OFF: u16 = 0x3066;
    /// Read the status register (a word and its CRC).
    pub const READ_STATUS: u16 = 0xF32D;
    /// Clear the status register's alert flags.
    pub const CLEAR_STATUS: u16 = 0x3041;
}

/// Measurement repeatability: more is less noise, and longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Repeatability {
    High,
    Medium,
    Low,
}

impl Repeatability {
    fn command(self) -> u16 {
        match self {
            Repeatability::High => cmd::MEASURE_HIGH,
            Repeatability::Medium => cmd::MEASURE_MEDIUM,
            Repeatability::Low => cmd::MEASURE_LOW,
        }
    }

    /// The datasheet's maximum measurement duration (table 4), microseconds.
    pub fn max_duration_us(self) -> u32 {
        match self {
            Repeatability::High => 15_500,
            Repeatability::Medium => 6_500,
            Repeatability::Low => 4_500,
        }
    }
}

/// The status register (datasheet table 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// An alert is pending.
    pub fn alert_pending(self) -> bool {
        self.0 & (1 << 15) != 0
    }
    /// The heater is on.
    pub fn heater_on(self) -> bool {
        self.0 & (1 << 13) != 0
    }
    /// A reset was detected since the last clear.
    pub fn reset_detected(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// The last command was not processed.
    pub fn command_failed(self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// The checksum of the last write transfer failed.
    pub fn write_crc_failed(self) -> bool {
        self.0 & 1 != 0
    }
}

/// CRC-8 of a data word as the SHT3x computes it: polynomial 0x31 (x^8 + x^5 + x^4 + 1),
/// initial value 0xFF, no reflection, no final XOR (the catalogue's CRC-8/NRSC-5).
/// `crc8(&[0xBE, 0xEF]) == 0x92`.
pub fn crc8(data: &[u8]) -> u8 {
    const CRC: crc::Crc<u8> = crc::Crc::<u8>::new(&crc::CRC_8_NRSC_5);
    CRC.checksum(data)
}

/// Checks a word + CRC triple and returns the word.
fn word<E>(bytes: &[u8]) -> Result<u16, Error<E>> {
    if crc8(&bytes[..2]) != bytes[2] {
        return Err(Error::Crc);
    }
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Temperature in °C from the raw word: T = -45 + 175 * S / (2^16 - 1).
pub fn temperature_c(raw: u16) -> f32 {
    -45.0 + 175.0 * f32::from(raw) / 65535.0
}

/// Relative humidity in % from the raw word: RH = 100 * S / (2^16 - 1).
pub fn humidity_pct(raw: u16) -> f32 {
    100.0 * f32::from(raw) / 65535.0
}

/// An SHT3x on an I2C bus.
pub struct Sht3x<I2C> {
    i2c: I2C,
    address: u8,
    repeatability: Repeatability,
}

impl<I2C: I2c> Sht3x<I2C> {
    /// A driver for the sensor at `address`; nothing is sent yet.
    pub fn new(i2c: I2C, address: u8, repeatability: Repeatability) -> Self {
        Sht3x {
            i2c,
            address,
            repeatability,
        }
    }

    /// One single-shot measurement.
    pub fn measure(&mut self, delay: &mut impl DelayNs) -> Result<Measurement, Error<I2C::Error>> {
        self.command(self.repeatability.command())?;
        delay.delay_us(self.repeatability.max_duration_us());
        let mut buf = [0u8; 6];
        self.i2c.read(self.address, &mut buf).map_err(Error::Bus)?;
        let t = word(&buf[0..3])?;
        let rh = word(&buf[3..6])?;
        Ok(Measurement {
            temperature_c: temperature_c(t),
            humidity_pct: Some(humidity_pct(rh)),
            pressure_pa: None,
        })
    }

    /// Soft reset (the sensor is ready again 1.5 ms later).
    pub fn reset(&mut self, delay: &mut impl DelayNs) -> Result<(), Error<I2C::Error>> {
        self.command(cmd::SOFT_RESET)?;
        delay.delay_us(1500);
        Ok(())
    }

    /// Turns the internal heater on or off (to check the sensor, or drive off condensation).
    pub fn set_heater(&mut self, on: bool) -> Result<(), Error<I2C::Error>> {
        self.command(if on { cmd::HEATER_ON } else { cmd::HEATER_OFF })
    }

    /// Reads the status register: the command, a pause of 1 ms (the sensor answers a read
    /// sent at once with a NACK), then the word and its CRC.
    pub fn status(&mut self, delay: &mut impl DelayNs) -> Result<Status, Error<I2C::Error>> {
        self.command(cmd::READ_STATUS)?;
        delay.delay_us(1000);
        let mut buf = [0u8; 3];
        self.i2c.read(self.address, &mut buf).map_err(Error::Bus)?;
        Ok(Status(word(&buf)?))
    }

    /// Clears the status register's flags.
    pub fn clear_status(&mut self) -> Result<(), Error<I2C::Error>> {
        self.command(cmd::CLEAR_STATUS)
    }

    /// Gives the bus back.
    pub fn destroy(self) -> I2C {
        self.i2c
    }

    fn command(&mut self, command: u16) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write(self.address, &command.to_be_bytes())
            .map_err(Error::Bus)
    }
}
