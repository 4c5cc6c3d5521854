//! The simulated chip, read through the real driver.

use embedded_hal_mock::eh1::delay::NoopDelay;
use kiri_drivers::bme280::{Bme280, Config, ADDRESS_PRIMARY, ADDRESS_SECONDARY};
use kiri_drivers::sim::SimBme280;
use kiri_drivers::Error;

#[test]
fn the_driver_reads_what_the_simulation_means_within_the_chip_resolution() {
    let mut dev = Bme280::new(
        SimBme280::new(7),
        ADDRESS_PRIMARY,
        Config::default(),
        &mut NoopDelay,
    )
    .unwrap();
    let mut temps = Vec::new();
    for hour in 0..48u64 {
        let mut sim = dev.destroy();
        sim.set_time_ms(hour * 3_600_000);
        dev = Bme280::new(sim, ADDRESS_PRIMARY, Config::default(), &mut NoopDelay).unwrap();
        let m = dev.measure(&mut NoopDelay).unwrap();
        let sim = dev.destroy();
        let truth = sim.last_truth();
        assert!(
            (m.temperature_c - truth.temperature_c).abs() <= 0.011,
            "{m:?} {truth:?}"
        );
        assert!(
            (m.pressure_pa.unwrap() - truth.pressure_pa).abs() <= 2.0,
            "{m:?} {truth:?}"
        );
        assert!(
            (m.humidity_pct.unwrap() - truth.humidity_pct).abs() <= 0.05,
            "{m:?} {truth:?}"
        );
        temps.push(m.temperature_c);
        dev = Bme280::new(sim, ADDRESS_PRIMARY, Config::default(), &mut NoopDelay).unwrap();
    }
    // A daily cycle: the range over two days is several degrees.
    let (lo, hi) = temps
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &t| (l.min(t), h.max(t)));
    assert!(hi - lo > 5.0, "{lo}..{hi}");
}

#[test]
fn spikes_happen_now_and_then() {
    let mut dev = Bme280::new(
        SimBme280::new(1),
        ADDRESS_PRIMARY,
        Config::default(),
        &mut NoopDelay,
    )
    .unwrap();
    for _ in 0..2000 {
        dev.measure(&mut NoopDelay).unwrap();
    }
    let spikes = dev.destroy().spikes();
    assert!(
        (2..=40).contains(&spikes),
        "{spikes} spikes in 2000 readings"
    );
}

#[test]
fn nothing_answers_at_another_address() {
    let err = Bme280::new(
        SimBme280::new(1),
        ADDRESS_SECONDARY,
        Config::default(),
        &mut NoopDelay,
    )
    .err();
    assert!(matches!(err, Some(Error::Bus(_))));
}
