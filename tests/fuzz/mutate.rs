//! Random mutations of fuzz inputs, libFuzzer's usual ones in small: bit flips, random and
//! boundary bytes and words, truncation, insertion, deletion, duplication, and splicing.

/// Longest input made.
pub const MAX_LEN: usize = 8192;

const BYTES: [u8; 14] = [
    0, 1, 0x7f, 0x80, 0xff, b'/', b'+', b'#', b'$', b'\n', b'=', b'"', 0x1f, 0xbf,
];
const WORDS: [u32; 9] = [
    0,
    1,
    0xff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fff0,
    0xffff_ffff,
];

/// `input` changed 1 to 4 times; `others` are spliced in from.
pub fn mutate(rng: &mut fastrand::Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        once(rng, &mut v, others);
    }
    v.truncate(MAX_LEN);
    v
}

fn once(rng: &mut fastrand::Rng, v: &mut Vec<u8>, others: &[Vec<u8>]) {
    let at = |rng: &mut fastrand::Rng, v: &[u8]| rng.usize(0..=v.len());
    match rng.u8(0..9) {
        0 if !v.is_empty() => {
            let i = rng.usize(0..v.len());
            v[i] ^= 1 << rng.u8(0..8);
        }
        1 if !v.is_empty() => {
            let i = rng.usize(0..v.len());
            v[i] = rng.u8(..);
        }
        2 if !v.is_empty() => {
            let i = rng.usize(0..v.len());
            v[i] = BYTES[rng.usize(0..BYTES.len())];
        }
        3 => {
            let w = WORDS[rng.usize(0..WORDS.len())].to_le_bytes();
            let n = if rng.bool() { 2 } else { 4 };
            let i = at(rng, v);
            let end = (i + n).min(v.len());
            v.splice(i..end, w[..n].iter().copied());
        }
        4 => {
            let i = at(rng, v);
            v.truncate(i);
        }
        5 => {
            let i = at(rng, v);
            let n = rng.usize(1..=16);
            let bytes: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(n).collect();
            v.splice(i..i, bytes);
        }
        6 if !v.is_empty() => {
            let i = rng.usize(0..v.len());
            let end = (i + rng.usize(1..=32)).min(v.len());
            v.drain(i..end);
        }
        7 if !v.is_empty() => {
            let i = rng.usize(0..v.len());
            let end = (i + rng.usize(1..=64)).min(v.len());
            let chunk = v[i..end].to_vec();
            let to = at(rng, v);
            v.splice(to..to, chunk);
        }
        _ if !others.is_empty() => {
            let other = &others[rng.usize(0..others.len())];
            let from = rng.usize(0..=other.len());
            let i = at(rng, v);
            v.truncate(i);
            v.extend_from_slice(&other[from..]);
        }
        _ => v.push(rng.u8(..)),
    }
}
