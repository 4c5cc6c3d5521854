// Text to number, as strictly as Rust's `str::parse::<f64>` (what the Rust SDK's
// `config_parse` uses), so that a configuration value means the same to both SDKs.

function isSpace(c: i32): bool {
  return c == 0x20 || (c >= 0x09 && c <= 0x0d);
}

function isDigit(c: i32): bool {
  return c >= 0x30 && c <= 0x39;
}

function lower(c: i32): i32 {
  return c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
}

function matchesWord(s: string, from: i32, word: string): bool {
  if (s.length - from != word.length) return false;
  for (let i = 0; i < word.length; i++) {
    if (lower(s.charCodeAt(from + i)) != word.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Parses `text` (surrounding ASCII white space ignored) as a decimal number: an optional sign,
 * digits with an optional fraction (`5`, `5.`, `.5`, `5.25`), an optional exponent (`1e-3`),
 * or `inf`/`infinity` (any case). Anything else, and "nan", gives NaN.
 */
export function parseNumber(text: string): f64 {
  let start = 0;
  let end = text.length;
  while (start < end && isSpace(text.charCodeAt(start))) start++;
  while (end > start && isSpace(text.charCodeAt(end - 1))) end--;
  if (start == end) return NaN;
  const s = start == 0 && end == text.length ? text : text.substring(start, end);
  let i = 0;
  let negative = false;
  const first = s.charCodeAt(0);
  if (first == 0x2b || first == 0x2d) {
    negative = first == 0x2d;
    i = 1;
  }
  if (matchesWord(s, i, "inf") || matchesWord(s, i, "infinity")) {
    return negative ? -Infinity : Infinity;
  }
  let intDigits = 0;
  while (i < s.length && isDigit(s.charCodeAt(i))) {
    i++;
    intDigits++;
  }
  let fracDigits = 0;
  if (i < s.length && s.charCodeAt(i) == 0x2e) {
    i++;
    while (i < s.length && isDigit(s.charCodeAt(i))) {
      i++;
      fracDigits++;
    }
  }
  if (intDigits + fracDigits == 0) return NaN;
  if (i < s.length && lower(s.charCodeAt(i)) == 0x65) {
    i++;
    if (i < s.length && (s.charCodeAt(i) == 0x2b || s.charCodeAt(i) == 0x2d)) i++;
    let expDigits = 0;
    while (i < s.length && isDigit(s.charCodeAt(i))) {
      i++;
      expDigits++;
    }
    if (expDigits == 0) return NaN;
  }
  if (i != s.length) return NaN;
  return parseFloat(s);
}
