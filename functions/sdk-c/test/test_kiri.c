/*
 * Native unit tests of kiri.h's helpers (`make test-c-sdk` runs them, also under ASan and
 * UBSan). Every input a decoder sees here is first copied to a heap block of exactly its
 * length, so a read one byte past the end is an AddressSanitizer error.
 */
#include "mock_host.h"
#include "vectors.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (cond) {                                                                            \
            passed++;                                                                          \
        } else {                                                                               \
            failed++;                                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);           \
        }                                                                                      \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                     \
    do {                                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                                    \
        if (a_ == b_) {                                                                        \
            passed++;                                                                          \
        } else {                                                                               \
            failed++;                                                                          \
            fprintf(stderr, "%s:%d: %s == %s: %lld != %lld\n", __FILE__, __LINE__, #a, #b, a_, \
                    b_);                                                                       \
        }                                                                                      \
    } while (0)

/* Same bits (so NaN == NaN and -0.0 != 0.0). */
#define CHECK_F64(a, b)                                                                        \
    do {                                                                                       \
        double a_ = (a), b_ = (b);                                                             \
        if (memcmp(&a_, &b_, sizeof a_) == 0) {                                                \
            passed++;                                                                          \
        } else {                                                                               \
            failed++;                                                                          \
            fprintf(stderr, "%s:%d: %s == %s: %.17g != %.17g\n", __FILE__, __LINE__, #a, #b,   \
                    a_, b_);                                                                   \
        }                                                                                      \
    } while (0)

#define CHECK_STR(s, cstr)                                                                     \
    do {                                                                                       \
        kiri_str s_ = (s);                                                                     \
        if (kiri_str_eq_cstr(s_, cstr)) {                                                      \
            passed++;                                                                          \
        } else {                                                                               \
            failed++;                                                                          \
            fprintf(stderr, "%s:%d: %s == \"%s\": got \"%.*s\"\n", __FILE__, __LINE__, #s,     \
                    cstr, (int)s_.len, s_.ptr);                                                \
        }                                                                                      \
    } while (0)

/* A heap copy of exactly n bytes (one byte allocated for n = 0, never read). */
static uint8_t *dup_exact(const void *p, size_t n) {
    uint8_t *d = malloc(n ? n : 1);
    if (!d) abort();
    if (n) memcpy(d, p, n);
    return d;
}

static int decode(const void *p, size_t n, kiri_reading *r) {
    uint8_t *d = dup_exact(p, n);
    kiri_reading tmp;
    int rc = kiri_reading_decode(d, n, &tmp);
    /* Text fields point into the payload: compare them before freeing it. */
    if (rc == KIRI_READING_OK && r) *r = tmp;
    free(d);
    return rc;
}

static int decode_json(const char *json, size_t n, kiri_reading *r, char *scratch, size_t cap) {
    uint8_t *d = dup_exact(json, n);
    int rc = kiri_reading_decode_json(d, n, r, scratch, cap);
    free(d);
    return rc;
}

/* ---- Building test readings: the four required fields around a value's raw bytes, with
 * extra raw pairs appended (keys and values already encoded). */
static size_t reading_with(uint8_t *out, size_t cap, const uint8_t *value, size_t vn,
                           const uint8_t *extra, size_t en, unsigned extra_pairs) {
    kiri_cbor_writer w = kiri_cbor_writer_make(out, cap);
    kiri_cbor_put_map(&w, 4 + extra_pairs);
    kiri_cbor_put_cstr(&w, "sensor");
    kiri_cbor_put_cstr(&w, "a");
    kiri_cbor_put_cstr(&w, "kind");
    kiri_cbor_put_cstr(&w, "k");
    kiri_cbor_put_cstr(&w, "value");
    if (w.cap - w.len < vn + en) abort();
    memcpy(w.buf + w.len, value, vn);
    w.len += vn;
    kiri_cbor_put_cstr(&w, "unit");
    kiri_cbor_put_cstr(&w, "C");
    if (en) memcpy(w.buf + w.len, extra, en);
    w.len += en;
    if (w.overflow) abort();
    return w.len;
}

/* Decodes a reading whose value is `bytes` and returns the error, with the value in *v. */
static int value_of(const uint8_t *bytes, size_t n, double *v) {
    uint8_t buf[256];
    size_t len = reading_with(buf, sizeof buf, bytes, n, NULL, 0, 0);
    kiri_reading r;
    int rc = decode(buf, len, &r);
    if (rc == KIRI_READING_OK) *v = r.value;
    return rc;
}

#define VALUE(...)                                                                             \
    ({                                                                                         \
        static const uint8_t b_[] = {__VA_ARGS__};                                             \
        double v_ = -12345.0;                                                                  \
        int rc_ = value_of(b_, sizeof b_, &v_);                                                \
        CHECK_EQ_INT(rc_, KIRI_READING_OK);                                                    \
        v_;                                                                                    \
    })

#define VALUE_REJECTED(...)                                                                    \
    do {                                                                                       \
        static const uint8_t b_[] = {__VA_ARGS__};                                             \
        double v_;                                                                             \
        CHECK_EQ_INT(value_of(b_, sizeof b_, &v_), KIRI_READING_MALFORMED);                    \
    } while (0)

/* Decodes a reading with extra raw pairs and returns the error. */
static int with_extra(const uint8_t *extra, size_t en, unsigned pairs) {
    uint8_t buf[1024];
    static const uint8_t one[] = {0x01};
    size_t len = reading_with(buf, sizeof buf, one, 1, extra, en, pairs);
    kiri_reading r;
    int rc = decode(buf, len, &r);
    if (rc == KIRI_READING_OK && r.value != 1.0) return -1;
    return rc;
}

#define EXTRA_OK(...)                                                                          \
    do {                                                                                       \
        static const uint8_t b_[] = {__VA_ARGS__};                                             \
        CHECK_EQ_INT(with_extra(b_, sizeof b_, 1), KIRI_READING_OK);                           \
    } while (0)

#define EXTRA_REJECTED(...)                                                                    \
    do {                                                                                       \
        static const uint8_t b_[] = {__VA_ARGS__};                                             \
        CHECK_EQ_INT(with_extra(b_, sizeof b_, 1), KIRI_READING_MALFORMED);                    \
    } while (0)

/* ------------------------------------------------------------------------------------------ */

static void test_rust_vectors_decode(void) {
    kiri_reading r;
    uint8_t *d = dup_exact(RUST_S1, sizeof RUST_S1);
    CHECK_EQ_INT(kiri_reading_decode(d, sizeof RUST_S1, &r), KIRI_READING_OK);
    CHECK_STR(r.sensor, "s1");
    CHECK_STR(r.kind, "temperature");
    CHECK_STR(r.unit, "C");
    CHECK_F64(r.value, 21.5);
    CHECK(r.has_ts && r.ts == 1796428203883u);
    CHECK(!r.has_uptime_ms);
    CHECK(r.has_seq && r.seq == 7);
    free(d);

    d = dup_exact(RUST_GREENHOUSE, sizeof RUST_GREENHOUSE);
    CHECK_EQ_INT(kiri_reading_decode(d, sizeof RUST_GREENHOUSE, &r), KIRI_READING_OK);
    CHECK_STR(r.sensor, "greenhouse-3");
    CHECK_STR(r.kind, "humidity");
    CHECK_STR(r.unit, "%RH");
    CHECK_F64(r.value, -3.25);
    CHECK(r.has_ts && r.ts == 1796428203887u && !r.has_seq && !r.has_uptime_ms);
    free(d);

    d = dup_exact(RUST_SIM, sizeof RUST_SIM);
    CHECK_EQ_INT(kiri_reading_decode(d, sizeof RUST_SIM, &r), KIRI_READING_OK);
    CHECK_STR(r.sensor, "sim");
    CHECK_F64(r.value, 20.78);
    CHECK(r.has_uptime_ms && r.uptime_ms == 0);
    CHECK(r.has_seq && r.seq == 1796428204902000u);
    free(d);

    d = dup_exact(RUST_INT_UNKNOWN, sizeof RUST_INT_UNKNOWN);
    CHECK_EQ_INT(kiri_reading_decode(d, sizeof RUST_INT_UNKNOWN, &r), KIRI_READING_OK);
    CHECK_STR(r.sensor, "a");
    CHECK_F64(r.value, -3.0);
    CHECK_STR(r.unit, "C");
    free(d);

    /* The alert: the reading plus "limit" (an f64 the decoder skips as an unknown key). */
    d = dup_exact(RUST_ALERT, sizeof RUST_ALERT);
    CHECK_EQ_INT(kiri_reading_decode(d, sizeof RUST_ALERT, &r), KIRI_READING_OK);
    CHECK_STR(r.sensor, "sim");
    CHECK_F64(r.value, 20.78);
    free(d);
}

/* Decoding a Rust-encoded reading and encoding it again gives the same bytes. */
static void test_encode_matches_rust(void) {
    const uint8_t *vectors[] = {RUST_S1, RUST_GREENHOUSE, RUST_SIM};
    size_t lens[] = {sizeof RUST_S1, sizeof RUST_GREENHOUSE, sizeof RUST_SIM};
    for (int i = 0; i < 3; i++) {
        kiri_reading r;
        uint8_t out[256];
        CHECK_EQ_INT(kiri_reading_decode(vectors[i], lens[i], &r), KIRI_READING_OK);
        size_t n = kiri_reading_encode(&r, NULL, 0, out, sizeof out);
        CHECK_EQ_INT(n, lens[i]);
        CHECK(n == lens[i] && memcmp(out, vectors[i], n) == 0);
        /* Every buffer too small by even a byte is refused, and nothing past it written. */
        for (size_t cap = 0; cap < n; cap++) {
            uint8_t *small = dup_exact(out, cap);
            CHECK_EQ_INT(kiri_reading_encode(&r, NULL, 0, small, cap), 0);
            free(small);
        }
        uint8_t *exact = dup_exact(out, n);
        CHECK_EQ_INT(kiri_reading_encode(&r, NULL, 0, exact, n), n);
        free(exact);
    }
    /* With the extra field: what Rust's threshold emitted, byte for byte. */
    kiri_reading r;
    uint8_t out[256];
    CHECK_EQ_INT(kiri_reading_decode(RUST_SIM, sizeof RUST_SIM, &r), KIRI_READING_OK);
    kiri_field limit[] = {{"limit", 15.0}};
    size_t n = kiri_reading_encode(&r, limit, 1, out, sizeof out);
    CHECK_EQ_INT(n, sizeof RUST_ALERT);
    CHECK(n == sizeof RUST_ALERT && memcmp(out, RUST_ALERT, n) == 0);
}

static void test_encode_round_trip(void) {
    kiri_reading r;
    memset(&r, 0, sizeof r);
    r.sensor = kiri_str_from("greenhouse-\xc3\xa9"); /* UTF-8 survives */
    r.kind = kiri_str_from("pressure");
    r.unit = kiri_str_from("hPa");
    r.value = -1013.25;
    r.has_ts = r.has_uptime_ms = r.has_seq = true;
    r.ts = 1700000000000u;
    r.uptime_ms = 23;
    r.seq = UINT64_MAX;
    kiri_field extra[] = {{"limit", 30.0}, {"delta", -0.5}};
    uint8_t buf[256];
    size_t n = kiri_reading_encode(&r, extra, 2, buf, sizeof buf);
    CHECK(n > 0);
    kiri_reading back;
    CHECK_EQ_INT(decode(buf, n, &back), KIRI_READING_OK);
    CHECK_EQ_INT(kiri_reading_decode(buf, n, &back), KIRI_READING_OK);
    CHECK_STR(back.sensor, "greenhouse-\xc3\xa9");
    CHECK_STR(back.kind, "pressure");
    CHECK_STR(back.unit, "hPa");
    CHECK_F64(back.value, -1013.25);
    CHECK(back.has_ts && back.ts == 1700000000000u);
    CHECK(back.has_uptime_ms && back.uptime_ms == 23);
    CHECK(back.has_seq && back.seq == UINT64_MAX);
    CHECK_EQ_INT(buf[0], 0xa9); /* a map of 4 + 3 + 2 pairs */
    /* The extras are there, in order, as 64-bit floats. */
    double limit = 0, delta = 0;
    kiri_cbor c = kiri_cbor_make(buf, n);
    uint64_t pairs;
    bool indefinite;
    CHECK(kiri_cbor_read_map(&c, &pairs, &indefinite) && pairs == 9 && !indefinite);
    for (uint64_t i = 0; i < pairs; i++) {
        kiri_str key = {NULL, 0};
        CHECK(kiri_cbor_read_text(&c, &key));
        if (kiri_str_eq_cstr(key, "limit")) {
            CHECK_EQ_INT(*c.p, 0xfb);
            CHECK(kiri_cbor_read_number(&c, &limit));
        } else if (kiri_str_eq_cstr(key, "delta")) {
            CHECK(kiri_cbor_read_number(&c, &delta));
        } else {
            CHECK(kiri_cbor_skip(&c));
        }
    }
    CHECK(c.p == c.end);
    CHECK_F64(limit, 30.0);
    CHECK_F64(delta, -0.5);
}

static void test_cbor_writer(void) {
    struct {
        uint64_t v;
        uint8_t bytes[9];
        size_t n;
    } uints[] = {
        {0, {0x00}, 1},
        {23, {0x17}, 1},
        {24, {0x18, 0x18}, 2},
        {255, {0x18, 0xff}, 2},
        {256, {0x19, 0x01, 0x00}, 3},
        {65535, {0x19, 0xff, 0xff}, 3},
        {65536, {0x1a, 0x00, 0x01, 0x00, 0x00}, 5},
        {0xffffffffu, {0x1a, 0xff, 0xff, 0xff, 0xff}, 5},
        {0x100000000u, {0x1b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00}, 9},
        {UINT64_MAX, {0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
    };
    for (size_t i = 0; i < sizeof uints / sizeof uints[0]; i++) {
        uint8_t out[9];
        kiri_cbor_writer w = kiri_cbor_writer_make(out, sizeof out);
        kiri_cbor_put_uint(&w, uints[i].v);
        CHECK(!w.overflow && w.len == uints[i].n && memcmp(out, uints[i].bytes, w.len) == 0);
        kiri_cbor c = kiri_cbor_make(out, w.len);
        uint64_t back;
        CHECK(kiri_cbor_read_uint(&c, &back) && back == uints[i].v && c.p == c.end);
    }
    struct {
        int64_t v;
        uint8_t bytes[9];
        size_t n;
    } ints[] = {
        {-1, {0x20}, 1},
        {-24, {0x37}, 1},
        {-25, {0x38, 0x18}, 2},
        {-100, {0x38, 0x63}, 2},
        {-1000, {0x39, 0x03, 0xe7}, 3},
        {INT64_MIN, {0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
        {INT64_MAX, {0x1b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        uint8_t out[9];
        kiri_cbor_writer w = kiri_cbor_writer_make(out, sizeof out);
        kiri_cbor_put_int(&w, ints[i].v);
        CHECK(!w.overflow && w.len == ints[i].n && memcmp(out, ints[i].bytes, w.len) == 0);
        kiri_cbor c = kiri_cbor_make(out, w.len);
        int64_t back;
        CHECK(kiri_cbor_read_int(&c, &back) && back == ints[i].v && c.p == c.end);
    }
    /* Every other item type, and a round trip through the reader. */
    uint8_t out[64];
    kiri_cbor_writer w = kiri_cbor_writer_make(out, sizeof out);
    kiri_cbor_put_array(&w, 6);
    kiri_cbor_put_cstr(&w, "hi");
    kiri_cbor_put_bytes(&w, "\x00\x01", 2);
    kiri_cbor_put_f64(&w, 21.5);
    kiri_cbor_put_bool(&w, true);
    kiri_cbor_put_bool(&w, false);
    kiri_cbor_put_null(&w);
    static const uint8_t want[] = {0x86, 0x62, 'h',  'i',  0x42, 0x00, 0x01, 0xfb, 0x40,
                                   0x35, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf5, 0xf4, 0xf6};
    CHECK(!w.overflow && w.len == sizeof want && memcmp(out, want, sizeof want) == 0);
    kiri_cbor c = kiri_cbor_make(out, w.len);
    uint64_t n;
    bool indef, b1, b2;
    kiri_str s;
    const uint8_t *bytes;
    size_t bn;
    double f;
    CHECK(kiri_cbor_read_array(&c, &n, &indef) && n == 6 && !indef);
    CHECK(kiri_cbor_read_text(&c, &s));
    CHECK_STR(s, "hi");
    CHECK(kiri_cbor_read_bytes(&c, &bytes, &bn) && bn == 2 && bytes[1] == 1);
    CHECK(kiri_cbor_read_number(&c, &f) && f == 21.5);
    CHECK(kiri_cbor_read_bool(&c, &b1) && b1);
    CHECK(kiri_cbor_read_bool(&c, &b2) && !b2);
    CHECK(kiri_cbor_read_null(&c));
    CHECK(c.p == c.end && kiri_cbor_peek(&c) == -1);
    /* Overflow: nothing more is written once an item does not fit. */
    uint8_t small[4] = {0xaa, 0xaa, 0xaa, 0xaa};
    w = kiri_cbor_writer_make(small, 3);
    kiri_cbor_put_uint(&w, 1);
    kiri_cbor_put_cstr(&w, "abc");
    kiri_cbor_put_uint(&w, 2);
    CHECK(w.overflow && w.len == 1 && small[1] == 0xaa && small[3] == 0xaa);
}

static void test_numbers(void) {
    /* float16: 1.0, -2.5, the largest, the smallest subnormal, the smallest normal, infinities,
     * NaN, negative zero, 1/3 rounded. */
    CHECK_F64(VALUE(0xf9, 0x3c, 0x00), 1.0);
    CHECK_F64(VALUE(0xf9, 0xc1, 0x00), -2.5);
    CHECK_F64(VALUE(0xf9, 0x7b, 0xff), 65504.0);
    CHECK_F64(VALUE(0xf9, 0x00, 0x01), 5.9604644775390625e-08);
    CHECK_F64(VALUE(0xf9, 0x04, 0x00), 6.103515625e-05);
    CHECK_F64(VALUE(0xf9, 0x7c, 0x00), INFINITY);
    CHECK_F64(VALUE(0xf9, 0xfc, 0x00), -INFINITY);
    CHECK(isnan(VALUE(0xf9, 0x7e, 0x00)));
    CHECK_F64(VALUE(0xf9, 0x80, 0x00), -0.0);
    CHECK_F64(VALUE(0xf9, 0x35, 0x55), 0.333251953125);
    CHECK_F64(VALUE(0xf9, 0x4d, 0x60), 21.5);
    /* Every half-precision value converts exactly (checked against the float path). */
    for (uint32_t h = 0; h < 0x10000; h++) {
        unsigned e = (h >> 10) & 0x1f, m = h & 0x3ff;
        double want = e == 0    ? ldexp(m, -24)
                      : e == 31 ? (m ? NAN : INFINITY)
                                : ldexp(m + 1024, (int)e - 25);
        if (h & 0x8000) want = -want;
        double got = kiri_f16_to_f64((uint16_t)h);
        if (isnan(want) ? !isnan(got) : memcmp(&got, &want, sizeof got) != 0) {
            CHECK_F64(got, want);
            break;
        }
    }
    /* float32 and float64. */
    CHECK_F64(VALUE(0xfa, 0x41, 0xac, 0x00, 0x00), 21.5);
    CHECK_F64(VALUE(0xfa, 0x3d, 0xcc, 0xcc, 0xcd), (double)0.1f);
    CHECK_F64(VALUE(0xfa, 0xff, 0x80, 0x00, 0x00), -INFINITY);
    CHECK_F64(VALUE(0xfb, 0x40, 0x35, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00), 21.5);
    CHECK_F64(VALUE(0xfb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a), 0.1);
    /* Unsigned and negative integers of every width, the non-shortest forms too. */
    CHECK_F64(VALUE(0x00), 0.0);
    CHECK_F64(VALUE(0x17), 23.0);
    CHECK_F64(VALUE(0x18, 0x18), 24.0);
    CHECK_F64(VALUE(0x18, 0x05), 5.0);
    CHECK_F64(VALUE(0x19, 0x01, 0x00), 256.0);
    CHECK_F64(VALUE(0x1a, 0x00, 0x01, 0x86, 0xa0), 100000.0);
    CHECK_F64(VALUE(0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 18446744073709551615.0);
    CHECK_F64(VALUE(0x20), -1.0);
    CHECK_F64(VALUE(0x22), -3.0);
    CHECK_F64(VALUE(0x37), -24.0);
    CHECK_F64(VALUE(0x38, 0x63), -100.0);
    CHECK_F64(VALUE(0x39, 0x03, 0xe7), -1000.0);
    CHECK_F64(VALUE(0x3a, 0x00, 0x01, 0x86, 0x9f), -100000.0);
    CHECK_F64(VALUE(0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), -9223372036854775808.0);
    /* Below int64_t's range (as the Rust decoder), and what is not a number. */
    VALUE_REJECTED(0x3b, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00);
    VALUE_REJECTED(0x64, '2', '1', '.', '5');            /* text */
    VALUE_REJECTED(0xc1, 0x1a, 0x65, 0x53, 0xf1, 0x00); /* a tagged number */
    VALUE_REJECTED(0xf5);                               /* true */
    VALUE_REJECTED(0xf6);                               /* null */
    VALUE_REJECTED(0xf7);                               /* undefined */
    VALUE_REJECTED(0x81, 0x01);                         /* [1] */
    VALUE_REJECTED(0x1c);                               /* reserved additional information */
    VALUE_REJECTED(0x1f);                               /* an indefinite integer */
    VALUE_REJECTED(0xfb, 0x40, 0x35);                   /* a cut float: fails on the next key */
}

static void test_fields(void) {
    kiri_reading r;
    /* Required fields, reported in order. */
    static const uint8_t empty[] = {0xa0};
    CHECK_EQ_INT(decode(empty, 1, &r), KIRI_READING_MISSING_SENSOR);
    uint8_t buf[256];
    kiri_cbor_writer w = kiri_cbor_writer_make(buf, sizeof buf);
    kiri_cbor_put_map(&w, 3);
    kiri_cbor_put_cstr(&w, "unit");
    kiri_cbor_put_cstr(&w, "C");
    kiri_cbor_put_cstr(&w, "sensor");
    kiri_cbor_put_cstr(&w, "s");
    kiri_cbor_put_cstr(&w, "value");
    kiri_cbor_put_f64(&w, 1);
    CHECK_EQ_INT(decode(buf, w.len, &r), KIRI_READING_MISSING_KIND);
    w = kiri_cbor_writer_make(buf, sizeof buf);
    kiri_cbor_put_map(&w, 3);
    kiri_cbor_put_cstr(&w, "sensor");
    kiri_cbor_put_cstr(&w, "s");
    kiri_cbor_put_cstr(&w, "kind");
    kiri_cbor_put_cstr(&w, "k");
    kiri_cbor_put_cstr(&w, "unit");
    kiri_cbor_put_cstr(&w, "C");
    CHECK_EQ_INT(decode(buf, w.len, &r), KIRI_READING_MISSING_VALUE);
    w = kiri_cbor_writer_make(buf, sizeof buf);
    kiri_cbor_put_map(&w, 3);
    kiri_cbor_put_cstr(&w, "sensor");
    kiri_cbor_put_cstr(&w, "s");
    kiri_cbor_put_cstr(&w, "kind");
    kiri_cbor_put_cstr(&w, "k");
    kiri_cbor_put_cstr(&w, "value");
    kiri_cbor_put_int(&w, -7);
    CHECK_EQ_INT(decode(buf, w.len, &r), KIRI_READING_MISSING_UNIT);
    CHECK(strcmp(kiri_reading_error_str(KIRI_READING_MISSING_UNIT), "missing field `unit`") == 0);

    /* Not a map; something after the map; a key that is not text; text that is not UTF-8;
     * a text field of another type; optional fields that are not unsigned. */
    CHECK_EQ_INT(decode("hello", 5, &r), KIRI_READING_MALFORMED);
    CHECK_EQ_INT(decode("", 0, &r), KIRI_READING_MALFORMED);
    uint8_t trailing[sizeof RUST_S1 + 1];
    memcpy(trailing, RUST_S1, sizeof RUST_S1);
    trailing[sizeof RUST_S1] = 0x00;
    CHECK_EQ_INT(decode(trailing, sizeof trailing, &r), KIRI_READING_MALFORMED);
    static const uint8_t one = 0x01;
    static const uint8_t int_key[] = {0x01, 0x02};
    CHECK_EQ_INT(with_extra(int_key, 2, 1), KIRI_READING_MALFORMED);
    static const uint8_t bad_utf8_key[] = {0x62, 0xc3, 0x28, 0x01};
    CHECK_EQ_INT(with_extra(bad_utf8_key, 4, 1), KIRI_READING_MALFORMED);
    static const uint8_t bad_sensor[] = {0x66, 's', 'e', 'n', 's', 'o', 'r', 0x62, 0xed, 0xa0};
    CHECK_EQ_INT(with_extra(bad_sensor, sizeof bad_sensor, 1), KIRI_READING_MALFORMED);
    static const uint8_t bytes_unit[] = {0x64, 'u', 'n', 'i', 't', 0x41, 'C'};
    CHECK_EQ_INT(with_extra(bytes_unit, sizeof bytes_unit, 1), KIRI_READING_MALFORMED);
    static const uint8_t neg_ts[] = {0x62, 't', 's', 0x20};
    CHECK_EQ_INT(with_extra(neg_ts, sizeof neg_ts, 1), KIRI_READING_MALFORMED);
    static const uint8_t float_seq[] = {0x63, 's', 'e', 'q', 0xf9, 0x3c, 0x00};
    CHECK_EQ_INT(with_extra(float_seq, sizeof float_seq, 1), KIRI_READING_MALFORMED);
    static const uint8_t null_uptime[] = {0x69, 'u', 'p', 't', 'i', 'm', 'e', '_', 'm', 's', 0xf6};
    CHECK_EQ_INT(with_extra(null_uptime, sizeof null_uptime, 1), KIRI_READING_MALFORMED);
    /* A map declaring more pairs than it has. */
    uint8_t more[256];
    size_t n = reading_with(more, sizeof more, &one, 1, NULL, 0, 1);
    CHECK_EQ_INT(decode(more, n, &r), KIRI_READING_MALFORMED);

    /* A repeated key keeps its last value; the optional fields; an indefinite-length map. */
    static const uint8_t twice[] = {0x65, 'v', 'a', 'l', 'u', 'e', 0x18, 0x2a,
                                    0x62, 't',  's', 0x19, 0x01, 0x00};
    n = reading_with(buf, sizeof buf, &one, 1, twice, sizeof twice, 2);
    CHECK_EQ_INT(decode(buf, n, &r), KIRI_READING_OK);
    CHECK_F64(r.value, 42.0);
    CHECK(r.has_ts && r.ts == 256 && !r.has_seq);
    uint8_t indef[sizeof RUST_S1 + 1];
    memcpy(indef, RUST_S1, sizeof RUST_S1);
    indef[0] = 0xbf;
    indef[sizeof RUST_S1] = 0xff;
    CHECK_EQ_INT(decode(indef, sizeof indef, &r), KIRI_READING_OK);
    CHECK(r.has_seq && r.seq == 7 && r.value == 21.5);
    CHECK_EQ_INT(decode(indef, sizeof indef - 1, &r), KIRI_READING_MALFORMED); /* no break */
    static const uint8_t empty_indef[] = {0xbf, 0xff};
    CHECK_EQ_INT(decode(empty_indef, 2, &r), KIRI_READING_MISSING_SENSOR);
}

static void test_unknown_values_skipped(void) {
    /* "x": [1, 2] (the Rust vector's unknown key), maps in maps, tags, indefinite lengths,
     * byte strings, simple values and floats of each width. */
    EXTRA_OK(0x61, 'x', 0x82, 0x01, 0x02);
    EXTRA_OK(0x64, 'm', 'e', 't', 'a', /* {"a": {"b": [1, {"c": h'00'}]}, "t": 1(1700000000)} */
             0xa2, 0x61, 'a', 0xa1, 0x61, 'b', 0x82, 0x01, 0xa1, 0x61, 'c', 0x41, 0x00, 0x61,
             't', 0xc1, 0x1a, 0x65, 0x53, 0xf1, 0x00);
    EXTRA_OK(0x61, 'x', 0x9f, 0x01, 0x9f, 0xff, 0xbf, 0x61, 'k', 0x80, 0xff, 0xff); /* [_ 1, [_], {_ "k": []}] */
    EXTRA_OK(0x61, 'x', 0x7f, 0x61, 'a', 0x62, 'b', 'c', 0xff);   /* (_ "a", "bc") */
    EXTRA_OK(0x61, 'x', 0x5f, 0x41, 0x00, 0x40, 0xff);            /* (_ h'00', h'') */
    EXTRA_OK(0x61, 'x', 0xc0, 0xd8, 0x20, 0x63, 'u', 'r', 'i');   /* 0(32("uri")): nested tags */
    EXTRA_OK(0x61, 'x', 0xf7);                                    /* undefined */
    EXTRA_OK(0x61, 'x', 0xf8, 0x20);                              /* simple(32) */
    EXTRA_OK(0x61, 'x', 0xfa, 0x41, 0xac, 0x00, 0x00);
    EXTRA_OK(0x61, 'x', 0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0);
    EXTRA_OK(0x61, 'x', 0xa0);                                    /* {} */
    EXTRA_OK(0x61, 'x', 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff); /* -2^64 */
    EXTRA_OK(0x61, 'x', 0x62, 0xff, 0xfe); /* text the decoder does not read is not checked */

    /* Malformed unknown values. */
    EXTRA_REJECTED(0x61, 'x', 0x1c);                         /* reserved */
    EXTRA_REJECTED(0x61, 'x', 0xff);                         /* a break outside a container */
    EXTRA_REJECTED(0x61, 'x', 0x9f, 0xc1, 0xff);             /* a tag on a break */
    EXTRA_REJECTED(0x61, 'x', 0x7f, 0x41, 0x00, 0xff);       /* a byte chunk in text */
    EXTRA_REJECTED(0x61, 'x', 0x7f, 0x7f, 0xff, 0xff);       /* a nested indefinite chunk */
    EXTRA_REJECTED(0x61, 'x', 0xbf, 0x61, 'a', 0xff);        /* a key without its value */
    EXTRA_REJECTED(0x61, 'x', 0x82, 0x01);                   /* an array short of an item */
    EXTRA_REJECTED(0x61, 'x', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    EXTRA_REJECTED(0x61, 'x', 0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    EXTRA_REJECTED(0x61, 'x', 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    EXTRA_REJECTED(0x61, 'x', 0xdf, 0x01);                   /* an indefinite tag */
    EXTRA_REJECTED(0x61, 'x', 0xc1);                         /* a tag on nothing */

    /* Nesting: KIRI_CBOR_MAX_DEPTH levels are followed, one more is refused. */
    uint8_t deep[64];
    size_t n = 0;
    deep[n++] = 0x61;
    deep[n++] = 'x';
    for (int i = 0; i < KIRI_CBOR_MAX_DEPTH; i++) deep[n++] = 0x81;
    deep[n++] = 0x01;
    CHECK_EQ_INT(with_extra(deep, n, 1), KIRI_READING_OK);
    n = 0;
    deep[n++] = 0x61;
    deep[n++] = 'x';
    for (int i = 0; i < KIRI_CBOR_MAX_DEPTH + 1; i++) deep[n++] = 0x9f;
    deep[n++] = 0x01;
    CHECK_EQ_INT(with_extra(deep, n, 1), KIRI_READING_MALFORMED);
}

static void test_skip(void) {
    /* kiri_cbor_skip consumes exactly one item, and nothing on failure. */
    static const uint8_t items[] = {0x82, 0x01, 0xa1, 0x61, 'a', 0x9f, 0xff, 0x05};
    kiri_cbor c = kiri_cbor_make(items, sizeof items);
    CHECK(kiri_cbor_skip(&c) && kiri_cbor_left(&c) == 1 && *c.p == 0x05);
    static const uint8_t bad[] = {0x82, 0x01};
    c = kiri_cbor_make(bad, sizeof bad);
    CHECK(!kiri_cbor_skip(&c) && c.p == bad);
    static const uint8_t tagged[] = {0xc1, 0xc2, 0x41, 0x00};
    c = kiri_cbor_make(tagged, sizeof tagged);
    CHECK(kiri_cbor_skip(&c) && c.p == c.end);
    /* The Rust vectors are one item each. */
    c = kiri_cbor_make(RUST_SIM, sizeof RUST_SIM);
    CHECK(kiri_cbor_skip(&c) && c.p == c.end);
    /* A failed read leaves the position where it was. */
    c = kiri_cbor_make(RUST_S1, sizeof RUST_S1);
    uint64_t u;
    kiri_str s;
    double f;
    CHECK(!kiri_cbor_read_uint(&c, &u) && !kiri_cbor_read_text(&c, &s) &&
          !kiri_cbor_read_number(&c, &f) && c.p == RUST_S1);
    CHECK_EQ_INT(kiri_cbor_peek(&c), KIRI_CBOR_MAP);
}

/* Every strict prefix of a valid reading is refused, never read past its end. */
static void test_truncated(void) {
    const uint8_t *vectors[] = {RUST_S1, RUST_GREENHOUSE, RUST_SIM, RUST_INT_UNKNOWN};
    size_t lens[] = {sizeof RUST_S1, sizeof RUST_GREENHOUSE, sizeof RUST_SIM,
                     sizeof RUST_INT_UNKNOWN};
    for (int i = 0; i < 4; i++) {
        for (size_t n = 0; n < lens[i]; n++) {
            kiri_reading r;
            int rc = decode(vectors[i], n, &r);
            if (rc != KIRI_READING_MALFORMED) {
                fprintf(stderr, "vector %d cut at %zu: %d\n", i, n, rc);
                CHECK_EQ_INT(rc, KIRI_READING_MALFORMED);
            } else {
                passed++;
            }
        }
    }
    /* And a reading with every kind of unknown value, cut anywhere. */
    static const uint8_t rich[] = {0x64, 'm', 'e', 't', 'a', 0xa2, 0x61, 'a', 0x9f, 0x01,
                                   0x7f, 0x61, 'a', 0xff, 0xc1, 0xfa, 0, 0, 0, 0, 0xff,
                                   0x61, 'b', 0x5f, 0x41, 0x00, 0xff};
    uint8_t buf[256];
    static const uint8_t one = 0x01;
    size_t len = reading_with(buf, sizeof buf, &one, 1, rich, sizeof rich, 1);
    kiri_reading r;
    CHECK_EQ_INT(decode(buf, len, &r), KIRI_READING_OK);
    for (size_t n = 0; n < len; n++) CHECK_EQ_INT(decode(buf, n, &r), KIRI_READING_MALFORMED);
}

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint32_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* Random corruptions of valid readings: whatever the decoders answer, they answer without
 * reading outside the input (ASan) or undefined behaviour (UBSan), and a decoded reading's
 * text lies inside the input. */
static void test_mutations(void) {
    const uint8_t *vectors[] = {RUST_S1, RUST_GREENHOUSE, RUST_SIM, RUST_INT_UNKNOWN};
    size_t lens[] = {sizeof RUST_S1, sizeof RUST_GREENHOUSE, sizeof RUST_SIM,
                     sizeof RUST_INT_UNKNOWN};
    int ok = 0, bad_slices = 0;
    for (int iter = 0; iter < 20000; iter++) {
        int v = (int)(next_random() % 4);
        uint8_t buf[128];
        size_t n = lens[v];
        memcpy(buf, vectors[v], n);
        int edits = 1 + (int)(next_random() % 4);
        for (int e = 0; e < edits; e++) {
            uint32_t what = next_random() % 3, at = next_random() % (uint32_t)n;
            if (what == 0) buf[at] = (uint8_t)next_random();
            if (what == 1) buf[at] ^= (uint8_t)(1u << (next_random() % 8));
            if (what == 2) n = at; /* cut */
            if (n == 0) break;
        }
        uint8_t *d = dup_exact(buf, n);
        kiri_reading r;
        if (kiri_reading_decode(d, n, &r) == KIRI_READING_OK) {
            ok++;
            kiri_str fields[] = {r.sensor, r.kind, r.unit};
            for (int f = 0; f < 3; f++) {
                const uint8_t *p = (const uint8_t *)fields[f].ptr;
                if (p < d || p + fields[f].len > d + n) bad_slices++;
            }
        }
        kiri_cbor c = kiri_cbor_make(d, n);
        if (kiri_cbor_skip(&c) && (c.p < d || c.p > d + n)) bad_slices++;
        free(d);
    }
    CHECK_EQ_INT(bad_slices, 0);
    CHECK(ok > 0); /* some corruptions (in a value's bytes) still decode */
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static int json_raw(const char *json, const char *key, kiri_str *out, char *copy_out,
                    size_t copy_cap) {
    size_t n = strlen(json);
    uint8_t *d = dup_exact(json, n);
    kiri_str v;
    int rc = kiri_json_get_raw(d, n, key, &v);
    if (rc == KIRI_JSON_OK && copy_out) {
        snprintf(copy_out, copy_cap, "%.*s", (int)v.len, v.ptr);
        if (out) *out = v;
    }
    free(d);
    return rc;
}

static int json_number(const char *json, const char *key, double *out) {
    size_t n = strlen(json);
    uint8_t *d = dup_exact(json, n);
    int rc = kiri_json_get_number(d, n, key, out);
    free(d);
    return rc;
}

static int json_string(const char *json, const char *key, char *out, size_t cap, size_t *len) {
    size_t n = strlen(json);
    uint8_t *d = dup_exact(json, n);
    int rc = kiri_json_get_string(d, n, key, out, cap, len);
    free(d);
    return rc;
}

static void test_json_lookup(void) {
    const char *z2m = "{\"temperature\":21.5,\"humidity\":40,\"linkquality\":120,"
                      "\"battery\":97.5,\"occupancy\":true,\"update\":{\"state\":\"idle\"}}";
    double v = 0;
    CHECK_EQ_INT(json_number(z2m, "temperature", &v), KIRI_JSON_OK);
    CHECK_F64(v, 21.5);
    CHECK_EQ_INT(json_number(z2m, "humidity", &v), KIRI_JSON_OK);
    CHECK_F64(v, 40.0);
    CHECK_EQ_INT(json_number(z2m, "pressure", &v), KIRI_JSON_NOT_FOUND);
    CHECK_EQ_INT(json_number(z2m, "update", &v), KIRI_JSON_WRONG_TYPE);
    CHECK_EQ_INT(json_number(z2m, "state", &v), KIRI_JSON_NOT_FOUND); /* not top level */
    bool b = false;
    CHECK_EQ_INT(kiri_json_get_bool(z2m, strlen(z2m), "occupancy", &b), KIRI_JSON_OK);
    CHECK(b);
    CHECK_EQ_INT(kiri_json_get_bool(z2m, strlen(z2m), "battery", &b), KIRI_JSON_WRONG_TYPE);
    uint64_t u = 0;
    CHECK_EQ_INT(kiri_json_get_u64(z2m, strlen(z2m), "linkquality", &u), KIRI_JSON_OK);
    CHECK_EQ_INT(u, 120);
    CHECK_EQ_INT(kiri_json_get_u64(z2m, strlen(z2m), "battery", &u), KIRI_JSON_WRONG_TYPE);

    /* Nested objects and arrays are skipped, strings with braces and quotes too; a nested
     * object is read by looking into its raw text. */
    const char *tasmota = " {\"Time\":\"2024-01-01T00:00:00\",\"BME280\":{\"Temperature\":21.5,"
                          "\"x\":[1,{\"y\":\"}]\\\"\"},[],{}]},\"note\":\"{\\\"Temperature\\\":1}\","
                          "\"Temperature\":-4e-1, \"TempUnit\" : \"C\" }\n";
    CHECK_EQ_INT(json_number(tasmota, "Temperature", &v), KIRI_JSON_OK);
    CHECK_F64(v, -0.4);
    char raw[256];
    kiri_str nested;
    CHECK_EQ_INT(json_raw(tasmota, "BME280", &nested, raw, sizeof raw), KIRI_JSON_OK);
    CHECK(strcmp(raw, "{\"Temperature\":21.5,\"x\":[1,{\"y\":\"}]\\\"\"},[],{}]}") == 0);
    CHECK_EQ_INT(json_number(raw, "Temperature", &v), KIRI_JSON_OK);
    CHECK_F64(v, 21.5);
    char s[64];
    size_t len = 0;
    CHECK_EQ_INT(json_string(tasmota, "TempUnit", s, sizeof s, &len), KIRI_JSON_OK);
    CHECK(len == 1 && strcmp(s, "C") == 0);

    /* Escapes: in values and in keys. */
    const char *esc = "{\"name\":\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\\t\\b\\f\\r\","
                      "\"temp\\u0065rature\":5,\"caf\\u00e9\":1}";
    CHECK_EQ_INT(json_string(esc, "name", s, sizeof s, &len), KIRI_JSON_OK);
    const char want[] = "a\"b\\c/d\n\xc3\xa9\xf0\x9f\x98\x80\t\b\f\r";
    CHECK(len == sizeof want - 1 && memcmp(s, want, len) == 0 && s[len] == '\0');
    CHECK_EQ_INT(json_number(esc, "temperature", &v), KIRI_JSON_OK);
    CHECK_F64(v, 5.0);
    CHECK_EQ_INT(json_number(esc, "caf\xc3\xa9", &v), KIRI_JSON_OK);
    CHECK_EQ_INT(json_number(esc, "cafe", &v), KIRI_JSON_NOT_FOUND);
    /* Not enough room: refused, nothing claimed. */
    CHECK_EQ_INT(json_string(esc, "name", s, 5, &len), KIRI_JSON_NO_SPACE);
    CHECK_EQ_INT(json_string(esc, "name", s, sizeof want - 1, &len), KIRI_JSON_OK); /* no NUL */
    CHECK_EQ_INT(json_string(esc, "temperature", s, sizeof s, &len), KIRI_JSON_WRONG_TYPE);

    /* A repeated key gives its last value; an empty object; a document that is not one. */
    CHECK_EQ_INT(json_number("{\"a\":1,\"a\":2}", "a", &v), KIRI_JSON_OK);
    CHECK_F64(v, 2.0);
    CHECK_EQ_INT(json_number("{}", "a", &v), KIRI_JSON_NOT_FOUND);
    CHECK_EQ_INT(json_number(" { } ", "a", &v), KIRI_JSON_NOT_FOUND);
    CHECK_EQ_INT(json_number("[1,2]", "a", &v), KIRI_JSON_NOT_FOUND);
    CHECK_EQ_INT(json_number("21.5", "a", &v), KIRI_JSON_NOT_FOUND);
    CHECK_EQ_INT(json_number("\"x\"", "a", &v), KIRI_JSON_NOT_FOUND);

    /* Numbers of every JSON form. */
    const char *nums = "{\"a\":0,\"b\":-0,\"c\":1e3,\"d\":1E-2,\"e\":-12.5e+1,\"f\":0.1,"
                       "\"g\":123456789012345,\"h\":1e400,\"i\":1e-400,\"j\":18446744073709551615,"
                       "\"k\":18446744073709551616,\"l\":1.7976931348623157e308}";
    CHECK_EQ_INT(json_number(nums, "a", &v), KIRI_JSON_OK);
    CHECK_F64(v, 0.0);
    CHECK_EQ_INT(json_number(nums, "b", &v), KIRI_JSON_OK);
    CHECK_F64(v, -0.0);
    CHECK_EQ_INT(json_number(nums, "c", &v), KIRI_JSON_OK);
    CHECK_F64(v, 1000.0);
    CHECK_EQ_INT(json_number(nums, "d", &v), KIRI_JSON_OK);
    CHECK_F64(v, 0.01);
    CHECK_EQ_INT(json_number(nums, "e", &v), KIRI_JSON_OK);
    CHECK_F64(v, -125.0);
    CHECK_EQ_INT(json_number(nums, "f", &v), KIRI_JSON_OK);
    CHECK_F64(v, 0.1);
    CHECK_EQ_INT(json_number(nums, "g", &v), KIRI_JSON_OK);
    CHECK_F64(v, 123456789012345.0);
    CHECK_EQ_INT(json_number(nums, "h", &v), KIRI_JSON_OK);
    CHECK_F64(v, INFINITY);
    CHECK_EQ_INT(json_number(nums, "i", &v), KIRI_JSON_OK);
    CHECK_F64(v, 0.0);
    CHECK_EQ_INT(json_number(nums, "l", &v), KIRI_JSON_OK);
    CHECK_F64(v, DBL_MAX);
    CHECK_EQ_INT(kiri_json_get_u64(nums, strlen(nums), "j", &u), KIRI_JSON_OK);
    CHECK(u == UINT64_MAX);
    CHECK_EQ_INT(kiri_json_get_u64(nums, strlen(nums), "k", &u), KIRI_JSON_WRONG_TYPE);
    CHECK_EQ_INT(kiri_json_get_u64(nums, strlen(nums), "b", &u), KIRI_JSON_WRONG_TYPE);
    CHECK_EQ_INT(kiri_json_get_u64(nums, strlen(nums), "c", &u), KIRI_JSON_WRONG_TYPE);

    /* Walking the members. */
    const char *doc = "{\"a\":1, \"b\" : [true] ,\"c\":\"x\"}";
    kiri_json_members it;
    kiri_str key, value;
    int count = 0, rc;
    CHECK(kiri_json_members_begin(&it, doc, strlen(doc)));
    while ((rc = kiri_json_members_next(&it, &key, &value)) == 1) {
        count++;
        if (count == 2) {
            CHECK(kiri_json_key_eq(key, "b"));
            CHECK_STR(value, "[true]");
        }
    }
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(count, 3);
    CHECK_EQ_INT(kiri_json_members_next(&it, &key, &value), 0);
    CHECK(!kiri_json_members_begin(&it, "[]", 2));
}

static void test_json_malformed(void) {
    const char *bad[] = {
        "", " ", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "{,}",
        "{\"a\":1}x", "{\"a\":1}{}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":-}",
        "{\"a\":1e}", "{\"a\":1e+}", "{\"a\":+1}", "{\"a\":0x1}", "{\"a\":NaN}",
        "{\"a\":Infinity}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\ud800\\u0041\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"tab\there\"}",
        "{\"a\":\"nl\nhere\"}", "{\"a\":\"\xff\"}", "{\"a\":\"\xc0\x80\"}",
        "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"open}", "{\"a\":tru}", "{\"a\":nul}",
        "{\"a\":falsey}", "{\"a\":[1,2}", "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":{\"b\":1]}",
        "{'a':1}", "{a:1}", "{\"a\":1 \"b\":2}", "{\"a\":1,,\"b\":2}", "{1:1}", "[1,2",
        "{\"a\":[[[]]}", "{\"a\":{\"b\":{}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = strlen(bad[i]);
        uint8_t *d = dup_exact(bad[i], n);
        kiri_str v;
        int a = kiri_json_get_raw(d, n, "a", &v), z = kiri_json_get_raw(d, n, "zzz", &v);
        bool valid = kiri_json_valid(d, n);
        kiri_reading r;
        int rr = kiri_reading_decode_json(d, n, &r, NULL, 0);
        free(d);
        if (a != KIRI_JSON_MALFORMED || z != KIRI_JSON_MALFORMED || valid ||
            rr != KIRI_READING_MALFORMED) {
            fprintf(stderr, "accepted malformed JSON #%zu: %s (%d %d %d %d)\n", i, bad[i], a,
                    z, valid, rr);
            failed++;
        } else {
            passed++;
        }
    }
    /* Nesting: KIRI_JSON_MAX_DEPTH levels are followed, one more is refused. */
    char deep[2 * KIRI_JSON_MAX_DEPTH + 16];
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = 0;
        int levels = KIRI_JSON_MAX_DEPTH - 1 + extra; /* inside the top-level object */
        n += (size_t)sprintf(deep + n, "{\"a\":");
        for (int i = 0; i < levels; i++) deep[n++] = '[';
        deep[n++] = '1';
        for (int i = 0; i < levels; i++) deep[n++] = ']';
        deep[n++] = '}';
        deep[n] = '\0';
        kiri_str v;
        CHECK_EQ_INT(kiri_json_get_raw(deep, n, "a", &v),
                     extra ? KIRI_JSON_MALFORMED : KIRI_JSON_OK);
        CHECK(kiri_json_valid(deep, n) == !extra);
    }
    /* Every strict prefix of a valid object is refused, never read past its end. */
    const char *doc = "{\"sensor\":\"s\\u0031\",\"nested\":{\"x\":[1,-2.5e3,true,null,\"\\\"\"]},"
                      "\"kind\":\"temperature\",\"value\":21.5,\"unit\":\"C\",\"seq\":7}";
    size_t len = strlen(doc);
    for (size_t n = 0; n < len; n++) {
        uint8_t *d = dup_exact(doc, n);
        kiri_str v;
        kiri_reading r;
        char scratch[64];
        CHECK_EQ_INT(kiri_json_get_raw(d, n, "value", &v), KIRI_JSON_MALFORMED);
        CHECK_EQ_INT(kiri_reading_decode_json(d, n, &r, scratch, sizeof scratch),
                     KIRI_READING_MALFORMED);
        free(d);
    }
    /* Random corruptions: answers without reading outside the input. */
    int ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        char buf[256];
        size_t n = len;
        memcpy(buf, doc, n);
        int edits = 1 + (int)(next_random() % 3);
        for (int e = 0; e < edits && n; e++) {
            uint32_t what = next_random() % 3, at = next_random() % (uint32_t)n;
            static const char pick[] = "{}[]\",:\\u0123456789.eE+-tfn \x80\xff";
            if (what == 0) buf[at] = pick[next_random() % (sizeof pick - 1)];
            if (what == 1) buf[at] = (char)next_random();
            if (what == 2) n = at;
        }
        uint8_t *d = dup_exact(buf, n);
        kiri_reading r;
        char scratch[64];
        double v;
        if (kiri_reading_decode_json(d, n, &r, scratch, sizeof scratch) == KIRI_READING_OK) ok++;
        (void)kiri_json_get_number(d, n, "value", &v);
        free(d);
    }
    CHECK(ok > 0);
}

static void test_json_reading(void) {
    kiri_reading r;
    char scratch[64];
    const char *doc = "{\"sensor\":\"s1\",\"kind\":\"temperature\",\"value\":21.5,\"unit\":\"C\","
                      "\"seq\":7,\"ts\":1700000000000,\"uptime_ms\":12,\"extra\":{\"a\":[1]}}";
    size_t n = strlen(doc);
    CHECK_EQ_INT(kiri_reading_decode_json(doc, n, &r, NULL, 0), KIRI_READING_OK);
    CHECK_STR(r.sensor, "s1");
    CHECK_STR(r.kind, "temperature");
    CHECK_STR(r.unit, "C");
    CHECK_F64(r.value, 21.5);
    CHECK(r.has_seq && r.seq == 7 && r.has_ts && r.ts == 1700000000000u);
    CHECK(r.has_uptime_ms && r.uptime_ms == 12);
    /* The same reading in CBOR, from the JSON one: what the gateway's conversion and the
     * Rust SDK would make of it, field for field. */
    uint8_t out[128];
    size_t len = kiri_reading_encode(&r, NULL, 0, out, sizeof out);
    kiri_reading back;
    CHECK_EQ_INT(kiri_reading_decode(out, len, &back), KIRI_READING_OK);
    CHECK(kiri_str_eq(back.sensor, r.sensor) && back.value == 21.5 && back.seq == 7);

    /* Escaped text goes to the scratch buffer, plain text stays in the payload. */
    const char *esc = "{\"sensor\":\"s\\u0031\",\"kind\":\"temp\\u0065rature\",\"value\":-3,"
                      "\"unit\":\"\\u00b0C\"}";
    n = strlen(esc);
    CHECK_EQ_INT(decode_json(esc, n, &r, scratch, sizeof scratch), KIRI_READING_OK);
    CHECK_STR(r.sensor, "s1");
    CHECK_STR(r.kind, "temperature");
    CHECK_STR(r.unit, "\xc2\xb0"
                      "C");
    CHECK(r.sensor.ptr >= scratch && r.unit.ptr + r.unit.len <= scratch + sizeof scratch);
    CHECK_F64(r.value, -3.0);
    CHECK(!r.has_seq && !r.has_ts && !r.has_uptime_ms);
    CHECK_EQ_INT(decode_json(esc, n, &r, scratch, 5), KIRI_READING_NO_SPACE);
    CHECK_EQ_INT(decode_json(esc, n, &r, NULL, 0), KIRI_READING_NO_SPACE);

    /* Missing fields in order; wrong types; what is not a reading. */
    struct {
        const char *json;
        int want;
    } cases[] = {
        {"{}", KIRI_READING_MISSING_SENSOR},
        {"{\"temperature\":21.5,\"humidity\":40}", KIRI_READING_MISSING_SENSOR},
        {"{\"sensor\":\"s\",\"value\":1,\"unit\":\"C\"}", KIRI_READING_MISSING_KIND},
        {"{\"sensor\":\"s\",\"kind\":\"k\",\"unit\":\"C\"}", KIRI_READING_MISSING_VALUE},
        {"{\"sensor\":\"s\",\"kind\":\"k\",\"value\":1}", KIRI_READING_MISSING_UNIT},
        {"{\"sensor\":1,\"kind\":\"k\",\"value\":1,\"unit\":\"C\"}", KIRI_READING_MALFORMED},
        {"{\"sensor\":\"s\",\"kind\":\"k\",\"value\":\"1\",\"unit\":\"C\"}",
         KIRI_READING_MALFORMED},
        {"{\"sensor\":\"s\",\"kind\":\"k\",\"value\":1,\"unit\":null}", KIRI_READING_MALFORMED},
        {"{\"sensor\":\"s\",\"kind\":\"k\",\"value\":1,\"unit\":\"C\",\"ts\":1.5}",
         KIRI_READING_MALFORMED},
        {"{\"sensor\":\"s\",\"kind\":\"k\",\"value\":1,\"unit\":\"C\",\"ts\":-1}",
         KIRI_READING_MALFORMED},
        {"{\"sensor\":\"s\",\"kind\":\"k\",\"value\":1,\"unit\":\"C\",\"seq\":1e3}",
         KIRI_READING_MALFORMED},
        {"{\"sensor\":\"s\",\"kind\":\"k\",\"value\":1,\"unit\":\"C\","
         "\"seq\":18446744073709551616}",
         KIRI_READING_MALFORMED},
        {"{\"kind\":5}", KIRI_READING_MALFORMED}, /* a wrong type before a missing field */
        {"{\"sensor\":\"s\",\"kind\":\"k\",\"value\":1,\"unit\":\"C\","
         "\"seq\":18446744073709551615,\"other\":null}",
         KIRI_READING_OK},
        {"[{\"sensor\":\"s\"}]", KIRI_READING_MALFORMED},
        {"\"sensor\"", KIRI_READING_MALFORMED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = decode_json(cases[i].json, strlen(cases[i].json), &r, scratch, sizeof scratch);
        if (rc != cases[i].want) {
            fprintf(stderr, "JSON reading %s: %d, want %d\n", cases[i].json, rc, cases[i].want);
            failed++;
        } else {
            passed++;
        }
    }
}

/* ---- Text, numbers, memory ----------------------------------------------------------------- */

static bool parses(const char *s, double want) {
    double v = -12345.0;
    if (!kiri_parse_f64(s, strlen(s), &v)) return false;
    return isnan(want) ? isnan(v) : memcmp(&v, &want, sizeof v) == 0;
}

static void test_parse_f64(void) {
    CHECK(parses("30", 30.0));
    CHECK(parses("30.5", 30.5));
    CHECK(parses(" 30.5\n", 30.5));
    CHECK(parses("-1e3", -1000.0));
    CHECK(parses("+.5", 0.5));
    CHECK(parses("5.", 5.0));
    CHECK(parses("007", 7.0));
    CHECK(parses("1E-2", 0.01));
    CHECK(parses("0.1", 0.1));
    CHECK(parses("-0", -0.0));
    CHECK(parses("21.55", 21.55));
    CHECK(parses("1e22", 1e22));
    CHECK(parses("1e23", 1e23));
    CHECK(parses("0.000001", 1e-6));
    CHECK(parses("1.7976931348623157e308", DBL_MAX));
    CHECK(parses("1.8e308", INFINITY));
    CHECK(parses("2.2250738585072014e-308", DBL_MIN));
    CHECK(parses("0.30000000000000004", 0.1 + 0.2));
    CHECK(parses("inf", INFINITY));
    CHECK(parses("-Infinity", -INFINITY));
    CHECK(parses("NaN", NAN));
    const char *bad[] = {"", " ", "abc", "1e", "--1", "1 2", "0x10", "1,5", ".", "e5", "+",
                         "infin", "1e+", "30C"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v;
        if (kiri_parse_f64(bad[i], strlen(bad[i]), &v)) {
            fprintf(stderr, "parsed \"%s\"\n", bad[i]);
            failed++;
        } else {
            passed++;
        }
    }
    /* Against the C library (correctly rounded): decimal strings of up to 15 significant
     * digits with small exponents (the exact fast path), of up to 17 (what shortest
     * round-trip printers write), and of up to 19 across the whole exponent range (the
     * double-double path). Subnormal results may be an ulp off. */
    int mismatches = 0, subnormal_off = 0;
    for (int i = 0; i < 100000; i++) {
        char s[64];
        uint64_t m = ((uint64_t)next_random() << 32 | next_random()) % 1000000000000000u;
        int e = (int)(next_random() % 45) - 22;
        snprintf(s, sizeof s, "%llue%d", (unsigned long long)m, e);
        double want = strtod(s, NULL), got;
        if (!kiri_parse_f64(s, strlen(s), &got) || got != want) mismatches++;
        snprintf(s, sizeof s, "%.*f", (int)(next_random() % 6), (double)m / 1000.0);
        want = strtod(s, NULL);
        if (!kiri_parse_f64(s, strlen(s), &got) || got != want) mismatches++;
        m = ((uint64_t)next_random() << 32 | next_random()) % 10000000000000000000u;
        uint64_t p = 1;
        for (unsigned d = 1 + next_random() % 19; d > 0; d--) p *= 10;
        if (p != 10000000000000000000u) m %= p;
        e = (int)(next_random() % 660) - 345;
        snprintf(s, sizeof s, "%llue%d", (unsigned long long)m, e);
        want = strtod(s, NULL);
        if (!kiri_parse_f64(s, strlen(s), &got)) {
            mismatches++;
        } else if (got != want) {
            if (fabs(want) < DBL_MIN && fabs(got - want) <= 4.9406564584124654e-324) {
                subnormal_off++;
            } else {
                mismatches++;
                if (mismatches < 5) fprintf(stderr, "%s: %.17g, want %.17g\n", s, got, want);
            }
        }
    }
    CHECK(subnormal_off < 1000);
    CHECK_EQ_INT(mismatches, 0);
}

static void test_buf(void) {
    char mem[64];
    kiri_buf b = kiri_buf_make(mem, sizeof mem);
    kiri_buf_cstr(&b, "alerts/");
    kiri_buf_str(&b, kiri_str_from("s1"));
    kiri_buf_char(&b, '/');
    kiri_buf_u64(&b, 0);
    kiri_buf_char(&b, ' ');
    kiri_buf_u64(&b, UINT64_MAX);
    kiri_buf_char(&b, ' ');
    kiri_buf_i64(&b, INT64_MIN);
    kiri_buf_char(&b, ' ');
    kiri_buf_i64(&b, 42);
    CHECK_STR(kiri_buf_view(&b), "alerts/s1/0 18446744073709551615 -9223372036854775808 42");
    CHECK(!b.overflow);

    struct {
        double v;
        unsigned decimals;
        const char *want;
    } f[] = {
        {21.5, 2, "21.50"},   {-3.25, 1, "-3.3"},  {0.125, 2, "0.13"},     {9.999, 2, "10.00"},
        {30.0, 0, "30"},      {0.5, 0, "1"},       {2.5e21, 2, "2.50e21"}, {-0.0, 1, "-0.0"},
        {1e300, 1, "1.0e300"}, {NAN, 2, "NaN"},    {INFINITY, 2, "inf"},   {-INFINITY, 2, "-inf"},
        {1.5, 12, "1.500000000"},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        b = kiri_buf_make(mem, sizeof mem);
        kiri_buf_f64(&b, f[i].v, f[i].decimals);
        CHECK_STR(kiri_buf_view(&b), f[i].want);
    }

    /* Cut at a character boundary, and flagged. */
    char small[4];
    b = kiri_buf_make(small, sizeof small);
    kiri_buf_cstr(&b, "ab\xc3\xa9"); /* "abé": 4 bytes, fits */
    CHECK(!b.overflow && b.len == 4);
    b = kiri_buf_make(small, sizeof small);
    kiri_buf_cstr(&b, "abc\xc3\xa9"); /* the é would be cut in half: left out */
    CHECK(b.overflow && b.len == 3);
    kiri_buf_cstr(&b, "x");
    CHECK(b.overflow && b.len == 4);
    kiri_buf_cstr(&b, "y");
    CHECK(b.overflow && b.len == 4 && memcmp(small, "abcx", 4) == 0);
    kiri_buf none = kiri_buf_make(NULL, 0);
    kiri_buf_cstr(&none, "z");
    CHECK(none.overflow && none.len == 0);
}

static void test_text_and_memory(void) {
    CHECK(kiri_utf8_valid("plain", 5));
    CHECK(kiri_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
    CHECK(kiri_utf8_valid("", 0));
    CHECK(!kiri_utf8_valid("\xc0\x80", 2));         /* overlong */
    CHECK(!kiri_utf8_valid("\xe0\x80\x80", 3));     /* overlong */
    CHECK(!kiri_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!kiri_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    CHECK(!kiri_utf8_valid("\xe2\x82", 2));         /* cut */
    CHECK(!kiri_utf8_valid("\x80", 1));             /* a lone continuation */
    CHECK(!kiri_utf8_valid("\xf8\x88\x80\x80\x80", 5));

    char a[16] = "0123456789";
    kiri_memmove(a + 2, a, 8);
    CHECK(memcmp(a, "0101234567", 10) == 0);
    kiri_memmove(a, a + 2, 8);
    CHECK(memcmp(a, "0123456767", 10) == 0);
    kiri_memset(a, 'x', 3);
    CHECK(memcmp(a, "xxx3", 4) == 0);
    kiri_memcpy(a, "abc", 3);
    CHECK(memcmp(a, "abc3", 4) == 0);
    CHECK(kiri_memcmp("abc", "abd", 3) < 0);
    CHECK(kiri_memcmp("abd", "abc", 3) > 0);
    CHECK(kiri_memcmp("ab\xff", "ab\x01", 3) > 0); /* unsigned bytes */
    CHECK(kiri_memcmp("abc", "abd", 2) == 0);
    CHECK_EQ_INT(kiri_strlen("kiri"), 4);
    CHECK(kiri_str_eq_cstr(kiri_str_from("$timer"), "$timer"));
    CHECK(!kiri_str_eq_cstr(kiri_str_from("$time"), "$timer"));

    /* kiri_kv_list's encoding: 2-byte big-endian length, then the key. */
    static const uint8_t list[] = {0x00, 0x01, 'a', 0x00, 0x03, 'b', 'c', 'd', 0x00, 0x05, 'x'};
    size_t pos = 0;
    kiri_str key = {NULL, 0};
    CHECK(kiri_kv_keys_next(list, sizeof list, &pos, &key));
    CHECK_STR(key, "a");
    CHECK(kiri_kv_keys_next(list, sizeof list, &pos, &key));
    CHECK_STR(key, "bcd");
    CHECK(!kiri_kv_keys_next(list, sizeof list, &pos, &key)); /* the last entry is cut */
    pos = 0;
    CHECK(!kiri_kv_keys_next(list, 1, &pos, &key));
}

/* The host call helpers, against the mock host. */
static void test_host_helpers(void) {
    mock_reset();
    double v = 0;
    mock_set_config("limit", "30");
    CHECK(kiri_config_number("limit", &v) && v == 30.0);
    mock_set_config("limit", " 30.5 ");
    CHECK(kiri_config_number("limit", &v) && v == 30.5);
    mock_set_config("limit", "warm");
    CHECK(!kiri_config_number("limit", &v));
    mock_set_config("limit", NULL);
    CHECK(!kiri_config_number("limit", &v));
    char long_number[200];
    memset(long_number, '0', sizeof long_number - 1);
    long_number[sizeof long_number - 1] = '\0';
    mock_set_config("limit", long_number); /* over the 128 bytes the Rust SDK reads, too */
    CHECK(!kiri_config_number("limit", &v));

    char buf[8];
    kiri_str s;
    mock_set_config("kind", "humidity");
    CHECK(kiri_config_get("kind", buf, sizeof buf, &s));
    CHECK_STR(s, "humidity");
    CHECK(!kiri_config_get("kind", buf, 7, &s)); /* does not fit */
    CHECK(!kiri_config_get("other", buf, sizeof buf, &s));

    kiri_log_str(KIRI_LOG_INFO, "hello");
    CHECK(mock.n_logs == 1 && mock.logs[0].level == KIRI_LOG_INFO &&
          strcmp(mock.logs[0].text, "hello") == 0);
    CHECK_EQ_INT(kiri_emit_str("out/x", "ab", 2), KIRI_OK);
    CHECK(mock.n_emits == 1 && strcmp(mock.emits[0].topic, "out/x") == 0 &&
          mock.emits[0].len == 2);
}

/* KIRI_EXPORTS, natively: the three exports around a handler. */
static kiri_event seen;
static int handler(const kiri_event *ev) {
    seen = *ev;
    return ev->payload_len == 3 ? 0 : 9;
}
KIRI_EXPORTS(handler);

static void test_exports(void) {
    CHECK_EQ_INT(kiri_abi_version(), 1);
    CHECK(kiri_alloc(-1) == NULL);
    CHECK(kiri_alloc(0) != NULL);
    CHECK(kiri_alloc(KIRI_EVENT_BUF_SIZE) != NULL);
    CHECK(kiri_alloc(KIRI_EVENT_BUF_SIZE + 1) == NULL);
    CHECK_EQ_INT(KIRI_EVENT_BUF_SIZE, 327680);
    uint8_t *p = kiri_alloc(10);
    memcpy(p, "topic" "abc", 8);
    CHECK_EQ_INT(kiri_on_event((const char *)p, 5, p + 5, 3, 1234), 0);
    CHECK_STR(seen.topic, "topic");
    CHECK(seen.payload == p + 5 && seen.payload_len == 3 && seen.received_at_ms == 1234);
    CHECK(!kiri_event_is_timer(&seen) && !kiri_event_is_http(&seen));
    CHECK_EQ_INT(kiri_on_event("$timer", 6, p, 0, 1), 9);
    CHECK(kiri_event_is_timer(&seen));
}

/* An HTTP function's side: the request's fields through the JSON helpers, the answer's
 * status and headers. */
static void test_http(void) {
    mock_reset();
    char req[512];
    CHECK_EQ_INT(kiri_http_request(req, sizeof req), KIRI_NOT_FOUND);
    mock.http_request =
        "{\"method\":\"GET\",\"path\":\"/items/7\",\"query\":\"x=1\","
        "\"headers\":{\"x-device-id\":\"d1\"}}";
    int32_t n = kiri_http_request(req, sizeof req);
    CHECK(n > 0 && n < (int32_t)sizeof req);
    char path[64];
    size_t len = 0;
    CHECK_EQ_INT(kiri_json_get_string(req, (size_t)n, "path", path, sizeof path, &len),
                 KIRI_JSON_OK);
    CHECK(len == 8 && memcmp(path, "/items/7", 8) == 0);
    kiri_str headers;
    CHECK_EQ_INT(kiri_json_get_raw(req, (size_t)n, "headers", &headers), KIRI_JSON_OK);
    char device[16];
    CHECK_EQ_INT(kiri_json_get_string(headers.ptr, headers.len, "x-device-id", device,
                                      sizeof device, &len),
                 KIRI_JSON_OK);
    CHECK(len == 2 && memcmp(device, "d1", 2) == 0);
    const char *h = "{\"content-type\":\"application/json\"}";
    CHECK_EQ_INT(kiri_http_response(201, h, (int32_t)strlen(h)), KIRI_OK);
    CHECK_EQ_INT(mock.http_status, 201);
    CHECK_EQ_INT(kiri_http_response(99, "", 0), KIRI_INVALID);
    mock.config_json = "{\"limit\":30}";
    char cfg[64];
    CHECK_EQ_INT(kiri_config_json("", 0, cfg, sizeof cfg), 12);
}

int main(void) {
    test_rust_vectors_decode();
    test_encode_matches_rust();
    test_encode_round_trip();
    test_cbor_writer();
    test_numbers();
    test_fields();
    test_unknown_values_skipped();
    test_skip();
    test_truncated();
    test_mutations();
    test_json_lookup();
    test_json_malformed();
    test_json_reading();
    test_parse_f64();
    test_buf();
    test_text_and_memory();
    test_host_helpers();
    test_exports();
    test_http();
    printf("test_kiri: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
