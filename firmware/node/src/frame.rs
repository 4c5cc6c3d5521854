//! Byte-stream framing: `COBS(payload ‖ CRC-32(payload)) ‖ 0x00`.

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
const CRC_LEN: usize = 4;

/// The longest frame (delimiter included) for a payload of `payload` bytes.
pub const fn max_frame_len(payload: usize) -> usize {
    cobs::max_encoding_length(payload + CRC_LEN) + 1
}

/// Frames `payload` into `out`; `None` if `out` is too small (see [`max_frame_len`]) or the
/// payload is larger than 256 bytes (frames are for readings, not bulk data).
pub fn encode(payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut raw = [0u8; 256 + CRC_LEN];
    if payload.len() > 256 || out.len() < max_frame_len(payload.len()) {
        return None;
    }
    raw[..payload.len()].copy_from_slice(payload);
    let crc = CRC.checksum(payload).to_le_bytes();
    raw[payload.len()..payload.len() + CRC_LEN].copy_from_slice(&crc);
    let n = cobs::encode(&raw[..payload.len() + CRC_LEN], out);
    out[n] = 0;
    Some(n + 1)
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// More bytes than the buffer holds before a delimiter: skipped to the next one.
    TooLong,
    /// Not valid COBS, or shorter than its CRC.
    Malformed,
    /// The CRC does not match: corrupted on the way.
    Crc,
}

/// Counts of what the deframer saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Frames delivered.
    pub good: u64,
    /// Frames dropped, any reason.
    pub bad: u64,
}

/// Reassembles frames from a byte stream, `N` bytes of buffer (frames longer are dropped).
pub struct Deframer<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
    counts: Counts,
}

impl<const N: usize> Default for Deframer<N> {
    fn default() -> Self {
        Deframer {
            buf: [0; N],
            len: 0,
            overflow: false,
            counts: Counts::default(),
        }
    }
}

impl<const N: usize> Deframer<N> {
    /// What it has seen so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Takes one byte. At a delimiter, returns the frame's payload, or why it was dropped
    /// (a run of delimiters, an empty frame, is skipped silently).
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if byte != 0 {
            if self.len == N {
                self.overflow = true;
            } else {
                self.buf[self.len] = byte;
                self.len += 1;
            }
            return None;
        }
        let (len, overflow) = (self.len, self.overflow);
        self.len = 0;
        self.overflow = false;
        if len == 0 && !overflow {
            return None;
        }
        let result = if overflow {
            Err(FrameError::TooLong)
        } else {
            match cobs::decode_in_place(&mut self.buf[..len]) {
                Ok(n) if n >= CRC_LEN => {
                    let (payload, crc) = self.buf[..n].split_at(n - CRC_LEN);
                    if CRC.checksum(payload).to_le_bytes() == crc {
                        Ok(n - CRC_LEN)
                    } else {
                        Err(FrameError::Crc)
                    }
                }
                _ => Err(FrameError::Malformed),
            }
        };
        match result {
            Ok(n) => {
                self.counts.good += 1;
                Some(Ok(&self.buf[..n]))
            }
            Err(e) => {
                self.counts.bad += 1;
                Some(Err(e))
            }
        }
    }
}
