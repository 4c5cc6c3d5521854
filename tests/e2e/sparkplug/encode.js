// Encodes a Sparkplug B payload with Eclipse Tahu's sparkplug-payload library, as an edge
// node would: `node encode.js <nbirth|ndata> <out-file>`. Used by the end-to-end tests
// (tests/e2e/formats.rs), so that Kiri's decoder is tried on bytes it did not write.
const sp = require('sparkplug-payload').get('spBv1.0');
const fs = require('fs');

const [, , kind, out] = process.argv;
const now = 1700000000000;
const payloads = {
  nbirth: {
    timestamp: now,
    seq: 0,
    metrics: [
      { name: 'bdSeq', type: 'UInt64', value: 0 },
      { name: 'Temperature', alias: 1, type: 'Double', value: 21.5 },
      { name: 'Offset', alias: 2, type: 'Int16', value: -3 },
    ],
  },
  ndata: {
    timestamp: now + 1000,
    seq: 1,
    metrics: [
      { alias: 1, type: 'Double', value: 21.75, timestamp: now + 1000 },
      { alias: 2, type: 'Int16', value: -4 },
    ],
  },
};
fs.writeFileSync(out, Buffer.from(sp.encodePayload(payloads[kind])));
