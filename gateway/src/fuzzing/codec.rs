//! `codec`: every CBOR decoder of the gateway's wire types (the input check, envelopes and
//! batches, readings, dead letters, packages) and the deploy state kept in the store.

use ciborium::Value;

use kiri_reading::Reading;

use crate::codec;
use crate::dead_letters::Entry;
use crate::deploy::{HistoryEntry, Manifest, NameState, Package, StoredVersion};
use crate::uplink::Envelope;

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

/// Equal, counting NaN equal to NaN (a reading's value may be NaN).
fn same_reading(a: &Reading<'_>, b: &Reading<'_>) -> bool {
    let value = a.value == b.value || (a.value.is_nan() && b.value.is_nan());
    value
        && (a.sensor, a.kind, a.unit, a.ts, a.uptime_ms, a.seq)
            == (b.sensor, b.kind, b.unit, b.ts, b.uptime_ms, b.seq)
}

/// Feeds `data` to each decoder; what decodes must survive encode → decode unchanged.
pub fn codec(data: &[u8]) {
    // The input check: one well-formed item. What passes re-encodes to something that passes,
    // and the re-encoding is stable (ciborium's own form of the item).
    if codec::check_well_formed(data).is_ok() {
        let value: Value = ciborium::de::from_reader(data).expect("checked well-formed");
        let once = cbor(&value);
        assert!(codec::check_well_formed(&once).is_ok(), "re-encoded input");
        let again: Value = ciborium::de::from_reader(&once[..]).expect("re-encoded input");
        assert_eq!(cbor(&again), once, "re-encoding is not stable");
    }
    if let Ok(e) = Envelope::decode(data) {
        assert_eq!(Envelope::decode(&e.encode()).as_ref(), Ok(&e));
    }
    if let Ok(records) = Envelope::decode_batch(data) {
        let again = Envelope::decode_batch(&Envelope::encode_batch("gw", &records));
        assert_eq!(again.as_ref(), Ok(&records));
    }
    if let Ok(r) = Reading::decode(data) {
        // Re-encoded, a number takes at most 9 bytes; text is copied as it is.
        let mut buf = vec![0u8; data.len() + 64];
        let n = r.encode(&mut buf).expect("room for the re-encoded reading");
        let again = Reading::decode(&buf[..n]).expect("re-encoded reading");
        assert!(same_reading(&r, &again), "{r:?} came back as {again:?}");
    }
    if let Ok(d) = Entry::decode(data) {
        assert_eq!(Entry::decode(&d.encode()).as_ref(), Ok(&d));
    }
    if let Ok(p) = Package::decode(data) {
        assert!(
            codec::check_well_formed(data).is_ok(),
            "a package is one CBOR item"
        );
        assert_eq!(Package::decode(&p.encode()).as_ref(), Ok(&p));
    }
    // What the deploy store reads back from sled.
    if let Ok(s) = codec::from_cbor::<NameState>(data) {
        assert_eq!(
            codec::from_cbor::<NameState>(&codec::to_cbor(&s)).as_ref(),
            Ok(&s)
        );
    }
    if let Ok(h) = codec::from_cbor::<HistoryEntry>(data) {
        assert_eq!(
            codec::from_cbor::<HistoryEntry>(&codec::to_cbor(&h)).as_ref(),
            Ok(&h)
        );
    }
    if let Ok(v) = codec::from_cbor::<StoredVersion>(data) {
        let again: StoredVersion =
            codec::from_cbor(&codec::to_cbor(&v)).expect("re-encoded stored version");
        assert_eq!((again.manifest, again.module), (v.manifest, v.module));
    }
    if let Ok(m) = codec::from_cbor::<Manifest>(data) {
        let again: Manifest = codec::from_cbor(&codec::to_cbor(&m)).expect("re-encoded manifest");
        assert_eq!(codec::to_cbor(&again), codec::to_cbor(&m));
    }
}
