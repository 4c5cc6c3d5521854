//! BME280 driver against the exact I2C transactions, with the datasheet's worked example.
// ctrl_meas literals are grouped by its fields: osrs_t (3 bits), osrs_p (3), mode (2).
#![allow(clippy::unusual_byte_groupings)]

use embedded_hal::i2c::ErrorKind;
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use kiri_drivers::bme280::{reg, Bme280, Calibration, Config, ADDRESS_PRIMARY as A};
use kiri_drivers::sim::CALIBRATION;
use kiri_drivers::Error;
use proptest::prelude::*;

fn start_up(calibration: &Calibration) -> Vec<T> {
    let (a, b) = calibration.to_registers();
    vec![
        T::write_read(A, vec![reg::ID], vec![0x60]),
        T::write(A, vec![reg::RESET, 0xB6]),
        T::write_read(A, vec![reg::STATUS], vec![0x00]),
        T::write_read(A, vec![reg::CALIB_00], a.to_vec()),
        T::write_read(A, vec![reg::CALIB_26], b.to_vec()),
        // Default config: humidity x1, filter off, then temperature x1 + pressure x1, asleep.
        T::write(A, vec![reg::CTRL_HUM, 0x01]),
        T::write(A, vec![reg::CONFIG, 0x00]),
        T::write(A, vec![reg::CTRL_MEAS, 0b001_001_00]),
    ]
}

/// The 8 data registers for raw pressure, temperature and humidity values.
fn data(adc_p: u32, adc_t: u32, adc_h: u16) -> Vec<u8> {
    vec![
        (adc_p >> 12) as u8,
        (adc_p >> 4) as u8,
        ((adc_p & 0xF) << 4) as u8,
        (adc_t >> 12) as u8,
        (adc_t >> 4) as u8,
        ((adc_t & 0xF) << 4) as u8,
        (adc_h >> 8) as u8,
        adc_h as u8,
    ]
}

/// One forced measurement of the datasheet's example raw values.
fn forced_measurement() -> [T; 3] {
    [
        T::write(A, vec![reg::CTRL_MEAS, 0b001_001_01]),
        T::write_read(A, vec![reg::STATUS], vec![0x00]),
        T::write_read(A, vec![reg::DATA], data(415_148, 519_888, 0x6E5A)),
    ]
}

#[test]
fn the_datasheet_example_compensates_to_25_08_c_and_100653_pa() {
    let mut expect = start_up(&CALIBRATION);
    expect.extend(forced_measurement());
    let mut i2c = Mock::new(&expect);
    let mut dev = Bme280::new(i2c.clone(), A, Config::default(), &mut NoopDelay).unwrap();
    assert_eq!(dev.calibration(), &CALIBRATION, "calibration parsed back");
    let m = dev.measure(&mut NoopDelay).unwrap();
    // Datasheet (BMP280 section 3.12, the same formulas): T = 25.08 °C, t_fine = 128422,
    // p = 100653.27 Pa. Its table prints 25767236 for the 64-bit integer code; executing the
    // published formula gives 25767233 (0.01 Pa less), as other implementations also find.
    assert_eq!(CALIBRATION.temperature(519_888), (2508, 128_422));
    assert_eq!(CALIBRATION.pressure(415_148, 128_422), 25_767_233);
    assert_eq!(m.temperature_c, 25.08);
    assert!((m.pressure_pa.unwrap() - 100_653.27).abs() < 0.05);
    let rh = m.humidity_pct.unwrap();
    assert!((0.0..=100.0).contains(&rh));
    dev.destroy();
    i2c.done();
}

#[test]
fn a_chip_that_is_not_a_bme280_is_refused() {
    let expect = [T::write_read(A, vec![reg::ID], vec![0x58])]; // a BMP280
    let mut i2c = Mock::new(&expect);
    let err = Bme280::new(i2c.clone(), A, Config::default(), &mut NoopDelay).err();
    assert_eq!(err, Some(Error::WrongChip(0x58)));
    i2c.done();
}

#[test]
fn a_nack_is_a_bus_error() {
    let expect =
        [
            T::write_read(A, vec![reg::ID], vec![0x00]).with_error(ErrorKind::NoAcknowledge(
                embedded_hal::i2c::NoAcknowledgeSource::Address,
            )),
        ];
    let mut i2c = Mock::new(&expect);
    let err = Bme280::new(i2c.clone(), A, Config::default(), &mut NoopDelay).err();
    assert!(matches!(err, Some(Error::Bus(ErrorKind::NoAcknowledge(_)))));
    i2c.done();
}

#[test]
fn a_chip_that_never_finishes_its_nvm_copy_times_out() {
    let mut expect = vec![
        T::write_read(A, vec![reg::ID], vec![0x60]),
        T::write(A, vec![reg::RESET, 0xB6]),
    ];
    expect.extend((0..10).map(|_| T::write_read(A, vec![reg::STATUS], vec![0x01])));
    let mut i2c = Mock::new(&expect);
    let err = Bme280::new(i2c.clone(), A, Config::default(), &mut NoopDelay).err();
    assert_eq!(err, Some(Error::Timeout));
    i2c.done();
}

/// The datasheet's floating-point formulas (section 8.1), a second, independent transcription.
fn float_t(c: &Calibration, adc_t: f64) -> (f64, f64) {
    let (t1, t2, t3) = (c.t1 as f64, c.t2 as f64, c.t3 as f64);
    let var1 = (adc_t / 16384.0 - t1 / 1024.0) * t2;
    let d = adc_t / 131072.0 - t1 / 8192.0;
    let var2 = d * d * t3;
    let t_fine = var1 + var2;
    (t_fine / 5120.0, t_fine)
}

fn float_p(c: &Calibration, adc_p: f64, t_fine: f64) -> f64 {
    let mut var1 = t_fine / 2.0 - 64000.0;
    let mut var2 = var1 * var1 * c.p6 as f64 / 32768.0;
    var2 += var1 * c.p5 as f64 * 2.0;
    var2 = var2 / 4.0 + c.p4 as f64 * 65536.0;
    var1 = (c.p3 as f64 * var1 * var1 / 524288.0 + c.p2 as f64 * var1) / 524288.0;
    var1 = (1.0 + var1 / 32768.0) * c.p1 as f64;
    let mut p = 1048576.0 - adc_p;
    p = (p - var2 / 4096.0) * 6250.0 / var1;
    let var1 = c.p9 as f64 * p * p / 2147483648.0;
    let var2 = p * c.p8 as f64 / 32768.0;
    p + (var1 + var2 + c.p7 as f64) / 16.0
}

fn float_h(c: &Calibration, adc_h: f64, t_fine: f64) -> f64 {
    let v = t_fine - 76800.0;
    let mut h = (adc_h - (c.h4 as f64 * 64.0 + c.h5 as f64 / 16384.0 * v))
        * (c.h2 as f64 / 65536.0
            * (1.0 + c.h6 as f64 / 67108864.0 * v * (1.0 + c.h3 as f64 / 67108864.0 * v)));
    h *= 1.0 - c.h1 as f64 * h / 524288.0;
    h.clamp(0.0, 100.0)
}

proptest! {
    /// Over the sensor's range (-40..85 °C, 300..1100 hPa), the integer compensation agrees
    /// with the datasheet's floating-point one.
    #[test]
    fn integer_and_float_compensation_agree(
        adc_t in 330_000i32..700_000,
        adc_p in 250_000i32..600_000,
        adc_h in 20_000i32..45_000,
    ) {
        let c = &CALIBRATION;
        let (t, t_fine) = c.temperature(adc_t);
        let (tf, t_fine_f) = float_t(c, adc_t as f64);
        prop_assert!((t as f64 / 100.0 - tf).abs() < 0.02, "T {} vs {}", t, tf);
        let p = c.pressure(adc_p, t_fine) as f64 / 256.0;
        let pf = float_p(c, adc_p as f64, t_fine_f);
        prop_assume!((30_000.0..110_000.0).contains(&pf));
        prop_assert!((p - pf).abs() < 1.0, "p {} vs {}", p, pf);
        let h = c.humidity(adc_h, t_fine) as f64 / 1024.0;
        let hf = float_h(c, adc_h as f64, t_fine_f);
        prop_assert!((h - hf).abs() < 0.1, "h {} vs {}", h, hf);
    }

    /// The calibration survives the register layout (H4/H5 share a register).
    #[test]
    fn calibration_registers_round_trip(h4 in -2048i16..2048, h5 in -2048i16..2048, t2: i16, p9: i16) {
        let c = Calibration { h4, h5, t2, p9, ..CALIBRATION };
        let (a, b) = c.to_registers();
        prop_assert_eq!(Calibration::parse(&a, &b), c);
    }
}

#[test]
fn a_forced_measurement_waits_the_datasheet_time() {
    #[derive(Default)]
    struct Recorded(u64);
    impl embedded_hal::delay::DelayNs for Recorded {
        fn delay_ns(&mut self, ns: u32) {
            self.0 += u64::from(ns);
        }
    }
    let mut expect = start_up(&CALIBRATION);
    expect.extend(forced_measurement());
    let mut i2c = Mock::new(&expect);
    let mut dev = Bme280::new(i2c.clone(), A, Config::default(), &mut NoopDelay).unwrap();
    let mut delay = Recorded::default();
    dev.measure(&mut delay).unwrap();
    // Section 9.1, all x1: 1.25 + 2.3 + (2.3 + 0.575) + (2.3 + 0.575) = 9.3 ms.
    assert_eq!(Config::default().max_measurement_us(), 9_300);
    assert!(delay.0 >= 9_300_000, "waited {} ns", delay.0);
    dev.destroy();
    i2c.done();
}
