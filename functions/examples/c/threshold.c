/*
 * threshold: emits an alert for every reading of one kind whose value is above a limit.
 * The C twin of functions/examples/threshold (Rust), with the C SDK (functions/sdk-c/kiri.h).
 *
 * Config: `limit` (number, required), `kind` (default "temperature"). The alert is the
 * reading plus a `limit` field, as a CBOR reading, sent to `alerts/<sensor>/<kind>`. Readings
 * at or below the limit, and readings of other kinds, produce nothing.
 *
 * Takes a CBOR reading, or the same reading as JSON ({"sensor":"s1","kind":"temperature",
 * "value":21.5,"unit":"C"}): JSON when the gateway says the payload is JSON (a trigger with
 * format = "json"), or, for a text or bytes trigger, when it starts with '{' (no CBOR reading
 * does: a CBOR map starts with a byte from 0xa0 to 0xbf).
 *
 * Result codes: 1 the payload is not a reading (logged at WARN), 2 the alert (or a reading's
 * escaped text) does not fit its buffer, 3 `limit` is missing or not a number (logged at
 * ERROR); a host refusal of the emit is returned as it is (negative).
 *
 * Build (what `make functions-c` runs, less the warning flags):
 *   clang --target=wasm32 -nostdlib -O2 -Ifunctions/sdk-c -Wl,--no-entry -Wl,--stack-first \
 *     -o threshold.wasm functions/examples/c/threshold.c
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -Ifunctions/sdk-c -Wl,--stack-first \
 *     -o threshold-wasi.wasm functions/examples/c/threshold.c           (with wasi-libc)
 */
#include "kiri.h"

enum { NOT_A_READING = 1, TOO_BIG = 2, NO_LIMIT = 3 };

/* Whether the payload is a JSON reading rather than a CBOR one. */
static bool is_json(const kiri_event *ev) {
    int32_t format = kiri_input_format();
    if (format == KIRI_FORMAT_JSON) return true;
    if (format != KIRI_FORMAT_TEXT && format != KIRI_FORMAT_BYTES) return false;
    size_t i = 0;
    while (i < ev->payload_len && (ev->payload[i] == ' ' || ev->payload[i] == '\t' ||
                                   ev->payload[i] == '\n' || ev->payload[i] == '\r')) {
        i++;
    }
    return i < ev->payload_len && ev->payload[i] == '{';
}

static int on_event(const kiri_event *ev) {
    double limit;
    if (!kiri_config_number("limit", &limit)) {
        kiri_log_str(KIRI_LOG_ERROR, "config key `limit` is missing or not a number");
        return NO_LIMIT;
    }

    kiri_reading r;
    char scratch[512]; /* a JSON reading's escaped text, unescaped */
    int err = is_json(ev)
                  ? kiri_reading_decode_json(ev->payload, ev->payload_len, &r, scratch,
                                             sizeof scratch)
                  : kiri_reading_decode(ev->payload, ev->payload_len, &r);
    if (err == KIRI_READING_NO_SPACE) return TOO_BIG;
    if (err != KIRI_READING_OK) {
        char mem[256];
        kiri_buf line = kiri_buf_make(mem, sizeof mem);
        kiri_buf_str(&line, ev->topic);
        kiri_buf_cstr(&line, ": not a reading: ");
        kiri_buf_cstr(&line, kiri_reading_error_str(err));
        kiri_log_buf(KIRI_LOG_WARN, &line);
        return NOT_A_READING;
    }

    char kind_mem[64];
    kiri_str kind;
    if (!kiri_config_get("kind", kind_mem, sizeof kind_mem, &kind)) {
        kind = kiri_str_from("temperature");
    }
    if (!kiri_str_eq(r.kind, kind) || r.value <= limit) return 0;

    uint8_t alert[512];
    kiri_field extra[] = {{"limit", limit}};
    size_t n = kiri_reading_encode(&r, extra, 1, alert, sizeof alert);
    if (n == 0) return TOO_BIG;

    char topic_mem[KIRI_MAX_TOPIC_BYTES];
    kiri_buf topic = kiri_buf_make(topic_mem, sizeof topic_mem);
    kiri_buf_cstr(&topic, "alerts/");
    kiri_buf_str(&topic, r.sensor);
    kiri_buf_char(&topic, '/');
    kiri_buf_str(&topic, r.kind);
    if (topic.overflow) return TOO_BIG;
    int32_t rc = kiri_emit(topic.ptr, (int32_t)topic.len, alert, (int32_t)n);
    return rc < 0 ? rc : 0;
}

KIRI_EXPORTS(on_event);
