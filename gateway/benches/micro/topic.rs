//! `topic/*`: which functions an incoming topic triggers (the registry's routing table).

use std::hint::black_box;

use criterion::Criterion;
use kiri::net::topic;
use kiri::registry::Router;

/// The trigger filters of `n` functions, one each, as a site might configure them: per-site
/// and per-kind filters with `+`, per-node subtrees with `#`, other trees, one catch-all.
fn filters(n: usize) -> Vec<Vec<String>> {
    const KINDS: [&str; 4] = ["temperature", "humidity", "pressure", "vibration"];
    (0..n)
        .map(|i| {
            let kind = KINDS[i % 4];
            let filter = match i % 8 {
                0 if i == 0 => "sensors/#".to_string(),
                0 | 4 => format!("sensors/site{}/+/{kind}", i % 5),
                1 | 5 => format!("sensors/+/node{i}/#"),
                2 => format!("factory/line{}/+/{kind}", i / 8),
                3 => format!("sensors/+/+/{kind}"),
                6 => format!("devices/gw{i}/status"),
                _ => format!("$SYS/broker/{kind}/+"),
            };
            vec![filter]
        })
        .collect()
}

/// A reading's topic: it matches a few of the filters above, as real topics do.
const TOPIC: &str = "sensors/site3/node17/temperature";

/// Registers the group.
pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("topic");
    for n in [16, 64] {
        let triggers = filters(n);
        let router = Router::new(triggers.iter().map(Vec::as_slice));
        assert!(
            !router.route(TOPIC).is_empty(),
            "the topic matches something"
        );
        g.bench_function(format!("match_{n}_filters"), |b| {
            b.iter(|| router.route(black_box(TOPIC)))
        });
    }
    g.bench_function("matches_one_filter", |b| {
        b.iter(|| topic::matches(black_box("sensors/+/+/temperature"), black_box(TOPIC)))
    });
    g.finish();
}
