// UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), for
// text taken from a payload: AssemblyScript's decoder would replace bad bytes silently.

/** Whether the `len` bytes at `ptr` are valid UTF-8. */
export function isValidUtf8(ptr: usize, len: i32): bool {
  let i = 0;
  while (i < len) {
    const b0 = <i32>load<u8>(ptr + <usize>i);
    if (b0 < 0x80) {
      i++;
      continue;
    }
    let need = 0;
    let min = 0;
    let cp = 0;
    if (b0 >= 0xc2 && b0 <= 0xdf) {
      need = 1;
      min = 0x80;
      cp = b0 & 0x1f;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      need = 2;
      min = 0x800;
      cp = b0 & 0x0f;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      need = 3;
      min = 0x10000;
      cp = b0 & 0x07;
    } else {
      return false;
    }
    // The continuation bytes i+1 ..= i+need must be inside the text.
    if (i + need >= len) return false;
    for (let k = 1; k <= need; k++) {
      const b = <i32>load<u8>(ptr + <usize>(i + k));
      if ((b & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += need + 1;
  }
  return true;
}
