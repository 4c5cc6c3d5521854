//! A fixed-size line buffer so guests can format log lines without an allocator.

/// 256 bytes of text; writes past the end are cut at a character boundary.
pub struct LineBuf {
    buf: [u8; 256],
    len: usize,
}

impl LineBuf {
    /// An empty line.
    pub const fn new() -> LineBuf {
        LineBuf {
            buf: [0; 256],
            len: 0,
        }
    }
    /// The text written so far.
    pub fn as_str(&self) -> &str {
        // Only whole `str` pieces (cut at char boundaries) are ever copied in.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf::new()
    }
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}
