//! Framing and numbering.

use kiri_drivers::Measurement;
use kiri_node::frame::{self, Deframer, FrameError};
use kiri_node::{encode_frame, Node, Reading, Schedule, MAX_FRAME};
use proptest::prelude::*;

fn frames_of(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = Vec::new();
    for p in payloads {
        let mut out = [0u8; 300];
        let n = frame::encode(p, &mut out).unwrap();
        assert_eq!(
            out[..n - 1].iter().filter(|&&b| b == 0).count(),
            0,
            "no zero inside"
        );
        stream.extend_from_slice(&out[..n]);
    }
    stream
}

fn deframe(stream: &[u8]) -> (Vec<Vec<u8>>, Vec<FrameError>, u64) {
    let mut d = Deframer::<300>::default();
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for &b in stream {
        match d.push(b) {
            Some(Ok(p)) => good.push(p.to_vec()),
            Some(Err(e)) => bad.push(e),
            None => {}
        }
    }
    (good, bad, d.counts().bad)
}

proptest! {
    #[test]
    fn frames_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let (good, bad, _) = deframe(&frames_of(&payloads));
        prop_assert!(bad.is_empty());
        prop_assert_eq!(good, payloads);
    }

    /// Flip a byte anywhere: that frame (or two, when a delimiter is hit) is dropped and
    /// counted; every other frame still arrives.
    #[test]
    fn a_corrupted_byte_costs_at_most_two_frames(
        payloads in proptest::collection::vec(proptest::collection::vec(1u8..255, 1..60), 3..12),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut stream = frames_of(&payloads);
        let i = at.index(stream.len());
        stream[i] ^= flip;
        // The stream goes on (else a corrupted final delimiter just leaves a frame pending).
        stream.push(0);
        let (good, bad, counted) = deframe(&stream);
        prop_assert!(good.len() + 2 >= payloads.len(), "lost {} of {}", payloads.len() - good.len(), payloads.len());
        prop_assert!(good.iter().all(|g| payloads.contains(g)), "nothing corrupted gets through");
        prop_assert_eq!(counted as usize, bad.len());
        prop_assert!(!bad.is_empty() || good.len() == payloads.len());
    }
}

#[test]
fn a_receiver_joining_mid_stream_resynchronises() {
    let payloads = vec![b"first".to_vec(), b"second".to_vec(), b"third".to_vec()];
    let stream = frames_of(&payloads);
    let (good, bad, _) = deframe(&stream[3..]);
    assert_eq!(good, payloads[1..].to_vec());
    assert_eq!(bad.len(), 1, "the partial first frame is counted");
}

#[test]
fn an_endless_frame_is_dropped_and_the_next_one_arrives() {
    let mut stream = vec![0x55u8; 1000];
    stream.push(0);
    stream.extend(frames_of(&[b"after".to_vec()]));
    let (good, bad, _) = deframe(&stream);
    assert_eq!(bad, vec![FrameError::TooLong]);
    assert_eq!(good, vec![b"after".to_vec()]);
}

#[test]
fn readings_are_numbered_across_kinds_and_decode() {
    let mut node = Node::new("node-7", 41);
    let m = Measurement {
        temperature_c: 21.456,
        humidity_pct: Some(48.0),
        pressure_pa: Some(101_325.3),
    };
    let mut frames = Vec::new();
    node.readings(&m, 5_000, None, |r| {
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(r, &mut out).unwrap();
        frames.extend_from_slice(&out[..n]);
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!(node.next_seq(), 44);
    let (good, bad, _) = deframe(&frames);
    assert!(bad.is_empty());
    let readings: Vec<Reading<'_>> = good.iter().map(|p| Reading::decode(p).unwrap()).collect();
    let got: Vec<_> = readings
        .iter()
        .map(|r| (r.sensor, r.kind, r.value, r.unit, r.uptime_ms, r.seq))
        .collect();
    assert_eq!(
        got,
        vec![
            ("node-7", "temperature", 21.46, "C", Some(5000), Some(41)),
            ("node-7", "humidity", 48.0, "%RH", Some(5000), Some(42)),
            ("node-7", "pressure", 101_325.3, "Pa", Some(5000), Some(43)),
        ]
    );
}

#[test]
fn the_schedule_does_not_drift_or_bunch() {
    let mut s = Schedule::new(100, 0);
    assert!(s.due(0));
    assert!(!s.due(99));
    assert!(s.due(105));
    assert_eq!(s.next_ms(), 200);
    // Busy for a while: one sample, not a burst of the missed ones.
    assert!(s.due(1_050));
    assert!(!s.due(1_060));
    assert_eq!(s.next_ms(), 1_100);
}
