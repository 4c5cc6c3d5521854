//! SHT3x driver against the exact I2C transactions.

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use kiri_drivers::sht3x::{crc8, Repeatability, Sht3x, ADDRESS_PRIMARY as A};
use kiri_drivers::Error;

#[test]
fn the_datasheet_crc_example_holds() {
    assert_eq!(crc8(&[0xBE, 0xEF]), 0x92);
}

fn reply(t: u16, rh: u16) -> Vec<u8> {
    let (t, rh) = (t.to_be_bytes(), rh.to_be_bytes());
    vec![t[0], t[1], crc8(&t), rh[0], rh[1], crc8(&rh)]
}

#[test]
fn a_single_shot_measurement_is_converted() {
    let expect = [
        T::write(A, vec![0x24, 0x00]),
        T::read(A, reply(0x6666, 0x8000)),
        T::write(A, vec![0x24, 0x16]),
        T::read(A, reply(0x0000, 0xFFFF)),
    ];
    let mut i2c = Mock::new(&expect);
    let mut dev = Sht3x::new(i2c.clone(), A, Repeatability::High);
    let m = dev.measure(&mut NoopDelay).unwrap();
    // T = -45 + 175 * 26214 / 65535, RH = 100 * 32768 / 65535.
    assert!(
        (m.temperature_c - 24.9997).abs() < 0.001,
        "{}",
        m.temperature_c
    );
    assert!((m.humidity_pct.unwrap() - 50.0008).abs() < 0.001);
    assert_eq!(m.pressure_pa, None);
    let mut dev = Sht3x::new(dev.destroy(), A, Repeatability::Low);
    let m = dev.measure(&mut NoopDelay).unwrap();
    assert_eq!((m.temperature_c, m.humidity_pct), (-45.0, Some(100.0)));
    dev.destroy();
    i2c.done();
}

#[test]
fn a_bad_crc_is_an_error_not_a_value() {
    for corrupt in [2usize, 5] {
        let mut bytes = reply(0x6666, 0x8000);
        bytes[corrupt] ^= 0x01;
        let expect = [T::write(A, vec![0x24, 0x00]), T::read(A, bytes)];
        let mut i2c = Mock::new(&expect);
        let mut dev = Sht3x::new(i2c.clone(), A, Repeatability::High);
        assert_eq!(dev.measure(&mut NoopDelay), Err(Error::Crc));
        i2c.done();
    }
}

#[test]
fn a_nack_is_a_bus_error() {
    let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
    let expect = [T::write(A, vec![0x24, 0x00]).with_error(nack)];
    let mut i2c = Mock::new(&expect);
    let mut dev = Sht3x::new(i2c.clone(), A, Repeatability::High);
    assert_eq!(dev.measure(&mut NoopDelay), Err(Error::Bus(nack)));
    i2c.done();
}

#[test]
fn heater_status_and_reset_commands() {
    let status = 0x2010u16.to_be_bytes(); // heater on, reset detected
    let expect = [
        T::write(A, vec![0x30, 0x6D]),
        T::write(A, vec![0xF3, 0x2D]),
        T::read(A, vec![status[0], status[1], crc8(&status)]),
        T::write(A, vec![0x30, 0x66]),
        T::write(A, vec![0x30, 0x41]),
        T::write(A, vec![0x30, 0xA2]),
        T::write(A, vec![0xF3, 0x2D]),
        T::read(A, vec![0x00, 0x00, 0x00]), // bad CRC
    ];
    let mut i2c = Mock::new(&expect);
    let mut dev = Sht3x::new(i2c.clone(), A, Repeatability::High);
    dev.set_heater(true).unwrap();
    let s = dev.status(&mut NoopDelay).unwrap();
    assert!(s.heater_on() && s.reset_detected() && !s.alert_pending());
    dev.set_heater(false).unwrap();
    dev.clear_status().unwrap();
    dev.reset(&mut NoopDelay).unwrap();
    assert_eq!(dev.status(&mut NoopDelay), Err(Error::Crc));
    dev.destroy();
    i2c.done();
}

/// A delay that only adds up what it was asked to wait.
#[derive(Default)]
struct Recorded(u64);

impl embedded_hal::delay::DelayNs for Recorded {
    fn delay_ns(&mut self, ns: u32) {
        self.0 += u64::from(ns);
    }
}

#[test]
fn a_measurement_waits_the_datasheet_duration() {
    for (r, cmd, at_least_us) in [
        (Repeatability::High, [0x24, 0x00], 15_500),
        (Repeatability::Low, [0x24, 0x16], 4_500),
    ] {
        let expect = [T::write(A, cmd.to_vec()), T::read(A, reply(1, 1))];
        let mut i2c = Mock::new(&expect);
        let mut dev = Sht3x::new(i2c.clone(), A, r);
        let mut delay = Recorded::default();
        dev.measure(&mut delay).unwrap();
        assert!(
            delay.0 >= at_least_us * 1000,
            "{r:?}: waited {} ns",
            delay.0
        );
        dev.destroy();
        i2c.done();
    }
}
