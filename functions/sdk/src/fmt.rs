//! A fixed-size line buffer so guests can format log lines without an allocator.

/// 256 bytes of text; writes past the end are cut at a character boundary.
///
/// Build topics and keys with [`LineBuf::push`] on the event path: `write!` works too, but
/// `core::fmt` costs about 1,000 fuel per argument in a guest, `push` a few dozen.
///
/// ```
/// let (sensor, kind) = ("s1", "temperature");
/// let mut topic = kiri_sdk::LineBuf::new();
/// topic.push("alerts/").push(sensor).push("/").push(kind);
/// assert_eq!(topic.as_str(), "alerts/s1/temperature");
/// ```
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
    /// Appends `text` (cut at a character boundary if the buffer is full).
    pub fn push(&mut self, text: &str) -> &mut LineBuf {
        let end = self.len + text.len();
        match self.buf.get_mut(self.len..end) {
            Some(out) => {
                out.copy_from_slice(text.as_bytes());
                self.len = end;
            }
            None => self.push_cut(text),
        }
        self
    }

    /// The part of `text` that fits, cut at a character boundary.
    #[cold]
    #[inline(never)]
    fn push_cut(&mut self, text: &str) {
        let mut take = self.buf.len() - self.len;
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        // SAFETY: only whole `str`s, or their prefixes cut at a character boundary, are
        // ever copied in (`push`), so the bytes are UTF-8. (Checking them again cost a few
        // hundred fuel on every event.)
        unsafe { core::str::from_utf8_unchecked(&self.buf[..self.len]) }
    }
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf::new()
    }
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::LineBuf;
    use core::fmt::Write;

    #[test]
    fn pushes_past_the_end_are_cut_at_a_character_boundary() {
        let mut line = LineBuf::new();
        line.push(&"a".repeat(250)).push("/");
        let _ = write!(line, "{}", 7);
        line.push("ééé");
        // 252 bytes, then two-byte characters: the second would end at byte 256, the third not.
        assert_eq!(line.as_str().len(), 256);
        assert!(line.as_str().ends_with("/7éé"));
        line.push("b");
        assert_eq!(line.as_str().len(), 256);
        let mut odd = LineBuf::new();
        odd.push(&"a".repeat(255)).push("é");
        assert_eq!(odd.as_str(), "a".repeat(255));
    }
}
