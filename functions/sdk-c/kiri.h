/*
 * kiri.h: the C SDK for Kiri functions, ABI version 1 (docs/writing-functions.md is the
 * contract, docs/functions-c.md the guide to this header).
 *
 * One header, nothing to link: every helper is `static inline` (the compiler keeps only what a
 * function uses), and `KIRI_EXPORTS(handler);`, written once in one file, defines the exports
 * the gateway calls. Builds freestanding (no libc) or with wasi-libc:
 *
 *   clang --target=wasm32 -nostdlib -O2 -Wl,--no-entry -o fn.wasm fn.c
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -o fn.wasm fn.c   (wasi-libc)
 *
 * What is here:
 *   - the host's imports (module "kiri"), declared with their exact ABI types: kiri_emit,
 *     kiri_publish, kiri_respond, kiri_log, kiri_now_ms, kiri_config, kiri_kv_get, kiri_kv_put,
 *     kiri_kv_delete, kiri_kv_list, kiri_caller, kiri_input_format; the result codes, log
 *     levels and payload formats as constants. An import appears in the module only if the
 *     function calls it.
 *   - `KIRI_EXPORTS(handler);` defines kiri_abi_version, kiri_alloc (one static buffer of
 *     KIRI_EVENT_BUF_SIZE bytes) and kiri_on_event, around `int handler(const kiri_event *)`.
 *   - kiri_reading_decode / kiri_reading_decode_json / kiri_reading_encode: the sensor reading
 *     (docs/data-formats.md) in CBOR or JSON, and back to CBOR with extra numeric fields;
 *   - a bounds-checked CBOR reader and writer (kiri_cbor_*), a JSON top-level lookup
 *     (kiri_json_get_*), number parsing, a text builder for topics and log lines (kiri_buf_*),
 *     and memory helpers;
 *   - freestanding only: weak memcpy, memmove, memset, memcmp, bcmp and strlen, which clang
 *     may call on its own for copies and comparisons (KIRI_NO_LIBC_SHIMS leaves them out).
 *
 * Every reader takes (pointer, length), never reads outside it, never allocates, and treats
 * input as untrusted: a malformed payload is an error value, never a crash.
 *
 * Knobs (#define before including): KIRI_EVENT_BUF_SIZE (default 327680: the gateway's
 * default largest message, 256 KiB, plus the largest MQTT topic), KIRI_CBOR_MAX_DEPTH (32)
 * and KIRI_JSON_MAX_DEPTH (128): nesting levels the skippers follow, deeper input is
 * malformed.
 */
#ifndef KIRI_H
#define KIRI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------------
 * The ABI's constants
 * ---------------------------------------------------------------------------------------- */

#define KIRI_ABI_VERSION 1

/* Host call results: non-negative is success. */
#define KIRI_OK 0
#define KIRI_TOO_LARGE (-1)
#define KIRI_LIMIT (-2)
#define KIRI_NOT_FOUND (-3)
#define KIRI_DENIED (-5)
#define KIRI_INVALID (-6)

/* kiri_log levels. */
#define KIRI_LOG_ERROR 0
#define KIRI_LOG_WARN 1
#define KIRI_LOG_INFO 2
#define KIRI_LOG_DEBUG 3

/* What kiri_input_format() returns. */
#define KIRI_FORMAT_NONE 0 /* a timer tick */
#define KIRI_FORMAT_CBOR 1
#define KIRI_FORMAT_JSON 2
#define KIRI_FORMAT_TEXT 3
#define KIRI_FORMAT_BYTES 4 /* also an HTTP invocation's body */
#define KIRI_FORMAT_SPARKPLUG_B 5

#define KIRI_MAX_TOPIC_BYTES 1024 /* emit/publish topics; longer is KIRI_TOO_LARGE */
#define KIRI_MAX_KEY_BYTES 256    /* key-value keys */
#define KIRI_MAX_CALLER_BYTES 256 /* what kiri_caller can write */

#ifndef KIRI_EVENT_BUF_SIZE
#define KIRI_EVENT_BUF_SIZE (256 * 1024 + 64 * 1024)
#endif
#ifndef KIRI_CBOR_MAX_DEPTH
#define KIRI_CBOR_MAX_DEPTH 32
#endif
#ifndef KIRI_JSON_MAX_DEPTH
#define KIRI_JSON_MAX_DEPTH 128
#endif

/* ------------------------------------------------------------------------------------------
 * Attributes
 * ---------------------------------------------------------------------------------------- */

#if defined(__wasm__)
#define KIRI_IMPORT(name) __attribute__((import_module("kiri"), import_name(name)))
/* Exports a function under `name` (no -Wl,--export flag needed). */
#define KIRI_EXPORT(name) __attribute__((export_name(name)))
#else
/* Natively (the SDK's own tests) the imports are plain functions the test defines. */
#define KIRI_IMPORT(name)
#define KIRI_EXPORT(name)
#endif

#define KIRI_API static inline

/* Keeps clang from turning a copy loop into a call to the function being defined. */
#if defined(__has_attribute)
#if __has_attribute(no_builtin)
#define KIRI__NO_BUILTIN __attribute__((no_builtin))
#endif
#endif
#ifndef KIRI__NO_BUILTIN
#define KIRI__NO_BUILTIN
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------
 * The host's functions (import module "kiri"); the ABI's types: pointers and lengths are i32
 * ---------------------------------------------------------------------------------------- */

/* Queue a result for the cloud (committed with the invocation). */
KIRI_IMPORT("emit")
int32_t kiri_emit(const char *topic, int32_t topic_len, const void *payload, int32_t payload_len);
/* Queue a message for the local broker (published after the invocation commits). */
KIRI_IMPORT("publish")
int32_t kiri_publish(const char *topic, int32_t topic_len, const void *payload,
                     int32_t payload_len);
/* Set the response body of an HTTP invocation (topic "$http"); the last call wins. */
KIRI_IMPORT("respond") int32_t kiri_respond(const void *body, int32_t body_len);
/* Write a log line at a KIRI_LOG_* level. */
KIRI_IMPORT("log") void kiri_log(int32_t level, const char *msg, int32_t msg_len);
/* Wall-clock time, ms since the Unix epoch. */
KIRI_IMPORT("now_ms") int64_t kiri_now_ms(void);
/* The function's config value for `key` as text: writes at most out_cap bytes, returns the
 * value's full length, or KIRI_NOT_FOUND. */
KIRI_IMPORT("config")
int32_t kiri_config(const char *key, int32_t key_len, char *out, int32_t out_cap);
/* The function's key-value state: as kiri_config (full length, KIRI_NOT_FOUND if absent). */
KIRI_IMPORT("kv_get")
int32_t kiri_kv_get(const void *key, int32_t key_len, void *out, int32_t out_cap);
/* Set a key (committed with the invocation). */
KIRI_IMPORT("kv_put")
int32_t kiri_kv_put(const void *key, int32_t key_len, const void *value, int32_t value_len);
/* Delete a key (committed with the invocation). */
KIRI_IMPORT("kv_delete") int32_t kiri_kv_delete(const void *key, int32_t key_len);
/* The keys starting with `prefix`, each as a 2-byte big-endian length and the key; returns
 * the encoding's full length (see kiri_kv_keys_next). */
KIRI_IMPORT("kv_list")
int32_t kiri_kv_list(const void *prefix, int32_t prefix_len, void *out, int32_t out_cap);
/* The verified subject of the HTTP caller (full length), or KIRI_NOT_FOUND. */
KIRI_IMPORT("caller") int32_t kiri_caller(char *out, int32_t out_cap);
/* The payload's format as the function received it (KIRI_FORMAT_*). An addition to ABI v1:
 * calling it makes the module import it, which gateways older than the import refuse. */
KIRI_IMPORT("input_format") int32_t kiri_input_format(void);
/* The function's config value for `key` as JSON, typed as the configuration wrote it (30.5,
 * true, "text", [1,2], {"a":1}); an empty key gives the whole table as one object. Answers
 * like kiri_config. An addition to ABI v1 (imported only when called). */
KIRI_IMPORT("config_json")
int32_t kiri_config_json(const char *key, int32_t key_len, char *out, int32_t out_cap);
/* For an HTTP call (topic "$http"): the request as one JSON object, {"method", "path",
 * "query", "headers"} (full length), or KIRI_NOT_FOUND for other events. Read its fields
 * with kiri_json_get_string. An addition to ABI v1 (imported only when called). */
KIRI_IMPORT("http_request") int32_t kiri_http_request(char *out, int32_t out_cap);
/* For an HTTP call: the answer's status (200 to 599) and headers, a JSON object of text
 * values such as {"content-type":"application/json"} (headers_len 0: none); the body is
 * kiri_respond's. KIRI_INVALID for a status or header the gateway does not send. An
 * addition to ABI v1 (imported only when called). */
KIRI_IMPORT("http_response")
int32_t kiri_http_response(int32_t status, const char *headers, int32_t headers_len);

/* ------------------------------------------------------------------------------------------
 * Memory and text
 * ---------------------------------------------------------------------------------------- */

KIRI__NO_BUILTIN KIRI_API void *kiri_memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    while (n--) *d++ = *s++;
    return dst;
}

KIRI__NO_BUILTIN KIRI_API void *kiri_memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if (d == s || n == 0) return dst;
    if ((uintptr_t)d < (uintptr_t)s) {
        while (n--) *d++ = *s++;
    } else {
        while (n) {
            n--;
            d[n] = s[n];
        }
    }
    return dst;
}

KIRI__NO_BUILTIN KIRI_API void *kiri_memset(void *dst, int c, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

KIRI__NO_BUILTIN KIRI_API int kiri_memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    }
    return 0;
}

KIRI__NO_BUILTIN KIRI_API size_t kiri_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

#if defined(__wasm__) && !defined(__wasi__) && !defined(KIRI_NO_LIBC_SHIMS)
/* Freestanding (no libc): clang emits calls to these for struct copies, zeroing and
 * comparisons even when the code never names them, and wasm-ld then fails with "undefined
 * symbol: memcmp". Weak, so a definition of the author's own, or a libc's, wins; and defined
 * in every file that includes this header without clashing. */
__attribute__((weak)) KIRI__NO_BUILTIN void *memcpy(void *dst, const void *src, size_t n) {
    return kiri_memcpy(dst, src, n);
}
__attribute__((weak)) KIRI__NO_BUILTIN void *memmove(void *dst, const void *src, size_t n) {
    return kiri_memmove(dst, src, n);
}
__attribute__((weak)) KIRI__NO_BUILTIN void *memset(void *dst, int c, size_t n) {
    return kiri_memset(dst, c, n);
}
__attribute__((weak)) KIRI__NO_BUILTIN int memcmp(const void *a, const void *b, size_t n) {
    return kiri_memcmp(a, b, n);
}
__attribute__((weak)) KIRI__NO_BUILTIN int bcmp(const void *a, const void *b, size_t n) {
    return kiri_memcmp(a, b, n);
}
__attribute__((weak)) KIRI__NO_BUILTIN size_t strlen(const char *s) { return kiri_strlen(s); }
#endif

/* A run of bytes, usually UTF-8 text, not NUL-terminated (slices of the payload or of a
 * caller's buffer). */
typedef struct kiri_str {
    const char *ptr;
    size_t len;
} kiri_str;

/* A kiri_str over a NUL-terminated string. */
KIRI_API kiri_str kiri_str_from(const char *cstr) {
    kiri_str s;
    s.ptr = cstr;
    s.len = kiri_strlen(cstr);
    return s;
}

KIRI_API bool kiri_str_eq(kiri_str a, kiri_str b) {
    return a.len == b.len && kiri_memcmp(a.ptr, b.ptr, a.len) == 0;
}

KIRI_API bool kiri_str_eq_cstr(kiri_str a, const char *b) {
    return kiri_str_eq(a, kiri_str_from(b));
}

/* The length of the UTF-8 sequence starting at p (at most `avail` bytes), or 0 if it is not
 * valid UTF-8 (overlong forms, surrogates and code points above U+10FFFF are not). */
KIRI_API size_t kiri__utf8_seq(const uint8_t *p, size_t avail) {
    uint8_t c = p[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) {
        len = 2, cp = c & 0x1fu, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, cp = c & 0x0fu, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, cp = c & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (avail < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[k] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* Whether p[0..n) is valid UTF-8. */
KIRI_API bool kiri_utf8_valid(const void *p, size_t n) {
    const uint8_t *s = (const uint8_t *)p;
    size_t i = 0;
    while (i < n) {
        size_t k = kiri__utf8_seq(s + i, n - i);
        if (k == 0) return false;
        i += k;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------
 * kiri_buf: text built into a caller's array (topics, log lines), without printf
 * ---------------------------------------------------------------------------------------- */

/* Writes past `cap` are cut (at a UTF-8 character boundary) and set `overflow`. */
typedef struct kiri_buf {
    char *ptr;
    size_t cap;
    size_t len;
    bool overflow;
} kiri_buf;

KIRI_API kiri_buf kiri_buf_make(char *mem, size_t cap) {
    kiri_buf b;
    b.ptr = mem;
    b.cap = cap;
    b.len = 0;
    b.overflow = false;
    return b;
}

/* The text written so far. */
KIRI_API kiri_str kiri_buf_view(const kiri_buf *b) {
    kiri_str s;
    s.ptr = b->ptr;
    s.len = b->len;
    return s;
}

KIRI_API void kiri_buf_mem(kiri_buf *b, const void *p, size_t n) {
    const uint8_t *s = (const uint8_t *)p;
    size_t room = b->cap - b->len, take = n < room ? n : room;
    if (take < n) {
        b->overflow = true;
        while (take > 0 && (s[take] & 0xc0) == 0x80) take--; /* not inside a character */
    }
    if (take == 0) return;
    kiri_memcpy(b->ptr + b->len, s, take);
    b->len += take;
}

KIRI_API void kiri_buf_str(kiri_buf *b, kiri_str s) { kiri_buf_mem(b, s.ptr, s.len); }

KIRI_API void kiri_buf_cstr(kiri_buf *b, const char *s) { kiri_buf_mem(b, s, kiri_strlen(s)); }

KIRI_API void kiri_buf_char(kiri_buf *b, char c) {
    if (b->len < b->cap) {
        b->ptr[b->len++] = c;
    } else {
        b->overflow = true;
    }
}

KIRI_API void kiri_buf_u64(kiri_buf *b, uint64_t v) {
    char tmp[20];
    size_t n = sizeof tmp;
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    kiri_buf_mem(b, tmp + n, sizeof tmp - n);
}

KIRI_API void kiri_buf_i64(kiri_buf *b, int64_t v) {
    if (v < 0) {
        kiri_buf_char(b, '-');
        kiri_buf_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        kiri_buf_u64(b, (uint64_t)v);
    }
}

KIRI_API uint64_t kiri__f64_bits(double x) {
    union {
        double f;
        uint64_t u;
    } v;
    v.f = x;
    return v.u;
}

KIRI_API double kiri__f64_from_bits(uint64_t u) {
    union {
        uint64_t u;
        double f;
    } v;
    v.u = u;
    return v.f;
}

/* Fixed point with `decimals` (at most 9) digits after the point ("21.50" for 2), rounded;
 * magnitudes from 1e18 up as "2.15e21". For log lines: not the shortest round-trip form. */
KIRI_API void kiri_buf_f64(kiri_buf *b, double x, unsigned decimals) {
    uint64_t bits = kiri__f64_bits(x);
    if ((bits & 0x7ff0000000000000u) == 0x7ff0000000000000u) {
        if (bits & 0x000fffffffffffffu) {
            kiri_buf_cstr(b, "NaN");
            return;
        }
        kiri_buf_cstr(b, bits >> 63 ? "-inf" : "inf");
        return;
    }
    if (bits >> 63) {
        kiri_buf_char(b, '-');
        x = -x;
    }
    if (decimals > 9) decimals = 9;
    int exp10 = 0;
    if (x >= 1e18) {
        while (x >= 10.0) {
            x /= 10.0;
            exp10++;
        }
    }
    uint64_t scale = 1;
    for (unsigned i = 0; i < decimals; i++) scale *= 10;
    uint64_t ip = (uint64_t)x;
    uint64_t frac = (uint64_t)((x - (double)ip) * (double)scale + 0.5);
    if (frac >= scale) {
        ip++;
        frac -= scale;
    }
    if (exp10 && ip >= 10) { /* 9.99.. rounded up to 10 */
        ip /= 10;
        exp10++;
    }
    kiri_buf_u64(b, ip);
    if (decimals) {
        char tmp[9];
        for (unsigned i = 0; i < decimals && i < sizeof tmp; i++) {
            tmp[decimals - 1 - i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        kiri_buf_char(b, '.');
        kiri_buf_mem(b, tmp, decimals);
    }
    if (exp10) {
        kiri_buf_char(b, 'e');
        kiri_buf_u64(b, (uint64_t)exp10);
    }
}

/* ------------------------------------------------------------------------------------------
 * Numbers from text
 * ---------------------------------------------------------------------------------------- */

KIRI_API double kiri__inf(void) { return kiri__f64_from_bits(0x7ff0000000000000u); }

/* Double-double arithmetic (a value as an unevaluated sum hi + lo, about 106 bits), for
 * decimal numbers beyond the exact fast path. Plain double operations only: no fma, no libm. */
typedef struct kiri__dd {
    double hi, lo;
} kiri__dd;

KIRI_API kiri__dd kiri__dd_make(double hi, double lo) {
    kiri__dd r;
    r.hi = hi;
    r.lo = lo;
    return r;
}

KIRI_API kiri__dd kiri__quick_two_sum(double a, double b) { /* |a| >= |b| */
    double s = a + b;
    return kiri__dd_make(s, b - (s - a));
}

KIRI_API kiri__dd kiri__two_sum(double a, double b) {
    double s = a + b, bb = s - a;
    return kiri__dd_make(s, (a - (s - bb)) + (b - bb));
}

/* Veltkamp's split of a into two halves of 26 bits, scaled to stay finite near DBL_MAX. */
KIRI_API void kiri__split(double a, double *hi, double *lo) {
    if (a > 6.69692879491417e+299 || a < -6.69692879491417e+299) {
        a *= 3.7252902984619140625e-09; /* 2^-28 */
        double t = 134217729.0 * a;     /* 2^27 + 1 */
        *hi = t - (t - a);
        *lo = a - *hi;
        *hi *= 268435456.0; /* 2^28 */
        *lo *= 268435456.0;
        return;
    }
    double t = 134217729.0 * a;
    *hi = t - (t - a);
    *lo = a - *hi;
}

/* a * b exactly, as a double-double (Dekker). */
KIRI_API kiri__dd kiri__two_prod(double a, double b) {
    double p = a * b, ah, al, bh, bl;
    kiri__split(a, &ah, &al);
    kiri__split(b, &bh, &bl);
    return kiri__dd_make(p, ((ah * bh - p) + ah * bl + al * bh) + al * bl);
}

KIRI_API kiri__dd kiri__dd_mul(kiri__dd x, double d) {
    kiri__dd p = kiri__two_prod(x.hi, d);
    return kiri__quick_two_sum(p.hi, p.lo + x.lo * d);
}

KIRI_API kiri__dd kiri__dd_div(kiri__dd x, double d) {
    double q1 = x.hi / d;
    kiri__dd p = kiri__two_prod(q1, d);
    kiri__dd s = kiri__two_sum(x.hi, -p.hi);
    double q2 = (s.hi + (s.lo - p.lo + x.lo)) / d;
    return kiri__quick_two_sum(q1, q2);
}

/* m * 10^e10 as a double. Correctly rounded when m <= 2^53 and |e10| <= 22 (every number of
 * up to 15 significant digits with a modest exponent: what sensors and configs send); beyond,
 * computed in double-double, so correctly rounded but for inputs within about 1e-30 of a
 * halfway point between two doubles, and for subnormal results (within an ulp). The callers
 * keep 19 significant digits. */
KIRI_API double kiri__decimal(uint64_t m, int64_t e10, bool neg) {
    static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    double v;
    if (m == 0 || e10 < -400) {
        v = 0.0;
    } else if (e10 > 400) {
        v = kiri__inf();
    } else if (m <= (uint64_t)1 << 53 && e10 >= -22 && e10 <= 22) {
        v = e10 >= 0 ? (double)m * pow10[e10] : (double)m / pow10[-e10]; /* both exact */
    } else {
        /* m exactly: its top 53 bits and the rest. */
        uint64_t low = m & 0x7ffu;
        kiri__dd x = kiri__two_sum((double)(m - low), (double)low);
        /* Work 2^200 higher for tiny results, where the low half does not underflow, and
         * 2^200 lower for huge ones, where the exact product's halves do not overflow. */
        bool tiny = e10 < -250, huge = e10 > 250;
        if (tiny) x = kiri__dd_make(x.hi * 0x1p200, x.lo * 0x1p200);
        if (huge) x = kiri__dd_make(x.hi * 0x1p-200, x.lo * 0x1p-200);
        while (e10 > 22) {
            x = kiri__dd_mul(x, 1e22);
            e10 -= 22;
        }
        while (e10 < -22) {
            x = kiri__dd_div(x, 1e22);
            e10 += 22;
        }
        x = e10 >= 0 ? kiri__dd_mul(x, pow10[e10]) : kiri__dd_div(x, pow10[-e10]);
        v = x.hi + x.lo;
        if (tiny) v *= 0x1p-200; /* exact unless the result is subnormal */
        if (huge) v *= 0x1p200;  /* exact, or infinity */
        if (v != v) v = kiri__inf(); /* inf - inf on overflow */
    }
    return neg ? -v : v;
}

KIRI_API bool kiri__is_digit(char c) { return c >= '0' && c <= '9'; }

/* Scans a decimal number at [p, end). JSON's grammar when `json` (-?(0|[1-9][0-9]*)
 * (.[0-9]+)?([eE][+-]?[0-9]+)?), else also a leading '+', ".5" and "5.". Returns the end of
 * the number (NULL if there is none); *out is its value, *uint (if not NULL) its value when
 * it is an unsigned integer of 64 bits written without sign, point or exponent, and
 * *is_uint whether it is. */
KIRI_API const char *kiri__scan_number(const char *p, const char *end, bool json, double *out,
                                       bool *is_uint, uint64_t *uint) {
    const char *s = p;
    bool neg = false, plain = true, any = false;
    uint64_t m = 0, whole = 0;
    int64_t e10 = 0;
    int sig = 0;
    if (s < end && (*s == '-' || (!json && *s == '+'))) {
        neg = *s == '-';
        plain = false;
        s++;
    }
    const char *int_start = s;
    for (; s < end && kiri__is_digit(*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        any = true;
        if (whole > (UINT64_MAX - d) / 10) {
            plain = false;
        } else {
            whole = whole * 10 + d;
        }
        if (m == 0 && d == 0) continue;
        if (sig < 19) {
            m = m * 10 + d;
            sig++;
        } else {
            e10++;
        }
    }
    if (json) {
        if (s == int_start) return NULL;
        if (*int_start == '0' && s - int_start > 1) return NULL;
    }
    if (s < end && *s == '.') {
        s++;
        plain = false;
        const char *frac_start = s;
        for (; s < end && kiri__is_digit(*s); s++) {
            unsigned d = (unsigned)(*s - '0');
            any = true;
            if (m == 0 && d == 0) {
                e10--;
            } else if (sig < 19) {
                m = m * 10 + d;
                sig++;
                e10--;
            }
        }
        if (json && s == frac_start) return NULL;
    }
    if (!any) return NULL;
    if (s < end && (*s == 'e' || *s == 'E')) {
        s++;
        plain = false;
        bool eneg = false;
        int64_t e = 0;
        if (s < end && (*s == '+' || *s == '-')) eneg = *s++ == '-';
        const char *exp_start = s;
        for (; s < end && kiri__is_digit(*s); s++) {
            if (e < 1000000) e = e * 10 + (*s - '0');
        }
        if (s == exp_start) return NULL;
        e10 += eneg ? -e : e;
    }
    *out = kiri__decimal(m, e10, neg);
    if (is_uint) *is_uint = plain;
    if (uint) *uint = whole;
    return s;
}

KIRI_API bool kiri__is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

KIRI_API bool kiri__word_ci(const char *s, const char *end, const char *word) {
    size_t n = kiri_strlen(word);
    if ((size_t)(end - s) != n) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != word[i]) return false;
    }
    return true;
}

/* Parses the whole of s[0..n) as a number, surrounding whitespace allowed, as Rust's
 * `str::trim().parse::<f64>()` does (so a config value reads the same as in the Rust SDK):
 * "30", " 30.5 ", "-1e3", "+.5", "inf", "NaN". */
KIRI_API bool kiri_parse_f64(const char *s, size_t n, double *out) {
    const char *p = s, *end = s + n;
    while (p < end && kiri__is_space(*p)) p++;
    while (end > p && kiri__is_space(end[-1])) end--;
    if (p == end) return false;
    const char *w = p;
    bool neg = false;
    if (*w == '+' || *w == '-') neg = *w++ == '-';
    if (kiri__word_ci(w, end, "inf") || kiri__word_ci(w, end, "infinity")) {
        *out = neg ? -kiri__inf() : kiri__inf();
        return true;
    }
    if (kiri__word_ci(w, end, "nan")) {
        *out = kiri__f64_from_bits(0x7ff8000000000000u);
        return true;
    }
    double v;
    const char *stop = kiri__scan_number(p, end, false, &v, NULL, NULL);
    if (stop != end) return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------------------------------------
 * Host call helpers
 * ---------------------------------------------------------------------------------------- */

/* Logs a NUL-terminated line. */
KIRI_API void kiri_log_str(int32_t level, const char *msg) {
    kiri_log(level, msg, (int32_t)kiri_strlen(msg));
}

/* Logs what a kiri_buf holds. */
KIRI_API void kiri_log_buf(int32_t level, const kiri_buf *b) {
    kiri_log(level, b->ptr, (int32_t)b->len);
}

/* Emits to a NUL-terminated topic. */
KIRI_API int32_t kiri_emit_str(const char *topic, const void *payload, size_t len) {
    return kiri_emit(topic, (int32_t)kiri_strlen(topic), payload, (int32_t)len);
}

/* The config value `key`, read into buf: false if it is not set or does not fit in `cap`. */
KIRI_API bool kiri_config_get(const char *key, char *buf, size_t cap, kiri_str *value) {
    int32_t n = kiri_config(key, (int32_t)kiri_strlen(key), buf, (int32_t)cap);
    if (n < 0 || (size_t)n > cap) return false;
    value->ptr = buf;
    value->len = (size_t)n;
    return true;
}

/* The config value `key` as a number (kiri_parse_f64): false if it is not set, longer than
 * 128 bytes, or not a number. As kiri_sdk::config_parse::<f64> in Rust. */
KIRI_API bool kiri_config_number(const char *key, double *out) {
    char buf[128];
    kiri_str v;
    return kiri_config_get(key, buf, sizeof buf, &v) && kiri_parse_f64(v.ptr, v.len, out);
}

/* The next key of what kiri_kv_list wrote (list[0..len), `len` its return value, at most
 * the buffer's size): advances *pos, false after the last. */
KIRI_API bool kiri_kv_keys_next(const void *list, size_t len, size_t *pos, kiri_str *key) {
    const uint8_t *p = (const uint8_t *)list;
    if (*pos > len || len - *pos < 2) return false;
    size_t n = (size_t)p[*pos] << 8 | p[*pos + 1];
    if (len - *pos - 2 < n) return false;
    key->ptr = (const char *)p + *pos + 2;
    key->len = n;
    *pos += 2 + n;
    return true;
}

/* ------------------------------------------------------------------------------------------
 * The event and the exports
 * ---------------------------------------------------------------------------------------- */

typedef struct kiri_event {
    kiri_str topic;         /* the MQTT topic, or "$timer", or "$http" */
    const uint8_t *payload; /* the message as published (empty for a timer) */
    size_t payload_len;
    int64_t received_at_ms; /* when the gateway received it, ms since the Unix epoch */
} kiri_event;

KIRI_API bool kiri_event_is_timer(const kiri_event *ev) {
    return kiri_str_eq_cstr(ev->topic, "$timer");
}

KIRI_API bool kiri_event_is_http(const kiri_event *ev) {
    return kiri_str_eq_cstr(ev->topic, "$http");
}

/*
 * `KIRI_EXPORTS(handler);`, once in the module, with `int handler(const kiri_event *ev)` that
 * returns 0 on success (any other value fails the invocation and is recorded), defines:
 *   kiri_abi_version() -> 1
 *   kiri_alloc(len)    -> one static buffer of KIRI_EVENT_BUF_SIZE bytes, 0 for a longer
 *                         event (which then fails with reason `alloc`)
 *   kiri_on_event(...) -> handler(&event)
 * A module that wants other behaviour defines these three itself instead, with KIRI_EXPORT.
 */
#define KIRI_EXPORTS(handler)                                                                  \
    static uint8_t kiri__event_buf[KIRI_EVENT_BUF_SIZE] __attribute__((aligned(16)));          \
    KIRI_EXPORT("kiri_abi_version") int32_t kiri_abi_version(void);                             \
    KIRI_EXPORT("kiri_abi_version") int32_t kiri_abi_version(void) { return KIRI_ABI_VERSION; } \
    KIRI_EXPORT("kiri_alloc") void *kiri_alloc(int32_t len);                                    \
    KIRI_EXPORT("kiri_alloc") void *kiri_alloc(int32_t len) {                                   \
        return len >= 0 && (size_t)len <= sizeof kiri__event_buf ? (void *)kiri__event_buf     \
                                                                  : (void *)0;                 \
    }                                                                                          \
    KIRI_EXPORT("kiri_on_event")                                                               \
    int32_t kiri_on_event(const char *topic, int32_t topic_len, const uint8_t *payload,        \
                          int32_t payload_len, int64_t received_at_ms);                        \
    KIRI_EXPORT("kiri_on_event")                                                               \
    int32_t kiri_on_event(const char *topic, int32_t topic_len, const uint8_t *payload,        \
                          int32_t payload_len, int64_t received_at_ms) {                       \
        kiri_event ev;                                                                         \
        ev.topic.ptr = topic;                                                                  \
        ev.topic.len = (size_t)topic_len;                                                      \
        ev.payload = payload;                                                                  \
        ev.payload_len = (size_t)payload_len;                                                  \
        ev.received_at_ms = received_at_ms;                                                    \
        return (int32_t)(handler)(&ev);                                                        \
    }                                                                                          \
    typedef int kiri__exports_defined

/* ------------------------------------------------------------------------------------------
 * CBOR reader (RFC 8949): bounds-checked, no allocation
 * ---------------------------------------------------------------------------------------- */

/* Major types, as kiri_cbor_peek returns them. */
#define KIRI_CBOR_UINT 0
#define KIRI_CBOR_NEGINT 1
#define KIRI_CBOR_BYTES 2
#define KIRI_CBOR_TEXT 3
#define KIRI_CBOR_ARRAY 4
#define KIRI_CBOR_MAP 5
#define KIRI_CBOR_TAG 6
#define KIRI_CBOR_SIMPLE 7 /* floats, false, true, null, undefined, break */

/* A position in [p, end). Every kiri_cbor_read_* reads one item and moves past it; on a
 * mismatch or malformed input it returns false and leaves the position unchanged. */
typedef struct kiri_cbor {
    const uint8_t *p;
    const uint8_t *end;
} kiri_cbor;

KIRI_API kiri_cbor kiri_cbor_make(const void *buf, size_t len) {
    kiri_cbor c;
    c.p = (const uint8_t *)buf;
    c.end = c.p + len;
    return c;
}

/* Bytes left. */
KIRI_API size_t kiri_cbor_left(const kiri_cbor *c) { return (size_t)(c->end - c->p); }

/* The major type of the next item (KIRI_CBOR_*), or -1 at the end. */
KIRI_API int kiri_cbor_peek(const kiri_cbor *c) { return c->p < c->end ? *c->p >> 5 : -1; }

/* Reads an item's head: its major type, additional information and argument (the value, a
 * length, a count, a tag or a float's bits; 0 for an indefinite length, info 31). */
KIRI_API bool kiri__cbor_head(kiri_cbor *c, int *major, unsigned *info, uint64_t *arg) {
    if (c->p >= c->end) return false;
    uint8_t b = *c->p++;
    *major = b >> 5;
    *info = b & 31u;
    if (*info < 24) {
        *arg = *info;
    } else if (*info <= 27) {
        size_t n = (size_t)1 << (*info - 24);
        if (kiri_cbor_left(c) < n) return false;
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) v = v << 8 | c->p[i];
        c->p += n;
        *arg = v;
    } else if (*info == 31) {
        *arg = 0;
    } else {
        return false; /* 28..30 are reserved */
    }
    return true;
}

/* An unsigned integer (major type 0, any width). */
KIRI_API bool kiri_cbor_read_uint(kiri_cbor *c, uint64_t *v) {
    kiri_cbor t = *c;
    int major;
    unsigned info;
    uint64_t arg;
    if (!kiri__cbor_head(&t, &major, &info, &arg) || major != 0 || info == 31) return false;
    *v = arg;
    *c = t;
    return true;
}

/* An integer that fits in int64_t (major type 0 or 1). */
KIRI_API bool kiri_cbor_read_int(kiri_cbor *c, int64_t *v) {
    kiri_cbor t = *c;
    int major;
    unsigned info;
    uint64_t arg;
    if (!kiri__cbor_head(&t, &major, &info, &arg) || major > 1 || info == 31) return false;
    if (arg > (uint64_t)INT64_MAX) return false;
    *v = major == 0 ? (int64_t)arg : -1 - (int64_t)arg;
    *c = t;
    return true;
}

/* A half-precision float's bits as a double (exact: every half is a double). */
KIRI_API double kiri_f16_to_f64(uint16_t h) {
    uint64_t sign = (uint64_t)(h >> 15) << 63;
    unsigned e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    double v;
    if (e == 0) {
        v = (double)m * 5.9604644775390625e-08; /* m * 2^-24: zero and subnormals */
        return sign ? -v : v;
    }
    if (e == 31) return kiri__f64_from_bits(sign | 0x7ff0000000000000u | (uint64_t)m << 42);
    return kiri__f64_from_bits(sign | (uint64_t)(e - 15 + 1023) << 52 | (uint64_t)m << 42);
}

/* A number: an integer (unsigned, or negative within int64_t) or a float of 16, 32 or 64
 * bits, as a double. The same rule as the Rust SDK's reading decoder. */
KIRI_API bool kiri_cbor_read_number(kiri_cbor *c, double *v) {
    kiri_cbor t = *c;
    int major;
    unsigned info;
    uint64_t arg;
    if (!kiri__cbor_head(&t, &major, &info, &arg)) return false;
    if (major == 0 && info != 31) {
        *v = (double)arg;
    } else if (major == 1 && info != 31) {
        if (arg > (uint64_t)INT64_MAX) return false;
        *v = (double)(-1 - (int64_t)arg);
    } else if (major == 7 && info == 25) {
        *v = kiri_f16_to_f64((uint16_t)arg);
    } else if (major == 7 && info == 26) {
        union {
            uint32_t u;
            float f;
        } f;
        f.u = (uint32_t)arg;
        *v = (double)f.f;
    } else if (major == 7 && info == 27) {
        *v = kiri__f64_from_bits(arg);
    } else {
        return false;
    }
    *c = t;
    return true;
}

/* A definite-length string of major type `major`. */
KIRI_API bool kiri__cbor_read_string(kiri_cbor *c, int want, const uint8_t **p, size_t *n) {
    kiri_cbor t = *c;
    int major;
    unsigned info;
    uint64_t arg;
    if (!kiri__cbor_head(&t, &major, &info, &arg) || major != want || info == 31) return false;
    if (arg > kiri_cbor_left(&t)) return false;
    *p = t.p;
    *n = (size_t)arg;
    t.p += arg;
    *c = t;
    return true;
}

/* A definite-length text string, valid UTF-8 (a slice of the input). */
KIRI_API bool kiri_cbor_read_text(kiri_cbor *c, kiri_str *s) {
    kiri_cbor t = *c;
    const uint8_t *p;
    size_t n;
    if (!kiri__cbor_read_string(&t, KIRI_CBOR_TEXT, &p, &n) || !kiri_utf8_valid(p, n)) {
        return false;
    }
    s->ptr = (const char *)p;
    s->len = n;
    *c = t;
    return true;
}

/* A definite-length byte string (a slice of the input). */
KIRI_API bool kiri_cbor_read_bytes(kiri_cbor *c, const uint8_t **p, size_t *n) {
    return kiri__cbor_read_string(c, KIRI_CBOR_BYTES, p, n);
}

KIRI_API bool kiri_cbor_read_bool(kiri_cbor *c, bool *v) {
    if (c->p >= c->end || (*c->p != 0xf4 && *c->p != 0xf5)) return false;
    *v = *c->p++ == 0xf5;
    return true;
}

KIRI_API bool kiri_cbor_read_null(kiri_cbor *c) {
    if (c->p >= c->end || *c->p != 0xf6) return false;
    c->p++;
    return true;
}

KIRI_API bool kiri__cbor_read_container(kiri_cbor *c, int want, uint64_t *n, bool *indefinite) {
    kiri_cbor t = *c;
    int major;
    unsigned info;
    uint64_t arg;
    if (!kiri__cbor_head(&t, &major, &info, &arg) || major != want) return false;
    *indefinite = info == 31;
    *n = arg;
    *c = t;
    return true;
}

/* A map's head: *n pairs follow, or, if *indefinite, pairs until a break
 * (kiri_cbor_read_break). */
KIRI_API bool kiri_cbor_read_map(kiri_cbor *c, uint64_t *n, bool *indefinite) {
    return kiri__cbor_read_container(c, KIRI_CBOR_MAP, n, indefinite);
}

/* An array's head, as kiri_cbor_read_map. */
KIRI_API bool kiri_cbor_read_array(kiri_cbor *c, uint64_t *n, bool *indefinite) {
    return kiri__cbor_read_container(c, KIRI_CBOR_ARRAY, n, indefinite);
}

/* The break that ends an indefinite-length map or array. */
KIRI_API bool kiri_cbor_read_break(kiri_cbor *c) {
    if (c->p >= c->end || *c->p != 0xff) return false;
    c->p++;
    return true;
}

/* Skips one well-formed item of any type: nested arrays and maps (up to KIRI_CBOR_MAX_DEPTH
 * levels), tags, indefinite lengths. Iterative: no recursion, whatever the input. */
KIRI_API bool kiri_cbor_skip(kiri_cbor *c) {
    kiri_cbor t = *c;
    uint64_t left[KIRI_CBOR_MAX_DEPTH]; /* definite: items left; indefinite: items seen */
    uint8_t kind[KIRI_CBOR_MAX_DEPTH];  /* 0 definite, 1 indefinite array, 2 indefinite map */
    int depth = 0;
    bool tagged = false;
    for (;;) {
        int major;
        unsigned info;
        uint64_t arg;
        if (!kiri__cbor_head(&t, &major, &info, &arg)) return false;
        bool complete = true;
        switch (major) {
        case 0:
        case 1:
            if (info == 31) return false;
            break;
        case 2:
        case 3:
            if (info == 31) { /* definite chunks of the same type, then a break */
                for (;;) {
                    if (t.p >= t.end) return false;
                    if (*t.p == 0xff) {
                        t.p++;
                        break;
                    }
                    int m2;
                    unsigned i2;
                    uint64_t a2;
                    if (!kiri__cbor_head(&t, &m2, &i2, &a2) || m2 != major || i2 == 31) {
                        return false;
                    }
                    if (a2 > kiri_cbor_left(&t)) return false;
                    t.p += a2;
                }
            } else {
                if (arg > kiri_cbor_left(&t)) return false;
                t.p += arg;
            }
            break;
        case 4:
        case 5: {
            uint64_t items = arg;
            if (info != 31) {
                /* Every item takes at least a byte: a longer count cannot be well-formed. */
                if (major == 5) {
                    if (arg > kiri_cbor_left(&t) / 2) return false;
                    items = arg * 2;
                } else if (arg > kiri_cbor_left(&t)) {
                    return false;
                }
                if (items == 0) break;
            }
            if (depth == KIRI_CBOR_MAX_DEPTH) return false;
            kind[depth] = info == 31 ? (major == 4 ? 1 : 2) : 0;
            left[depth] = info == 31 ? 0 : items;
            depth++;
            complete = false;
            break;
        }
        case 6:
            if (info == 31) return false;
            complete = false; /* the tagged item follows */
            break;
        default: /* 7: simple values, floats, break */
            if (info == 31) {
                if (tagged || depth == 0 || kind[depth - 1] == 0 ||
                    (kind[depth - 1] == 2 && (left[depth - 1] & 1))) {
                    return false;
                }
                depth--; /* the indefinite container is complete */
            }
            break;
        }
        tagged = major == 6;
        if (!complete) continue;
        /* One item finished: count it in the containers it completes. */
        while (depth > 0) {
            if (kind[depth - 1] != 0) {
                left[depth - 1]++;
                break;
            }
            if (--left[depth - 1] > 0) break;
            depth--;
        }
        if (depth == 0) {
            *c = t;
            return true;
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * The sensor reading (docs/data-formats.md)
 * ---------------------------------------------------------------------------------------- */

/* One reading. Text fields point into the decoded payload (or the JSON scratch buffer). */
typedef struct kiri_reading {
    kiri_str sensor; /* the sensor's id */
    kiri_str kind;   /* "temperature", "humidity", ... */
    kiri_str unit;   /* "C", "%RH", "hPa", ... */
    double value;
    bool has_ts, has_uptime_ms, has_seq;
    uint64_t ts;        /* ms since the Unix epoch, if has_ts */
    uint64_t uptime_ms; /* ms since the node started, if has_uptime_ms */
    uint64_t seq;       /* the node's sequence number, if has_seq */
} kiri_reading;

/* What the reading decoders return. */
#define KIRI_READING_OK 0
#define KIRI_READING_MALFORMED 1       /* not well-formed, or a field of the wrong type */
#define KIRI_READING_MISSING_SENSOR 2  /* a required field is missing */
#define KIRI_READING_MISSING_KIND 3
#define KIRI_READING_MISSING_VALUE 4
#define KIRI_READING_MISSING_UNIT 5
#define KIRI_READING_NO_SPACE 6        /* (JSON) escaped text does not fit the scratch buffer */

KIRI_API const char *kiri_reading_error_str(int err) {
    switch (err) {
    case KIRI_READING_OK: return "ok";
    case KIRI_READING_MALFORMED: return "malformed";
    case KIRI_READING_MISSING_SENSOR: return "missing field `sensor`";
    case KIRI_READING_MISSING_KIND: return "missing field `kind`";
    case KIRI_READING_MISSING_VALUE: return "missing field `value`";
    case KIRI_READING_MISSING_UNIT: return "missing field `unit`";
    case KIRI_READING_NO_SPACE: return "text too long for the buffer";
    default: return "unknown error";
    }
}

KIRI_API int kiri__reading_missing(bool sensor, bool kind, bool value, bool unit) {
    if (!sensor) return KIRI_READING_MISSING_SENSOR;
    if (!kind) return KIRI_READING_MISSING_KIND;
    if (!value) return KIRI_READING_MISSING_VALUE;
    if (!unit) return KIRI_READING_MISSING_UNIT;
    return KIRI_READING_OK;
}

KIRI_API int kiri__reading_decode(const void *buf, size_t len, kiri_reading *r);

/* Decodes a CBOR reading: one map with text keys, nothing after it. Unknown keys are skipped
 * whatever their value; a repeated key keeps its last value. Accepts exactly what the Rust
 * SDK's Reading::decode accepts. Returns KIRI_READING_OK or an error, with *r zeroed. */
KIRI_API int kiri_reading_decode(const void *buf, size_t len, kiri_reading *r) {
    static kiri_reading zero; /* never written */
    int rc = kiri__reading_decode(buf, len, r);
    if (rc != KIRI_READING_OK) *r = zero;
    return rc;
}

KIRI_API int kiri__reading_decode(const void *buf, size_t len, kiri_reading *r) {
    kiri_cbor c = kiri_cbor_make(buf, len);
    kiri_reading x;
    uint64_t n;
    bool indefinite, sensor = false, kind = false, value = false, unit = false;
    kiri_memset(&x, 0, sizeof x);
    if (!kiri_cbor_read_map(&c, &n, &indefinite)) return KIRI_READING_MALFORMED;
    for (uint64_t i = 0;; i++) {
        if (indefinite ? kiri_cbor_read_break(&c) : i >= n) break;
        kiri_str key;
        bool ok;
        if (!kiri_cbor_read_text(&c, &key)) return KIRI_READING_MALFORMED;
        if (kiri_str_eq_cstr(key, "sensor")) {
            ok = sensor = kiri_cbor_read_text(&c, &x.sensor);
        } else if (kiri_str_eq_cstr(key, "kind")) {
            ok = kind = kiri_cbor_read_text(&c, &x.kind);
        } else if (kiri_str_eq_cstr(key, "unit")) {
            ok = unit = kiri_cbor_read_text(&c, &x.unit);
        } else if (kiri_str_eq_cstr(key, "value")) {
            ok = value = kiri_cbor_read_number(&c, &x.value);
        } else if (kiri_str_eq_cstr(key, "ts")) {
            ok = x.has_ts = kiri_cbor_read_uint(&c, &x.ts);
        } else if (kiri_str_eq_cstr(key, "uptime_ms")) {
            ok = x.has_uptime_ms = kiri_cbor_read_uint(&c, &x.uptime_ms);
        } else if (kiri_str_eq_cstr(key, "seq")) {
            ok = x.has_seq = kiri_cbor_read_uint(&c, &x.seq);
        } else {
            ok = kiri_cbor_skip(&c);
        }
        if (!ok) return KIRI_READING_MALFORMED;
    }
    if (c.p != c.end) return KIRI_READING_MALFORMED;
    int missing = kiri__reading_missing(sensor, kind, value, unit);
    if (missing != KIRI_READING_OK) return missing;
    *r = x;
    return KIRI_READING_OK;
}

/* ------------------------------------------------------------------------------------------
 * JSON (RFC 8259): validation and top-level lookup, bounds-checked, no allocation
 * ---------------------------------------------------------------------------------------- */

/* What the kiri_json_get_* lookups return. */
#define KIRI_JSON_OK 0
#define KIRI_JSON_NOT_FOUND 1  /* no such top-level key (or the document is not an object) */
#define KIRI_JSON_WRONG_TYPE 2 /* the key's value is not of the asked type */
#define KIRI_JSON_MALFORMED 3  /* the document is not one well-formed JSON value */
#define KIRI_JSON_NO_SPACE 4   /* (strings) the text does not fit the caller's buffer */

KIRI_API const char *kiri__json_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

KIRI_API int kiri__hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The code unit of the \uXXXX escape whose 'u' is at p, or -1. */
KIRI_API int32_t kiri__json_u4(const char *p, const char *end) {
    if (end - p < 5 || p[0] != 'u') return -1;
    int32_t v = 0;
    for (int i = 1; i <= 4; i++) {
        int h = kiri__hex(p[i]);
        if (h < 0) return -1;
        v = v << 4 | h;
    }
    return v;
}

/* Validates the string whose opening quote is at p: escapes (surrogates in pairs), no raw
 * control characters, UTF-8. Returns the position after its closing quote, or NULL. */
KIRI_API const char *kiri__json_string(const char *p, const char *end) {
    if (p >= end || *p != '"') return NULL;
    p++;
    while (p < end) {
        uint8_t c = (uint8_t)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            if (end - p < 2) return NULL;
            char e = p[1];
            if (e == 'u') {
                int32_t u = kiri__json_u4(p + 1, end);
                if (u < 0 || (u >= 0xdc00 && u <= 0xdfff)) return NULL;
                p += 6;
                if (u >= 0xd800 && u <= 0xdbff) { /* a high surrogate needs its low half */
                    if (end - p < 2 || p[0] != '\\') return NULL;
                    int32_t lo = kiri__json_u4(p + 1, end);
                    if (lo < 0xdc00 || lo > 0xdfff) return NULL;
                    p += 6;
                }
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                       e == 'r' || e == 't') {
                p += 2;
            } else {
                return NULL;
            }
        } else {
            size_t k = kiri__utf8_seq((const uint8_t *)p, (size_t)(end - p));
            if (k == 0) return NULL;
            p += k;
        }
    }
    return NULL;
}

/* Decodes one character of a validated string body at *pp into out (UTF-8, 1 to 4 bytes;
 * multi-byte characters written raw come one byte at a time). Returns the byte count. */
KIRI_API size_t kiri__json_char(const char **pp, char out[4]) {
    const char *p = *pp;
    if (*p != '\\') {
        out[0] = *p;
        *pp = p + 1;
        return 1;
    }
    char e = p[1];
    if (e != 'u') {
        *pp = p + 2;
        out[0] = e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' : e == 'r' ? '\r'
                 : e == 't' ? '\t' : e;
        return 1;
    }
    /* The bounds were checked by kiri__json_string. */
    uint32_t cp = (uint32_t)kiri__json_u4(p + 1, p + 6);
    p += 6;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        uint32_t lo = (uint32_t)kiri__json_u4(p + 1, p + 6);
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p += 6;
    }
    *pp = p;
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Whether the validated string body [p, end) decodes to key[0..n). */
KIRI_API bool kiri__json_string_eq(const char *p, const char *end, const char *key, size_t n) {
    size_t at = 0;
    while (p < end) {
        char ch[4];
        size_t k = kiri__json_char(&p, ch);
        if (n - at < k || kiri_memcmp(ch, key + at, k) != 0) return false;
        at += k;
    }
    return at == n;
}

/* Skips one value starting at p (after whitespace), validating it; iterative, nesting up to
 * max_depth (at most KIRI_JSON_MAX_DEPTH). Returns the position after it, or NULL. */
KIRI_API const char *kiri__json_value(const char *p, const char *end, int max_depth) {
    char stack[KIRI_JSON_MAX_DEPTH]; /* '{' or '[' per open container */
    int depth = 0;
    bool want_key = false; /* an object member comes next: its key and colon first */
    for (;;) {
        p = kiri__json_ws(p, end);
        if (want_key) {
            p = kiri__json_string(p, end);
            if (!p) return NULL;
            p = kiri__json_ws(p, end);
            if (p >= end || *p != ':') return NULL;
            p = kiri__json_ws(p + 1, end);
            want_key = false;
        }
        if (p >= end) return NULL;
        if (*p == '{' || *p == '[') {
            char open = *p;
            p = kiri__json_ws(p + 1, end);
            if (p < end && *p == (open == '{' ? '}' : ']')) {
                p++; /* empty: a complete value */
            } else {
                if (depth >= max_depth || depth >= KIRI_JSON_MAX_DEPTH) return NULL;
                stack[depth++] = open;
                want_key = open == '{';
                continue;
            }
        } else if (*p == '"') {
            p = kiri__json_string(p, end);
        } else if (*p == 't') {
            p = end - p >= 4 && kiri_memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
        } else if (*p == 'f') {
            p = end - p >= 5 && kiri_memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
        } else if (*p == 'n') {
            p = end - p >= 4 && kiri_memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
        } else {
            double ignored;
            p = kiri__scan_number(p, end, true, &ignored, NULL, NULL);
        }
        if (!p) return NULL;
        /* A value is complete: close the containers it completes, or go on to the next
         * member or element. */
        for (;;) {
            if (depth == 0) return p;
            p = kiri__json_ws(p, end);
            if (p >= end) return NULL;
            if (*p == ',') {
                p++;
                want_key = stack[depth - 1] == '{';
                break;
            }
            if (*p != (stack[depth - 1] == '{' ? '}' : ']')) return NULL;
            p++;
            depth--;
        }
    }
}

/* Whether json[0..len) is one well-formed JSON value (whitespace around it allowed). */
KIRI_API bool kiri_json_valid(const void *json, size_t len) {
    const char *p = (const char *)json, *end = p + len;
    p = kiri__json_value(p, end, KIRI_JSON_MAX_DEPTH);
    return p && kiri__json_ws(p, end) == end;
}

/* Walks the members of a JSON object, validating as it goes:
 *
 *   kiri_json_members it;
 *   kiri_str key, value;
 *   int rc;
 *   if (!kiri_json_members_begin(&it, json, len)) ...          (not an object)
 *   while ((rc = kiri_json_members_next(&it, &key, &value)) == 1) {
 *       if (kiri_json_key_eq(key, "temperature")) ...           (value: its raw text)
 *   }
 *   if (rc < 0) ...                                               (malformed)
 */
typedef struct kiri_json_members {
    const char *p;
    const char *end;
    int state; /* 0 before the first member, 1 after a member, 2 done */
} kiri_json_members;

/* Starts at the object in json[0..len): false if the document does not start with '{'. */
KIRI_API bool kiri_json_members_begin(kiri_json_members *it, const void *json, size_t len) {
    const char *p = (const char *)json, *end = p + len;
    p = kiri__json_ws(p, end);
    if (p >= end || *p != '{') return false;
    it->p = p + 1;
    it->end = end;
    it->state = 0;
    return true;
}

/* The next member: 1 with its key (raw, with quotes: compare with kiri_json_key_eq) and its
 * value (raw text: a number, a quoted string, an object...); 0 after the last, once the
 * object is closed with nothing but whitespace after it; -1 if the document is malformed. */
KIRI_API int kiri_json_members_next(kiri_json_members *it, kiri_str *key, kiri_str *value) {
    const char *p = kiri__json_ws(it->p, it->end), *end = it->end;
    if (it->state == 2) return 0;
    if (it->state == 1 || (p < end && *p == '}')) {
        if (p < end && *p == '}') {
            it->state = 2;
            it->p = p + 1;
            return kiri__json_ws(p + 1, end) == end ? 0 : -1;
        }
        if (p >= end || *p != ',') return -1;
        p = kiri__json_ws(p + 1, end);
    }
    const char *ks = p;
    p = kiri__json_string(p, end);
    if (!p) return -1;
    key->ptr = ks;
    key->len = (size_t)(p - ks);
    p = kiri__json_ws(p, end);
    if (p >= end || *p != ':') return -1;
    const char *vs = kiri__json_ws(p + 1, end);
    p = kiri__json_value(vs, end, KIRI_JSON_MAX_DEPTH - 1); /* inside the object */
    if (!p) return -1;
    value->ptr = vs;
    value->len = (size_t)(p - vs);
    it->p = p;
    it->state = 1;
    return 1;
}

/* Whether a raw key from kiri_json_members_next (quoted, maybe with escapes) names `name`. */
KIRI_API bool kiri_json_key_eq(kiri_str key, const char *name) {
    return key.len >= 2 &&
           kiri__json_string_eq(key.ptr + 1, key.ptr + key.len - 1, name, kiri_strlen(name));
}

/* The raw text of the value of `key` (a NUL-terminated, unescaped name) in the top-level
 * object of json[0..len): `{"a":{"b":1}}` gives `{"b":1}` for "a", to look into with the
 * same functions. The whole document is validated; a repeated key gives its last value. */
KIRI_API int kiri_json_get_raw(const void *json, size_t len, const char *key, kiri_str *value) {
    kiri_json_members it;
    kiri_str k, v;
    bool found = false;
    int rc;
    if (!kiri_json_members_begin(&it, json, len)) {
        return kiri_json_valid(json, len) ? KIRI_JSON_NOT_FOUND : KIRI_JSON_MALFORMED;
    }
    while ((rc = kiri_json_members_next(&it, &k, &v)) == 1) {
        if (kiri_json_key_eq(k, key)) {
            found = true;
            *value = v;
        }
    }
    if (rc < 0) return KIRI_JSON_MALFORMED;
    return found ? KIRI_JSON_OK : KIRI_JSON_NOT_FOUND;
}

/* A raw value (from kiri_json_get_raw or kiri_json_members_next) as a number. */
KIRI_API int kiri_json_number(kiri_str raw, double *out) {
    double v;
    if (kiri__scan_number(raw.ptr, raw.ptr + raw.len, true, &v, NULL, NULL) !=
        raw.ptr + raw.len) {
        return KIRI_JSON_WRONG_TYPE;
    }
    *out = v;
    return KIRI_JSON_OK;
}

/* A raw value as an unsigned integer written without sign, fraction or exponent that fits
 * in 64 bits (as CBOR would carry it: a timestamp, a sequence number). */
KIRI_API int kiri_json_u64(kiri_str raw, uint64_t *out) {
    double v;
    bool is_uint = false;
    uint64_t u = 0;
    if (kiri__scan_number(raw.ptr, raw.ptr + raw.len, true, &v, &is_uint, &u) !=
            raw.ptr + raw.len ||
        !is_uint) {
        return KIRI_JSON_WRONG_TYPE;
    }
    *out = u;
    return KIRI_JSON_OK;
}

/* A raw value as a boolean. */
KIRI_API int kiri_json_bool(kiri_str raw, bool *out) {
    if (kiri_str_eq_cstr(raw, "true")) {
        *out = true;
    } else if (kiri_str_eq_cstr(raw, "false")) {
        *out = false;
    } else {
        return KIRI_JSON_WRONG_TYPE;
    }
    return KIRI_JSON_OK;
}

/* Unescapes a raw string value (with its quotes) into out[0..cap): *out_len is its length in
 * bytes; a NUL is written after it when there is room. */
KIRI_API int kiri_json_unescape(kiri_str raw, char *out, size_t cap, size_t *out_len) {
    if (raw.len < 2 || raw.ptr[0] != '"') return KIRI_JSON_WRONG_TYPE;
    const char *p = raw.ptr + 1, *end = raw.ptr + raw.len - 1;
    size_t n = 0;
    while (p < end) {
        char ch[4];
        size_t k = kiri__json_char(&p, ch);
        if (cap - n < k) return KIRI_JSON_NO_SPACE;
        kiri_memcpy(out + n, ch, k);
        n += k;
    }
    if (n < cap) out[n] = '\0';
    *out_len = n;
    return KIRI_JSON_OK;
}

/* The number value of `key`: {"temperature":21.5} gives 21.5 for "temperature". */
KIRI_API int kiri_json_get_number(const void *json, size_t len, const char *key, double *out) {
    kiri_str raw;
    int rc = kiri_json_get_raw(json, len, key, &raw);
    return rc == KIRI_JSON_OK ? kiri_json_number(raw, out) : rc;
}

/* The value of `key` as kiri_json_u64 reads it. */
KIRI_API int kiri_json_get_u64(const void *json, size_t len, const char *key, uint64_t *out) {
    kiri_str raw;
    int rc = kiri_json_get_raw(json, len, key, &raw);
    return rc == KIRI_JSON_OK ? kiri_json_u64(raw, out) : rc;
}

/* The boolean value of `key`. */
KIRI_API int kiri_json_get_bool(const void *json, size_t len, const char *key, bool *out) {
    kiri_str raw;
    int rc = kiri_json_get_raw(json, len, key, &raw);
    return rc == KIRI_JSON_OK ? kiri_json_bool(raw, out) : rc;
}

/* The string value of `key`, unescaped into out[0..cap) (NUL-terminated when there is
 * room; *out_len is the length). */
KIRI_API int kiri_json_get_string(const void *json, size_t len, const char *key, char *out,
                                  size_t cap, size_t *out_len) {
    kiri_str raw;
    int rc = kiri_json_get_raw(json, len, key, &raw);
    return rc == KIRI_JSON_OK ? kiri_json_unescape(raw, out, cap, out_len) : rc;
}

/* A text field of a JSON reading: a slice of the payload when it has no escapes, else
 * unescaped into scratch (advancing *used). */
KIRI_API int kiri__json_text_field(kiri_str raw, kiri_str *out, char *scratch, size_t cap,
                                   size_t *used) {
    if (raw.ptr[0] != '"') return KIRI_READING_MALFORMED;
    bool escaped = false;
    for (size_t i = 0; i < raw.len; i++) escaped |= raw.ptr[i] == '\\';
    if (!escaped) {
        out->ptr = raw.ptr + 1;
        out->len = raw.len - 2;
        return KIRI_READING_OK;
    }
    size_t n;
    if (!scratch || kiri_json_unescape(raw, scratch + *used, cap - *used, &n) != KIRI_JSON_OK) {
        return KIRI_READING_NO_SPACE;
    }
    out->ptr = scratch + *used;
    out->len = n;
    *used += n;
    return KIRI_READING_OK;
}

KIRI_API int kiri__reading_decode_json(const void *json, size_t len, kiri_reading *r,
                                       char *scratch, size_t cap);

/* Decodes a reading sent as JSON, {"sensor":"s1","kind":"temperature","value":21.5,
 * "unit":"C","seq":7}, in one pass: the same fields and rules as the CBOR reading (what the
 * Rust SDK decodes after the gateway's `deliver = "cbor"` conversion): text fields strings,
 * `value` any number, `ts`/`uptime_ms`/`seq` unsigned integers, other keys anything. Strings
 * with escapes are unescaped into scratch[0..cap) (NULL and 0 if none are expected); others
 * point into the payload. Returns KIRI_READING_OK or an error, with *r zeroed. */
KIRI_API int kiri_reading_decode_json(const void *json, size_t len, kiri_reading *r,
                                      char *scratch, size_t cap) {
    static kiri_reading zero; /* never written */
    int rc = kiri__reading_decode_json(json, len, r, scratch, cap);
    if (rc != KIRI_READING_OK) *r = zero;
    return rc;
}

KIRI_API int kiri__reading_decode_json(const void *json, size_t len, kiri_reading *r,
                                       char *scratch, size_t cap) {
    kiri_reading x;
    kiri_json_members it;
    kiri_str key, v;
    size_t used = 0;
    bool sensor = false, kind = false, unit = false, value = false, no_space = false;
    int rc, err = KIRI_READING_OK;
    kiri_memset(&x, 0, sizeof x);
    if (!kiri_json_members_begin(&it, json, len)) return KIRI_READING_MALFORMED;
    while ((rc = kiri_json_members_next(&it, &key, &v)) == 1) {
        int e = KIRI_READING_OK;
        if (kiri_json_key_eq(key, "sensor")) {
            e = kiri__json_text_field(v, &x.sensor, scratch, cap, &used);
            sensor = true;
        } else if (kiri_json_key_eq(key, "kind")) {
            e = kiri__json_text_field(v, &x.kind, scratch, cap, &used);
            kind = true;
        } else if (kiri_json_key_eq(key, "unit")) {
            e = kiri__json_text_field(v, &x.unit, scratch, cap, &used);
            unit = true;
        } else if (kiri_json_key_eq(key, "value")) {
            e = kiri_json_number(v, &x.value) == KIRI_JSON_OK ? 0 : KIRI_READING_MALFORMED;
            value = true;
        } else if (kiri_json_key_eq(key, "ts")) {
            e = kiri_json_u64(v, &x.ts) == KIRI_JSON_OK ? 0 : KIRI_READING_MALFORMED;
            x.has_ts = true;
        } else if (kiri_json_key_eq(key, "uptime_ms")) {
            e = kiri_json_u64(v, &x.uptime_ms) == KIRI_JSON_OK ? 0 : KIRI_READING_MALFORMED;
            x.has_uptime_ms = true;
        } else if (kiri_json_key_eq(key, "seq")) {
            e = kiri_json_u64(v, &x.seq) == KIRI_JSON_OK ? 0 : KIRI_READING_MALFORMED;
            x.has_seq = true;
        }
        if (e == KIRI_READING_MALFORMED) err = e;
        if (e == KIRI_READING_NO_SPACE) no_space = true;
    }
    /* Malformed anywhere (the document or a field's type) before a lack of space. */
    if (rc < 0 || err != KIRI_READING_OK) return KIRI_READING_MALFORMED;
    if (no_space) return KIRI_READING_NO_SPACE;
    rc = kiri__reading_missing(sensor, kind, value, unit);
    if (rc != KIRI_READING_OK) return rc;
    *r = x;
    return KIRI_READING_OK;
}

/* ------------------------------------------------------------------------------------------
 * CBOR writer
 * ---------------------------------------------------------------------------------------- */

/* Writes into buf[0..cap); once an item does not fit, `overflow` is set and nothing more is
 * written (that item neither). */
typedef struct kiri_cbor_writer {
    uint8_t *buf;
    size_t cap;
    size_t len;
    bool overflow;
} kiri_cbor_writer;

KIRI_API kiri_cbor_writer kiri_cbor_writer_make(void *buf, size_t cap) {
    kiri_cbor_writer w;
    w.buf = (uint8_t *)buf;
    w.cap = cap;
    w.len = 0;
    w.overflow = false;
    return w;
}

KIRI_API void kiri__cbor_put(kiri_cbor_writer *w, const void *p, size_t n) {
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = true;
        return;
    }
    kiri_memcpy(w->buf + w->len, p, n);
    w->len += n;
}

/* An item: its head in the shortest form (as every CBOR encoder writes integers and lengths),
 * then `n` bytes of content; all of it or, if it does not fit, nothing. */
KIRI_API void kiri__cbor_put_item(kiri_cbor_writer *w, int major, uint64_t arg, const void *p,
                                  size_t n) {
    uint8_t b[9];
    size_t h;
    uint8_t m = (uint8_t)(major << 5);
    if (arg < 24) {
        b[0] = (uint8_t)(m | arg);
        h = 1;
    } else if (arg <= 0xff) {
        b[0] = m | 24;
        h = 2;
    } else if (arg <= 0xffff) {
        b[0] = m | 25;
        h = 3;
    } else if (arg <= 0xffffffffu) {
        b[0] = m | 26;
        h = 5;
    } else {
        b[0] = m | 27;
        h = 9;
    }
    for (size_t i = 1; i < h; i++) b[i] = (uint8_t)(arg >> (8 * (h - 1 - i)));
    if (w->overflow || w->cap - w->len < h || w->cap - w->len - h < n) {
        w->overflow = true;
        return;
    }
    kiri__cbor_put(w, b, h);
    if (n) kiri__cbor_put(w, p, n);
}

KIRI_API void kiri__cbor_put_head(kiri_cbor_writer *w, int major, uint64_t arg) {
    kiri__cbor_put_item(w, major, arg, NULL, 0);
}

KIRI_API void kiri_cbor_put_uint(kiri_cbor_writer *w, uint64_t v) {
    kiri__cbor_put_head(w, KIRI_CBOR_UINT, v);
}

KIRI_API void kiri_cbor_put_int(kiri_cbor_writer *w, int64_t v) {
    if (v >= 0) {
        kiri__cbor_put_head(w, KIRI_CBOR_UINT, (uint64_t)v);
    } else {
        kiri__cbor_put_head(w, KIRI_CBOR_NEGINT, ~(uint64_t)v); /* -1 - v */
    }
}

KIRI_API void kiri_cbor_put_text(kiri_cbor_writer *w, const char *p, size_t n) {
    kiri__cbor_put_item(w, KIRI_CBOR_TEXT, n, p, n);
}

KIRI_API void kiri_cbor_put_str(kiri_cbor_writer *w, kiri_str s) {
    kiri_cbor_put_text(w, s.ptr, s.len);
}

KIRI_API void kiri_cbor_put_cstr(kiri_cbor_writer *w, const char *s) {
    kiri_cbor_put_text(w, s, kiri_strlen(s));
}

KIRI_API void kiri_cbor_put_bytes(kiri_cbor_writer *w, const void *p, size_t n) {
    kiri__cbor_put_item(w, KIRI_CBOR_BYTES, n, p, n);
}

/* The head of an array of n items (write the items next). */
KIRI_API void kiri_cbor_put_array(kiri_cbor_writer *w, uint64_t n) {
    kiri__cbor_put_head(w, KIRI_CBOR_ARRAY, n);
}

/* The head of a map of n pairs (write key, value, key, value... next). */
KIRI_API void kiri_cbor_put_map(kiri_cbor_writer *w, uint64_t n) {
    kiri__cbor_put_head(w, KIRI_CBOR_MAP, n);
}

/* A double, always as 64 bits (0xfb), as the Rust SDK writes a reading's value. */
KIRI_API void kiri_cbor_put_f64(kiri_cbor_writer *w, double v) {
    uint64_t bits = kiri__f64_bits(v);
    uint8_t b[9];
    b[0] = 0xfb;
    for (int i = 0; i < 8; i++) b[1 + i] = (uint8_t)(bits >> (56 - 8 * i));
    kiri__cbor_put(w, b, 9);
}

KIRI_API void kiri_cbor_put_bool(kiri_cbor_writer *w, bool v) {
    uint8_t b = v ? 0xf5 : 0xf4;
    kiri__cbor_put(w, &b, 1);
}

KIRI_API void kiri_cbor_put_null(kiri_cbor_writer *w) {
    uint8_t b = 0xf6;
    kiri__cbor_put(w, &b, 1);
}

/* An extra numeric field for kiri_reading_encode: {"limit", 30.0}. */
typedef struct kiri_field {
    const char *key;
    double value;
} kiri_field;

/* Encodes the reading plus extra numeric fields into buf[0..cap): the same bytes as the Rust
 * SDK's Reading::encode_with (sensor, kind, value, unit, then ts, uptime_ms and seq when
 * present, then the extras, floats as 64 bits). Returns the length, or 0 if it does not
 * fit. */
KIRI_API size_t kiri_reading_encode(const kiri_reading *r, const kiri_field *extra,
                                    size_t n_extra, void *buf, size_t cap) {
    kiri_cbor_writer w = kiri_cbor_writer_make(buf, cap);
    kiri_cbor_put_map(&w, 4 + (uint64_t)r->has_ts + r->has_uptime_ms + r->has_seq + n_extra);
    kiri_cbor_put_cstr(&w, "sensor");
    kiri_cbor_put_str(&w, r->sensor);
    kiri_cbor_put_cstr(&w, "kind");
    kiri_cbor_put_str(&w, r->kind);
    kiri_cbor_put_cstr(&w, "value");
    kiri_cbor_put_f64(&w, r->value);
    kiri_cbor_put_cstr(&w, "unit");
    kiri_cbor_put_str(&w, r->unit);
    if (r->has_ts) {
        kiri_cbor_put_cstr(&w, "ts");
        kiri_cbor_put_uint(&w, r->ts);
    }
    if (r->has_uptime_ms) {
        kiri_cbor_put_cstr(&w, "uptime_ms");
        kiri_cbor_put_uint(&w, r->uptime_ms);
    }
    if (r->has_seq) {
        kiri_cbor_put_cstr(&w, "seq");
        kiri_cbor_put_uint(&w, r->seq);
    }
    for (size_t i = 0; i < n_extra; i++) {
        kiri_cbor_put_cstr(&w, extra[i].key);
        kiri_cbor_put_f64(&w, extra[i].value);
    }
    return w.overflow ? 0 : w.len;
}

#ifdef __cplusplus
}
#endif

#endif /* KIRI_H */
