/*
 * Native tests of the C `threshold` example (functions/examples/c/threshold.c), linked with
 * the mock host: the Rust example's tests (functions/examples/threshold/src/lib.rs), the same
 * alert bytes as the Rust example, and the JSON input.
 */
#include "mock_host.h"
#include "vectors.h"

#include <stdio.h>
#include <string.h>

/* Defined in threshold.c by KIRI_EXPORTS. */
int32_t kiri_abi_version(void);
void *kiri_alloc(int32_t len);
int32_t kiri_on_event(const char *topic, int32_t topic_len, const uint8_t *payload,
                      int32_t payload_len, int64_t received_at_ms);

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

/* Delivers one event as the gateway does: into the buffer from kiri_alloc. */
static int32_t deliver(const char *topic, const void *payload, size_t len) {
    size_t tl = strlen(topic);
    uint8_t *buf = kiri_alloc((int32_t)(tl + len));
    if (!buf) return -1000;
    memcpy(buf, topic, tl);
    if (len) memcpy(buf + tl, payload, len);
    return kiri_on_event((const char *)buf, (int32_t)tl, buf + tl, (int32_t)len, 0);
}

/* The Rust test's reading: sensor s1, unit C, uptime_ms 1. */
static int32_t run(const char *kind, double value) {
    kiri_reading r;
    memset(&r, 0, sizeof r);
    r.sensor = kiri_str_from("s1");
    r.kind = kiri_str_from(kind);
    r.unit = kiri_str_from("C");
    r.value = value;
    r.has_uptime_ms = true;
    r.uptime_ms = 1;
    uint8_t buf[128];
    size_t n = kiri_reading_encode(&r, NULL, 0, buf, sizeof buf);
    return deliver("sensors/s1/x", buf, n);
}

static void only_readings_above_the_limit_raise_alerts(void) {
    mock_reset();
    mock_set_config("limit", "30");
    CHECK(run("temperature", 29.9) == 0);
    CHECK(run("temperature", 30.0) == 0);
    CHECK(mock.n_emits == 0);
    CHECK(run("temperature", 30.5) == 0);
    CHECK(mock.n_emits == 1);
    CHECK(strcmp(mock.emits[0].topic, "alerts/s1/temperature") == 0);
    kiri_reading alert;
    memset(&alert, 0, sizeof alert);
    CHECK(kiri_reading_decode(mock.emits[0].payload, mock.emits[0].len, &alert) ==
          KIRI_READING_OK);
    CHECK(alert.value == 30.5 && kiri_str_eq_cstr(alert.sensor, "s1") && alert.has_uptime_ms);
    /* The reading plus `limit`, a 64-bit float. */
    double limit = 0;
    kiri_cbor c = kiri_cbor_make(mock.emits[0].payload, mock.emits[0].len);
    uint64_t pairs;
    bool indefinite;
    CHECK(kiri_cbor_read_map(&c, &pairs, &indefinite) && pairs == 6);
    for (uint64_t i = 0; i < pairs; i++) {
        kiri_str key = {NULL, 0};
        CHECK(kiri_cbor_read_text(&c, &key));
        if (kiri_str_eq_cstr(key, "limit")) {
            CHECK(kiri_cbor_read_number(&c, &limit));
        } else {
            CHECK(kiri_cbor_skip(&c));
        }
    }
    CHECK(limit == 30.0);
    CHECK(mock.n_logs == 0);
}

static void other_kinds_are_ignored_unless_configured(void) {
    mock_reset();
    mock_set_config("limit", "50");
    CHECK(run("humidity", 80.0) == 0);
    CHECK(mock.n_emits == 0);
    mock_set_config("kind", "humidity");
    CHECK(run("humidity", 80.0) == 0);
    CHECK(mock.n_emits == 1 && strcmp(mock.emits[0].topic, "alerts/s1/humidity") == 0);
    CHECK(run("temperature", 80.0) == 0);
    CHECK(mock.n_emits == 1);
}

static void a_missing_limit_is_a_clear_failure(void) {
    mock_reset();
    CHECK(run("temperature", 99.0) == 3);
    CHECK(mock.n_emits == 0);
    CHECK(mock.n_logs == 1 && mock.logs[0].level == KIRI_LOG_ERROR &&
          strcmp(mock.logs[0].text, "config key `limit` is missing or not a number") == 0);
    mock_reset();
    mock_set_config("limit", "thirty");
    CHECK(run("temperature", 99.0) == 3);
}

static void what_is_not_a_reading_is_logged_and_refused(void) {
    mock_reset();
    mock_set_config("limit", "30");
    CHECK(deliver("sensors/s1/x", "\x65hello", 6) == 1);
    CHECK(mock.n_logs == 1 && mock.logs[0].level == KIRI_LOG_WARN &&
          strcmp(mock.logs[0].text, "sensors/s1/x: not a reading: malformed") == 0);
    static const uint8_t no_sensor[] = {0xa1, 0x64, 'k', 'i', 'n', 'd', 0x61, 'k'};
    CHECK(deliver("sensors/s2/x", no_sensor, sizeof no_sensor) == 1);
    CHECK(mock.n_logs == 2 &&
          strcmp(mock.logs[1].text, "sensors/s2/x: not a reading: missing field `sensor`") == 0);
    CHECK(deliver("$timer", "", 0) == 1); /* an empty payload is not a reading either */
    /* JSON on a CBOR trigger is not a reading. */
    const char *json = "{\"sensor\":\"s1\",\"kind\":\"temperature\",\"value\":99,\"unit\":\"C\"}";
    CHECK(deliver("sensors/s1/x", json, strlen(json)) == 1);
    CHECK(mock.n_emits == 0);
}

static void alerts_are_the_bytes_the_rust_example_emits(void) {
    mock_reset();
    mock_set_config("limit", "15");
    CHECK(deliver("sensors/sim/temperature", RUST_SIM, sizeof RUST_SIM) == 0);
    CHECK(mock.n_emits == 1 && strcmp(mock.emits[0].topic, "alerts/sim/temperature") == 0);
    CHECK(mock.emits[0].len == sizeof RUST_ALERT &&
          memcmp(mock.emits[0].payload, RUST_ALERT, sizeof RUST_ALERT) == 0);
}

static void json_readings_alert_the_same(void) {
    const char *json = "{\"sensor\":\"sim\",\"kind\":\"temperature\",\"value\":20.78,\"unit\":\"C\","
                       "\"ts\":1796428204902,\"uptime_ms\":0,\"seq\":1796428204902000,"
                       "\"linkquality\":120}";
    /* The gateway says JSON (a trigger with format = "json"). */
    mock_reset();
    mock_set_config("limit", "15");
    mock.input_format = KIRI_FORMAT_JSON;
    CHECK(deliver("json/sim/temperature", json, strlen(json)) == 0);
    CHECK(mock.n_emits == 1 && strcmp(mock.emits[0].topic, "alerts/sim/temperature") == 0);
    CHECK(mock.emits[0].len == sizeof RUST_ALERT &&
          memcmp(mock.emits[0].payload, RUST_ALERT, sizeof RUST_ALERT) == 0);
    /* A text or bytes trigger: found by its first character. */
    mock.input_format = KIRI_FORMAT_TEXT;
    char spaced[512];
    snprintf(spaced, sizeof spaced, " \n%s", json);
    CHECK(deliver("text/sim", spaced, strlen(spaced)) == 0);
    mock.input_format = KIRI_FORMAT_BYTES;
    CHECK(deliver("bytes/sim", json, strlen(json)) == 0);
    CHECK(mock.n_emits == 3 && memcmp(mock.emits[2].payload, RUST_ALERT, sizeof RUST_ALERT) == 0);
    /* Escaped text, unescaped into the topic. */
    const char *esc = "{\"sensor\":\"z\\u0031\",\"kind\":\"temperature\",\"value\":21.25,\"unit\":\"C\"}";
    mock.input_format = KIRI_FORMAT_JSON;
    CHECK(deliver("json/z1/temperature", esc, strlen(esc)) == 0);
    CHECK(mock.n_emits == 4 && strcmp(mock.emits[3].topic, "alerts/z1/temperature") == 0);
    /* At or below the limit, and malformed JSON. */
    const char *cold = "{\"sensor\":\"z2\",\"kind\":\"temperature\",\"value\":15,\"unit\":\"C\"}";
    CHECK(deliver("json/z2/temperature", cold, strlen(cold)) == 0);
    CHECK(mock.n_emits == 4);
    CHECK(deliver("json/z2/temperature", "{\"sensor\":", 10) == 1);
    /* A Zigbee2MQTT message is JSON but not a reading. */
    const char *z2m = "{\"temperature\":21.5,\"humidity\":40}";
    CHECK(deliver("zigbee2mqtt/room", z2m, strlen(z2m)) == 1);
}

static void too_big_and_refused_alerts_fail(void) {
    mock_reset();
    mock_set_config("limit", "0");
    /* A sensor name that leaves the alert over its 512-byte buffer. */
    char name[480];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    kiri_reading r;
    memset(&r, 0, sizeof r);
    r.sensor = kiri_str_from(name);
    r.kind = kiri_str_from("temperature");
    r.unit = kiri_str_from("C");
    r.value = 1;
    uint8_t buf[600];
    size_t n = kiri_reading_encode(&r, NULL, 0, buf, sizeof buf);
    CHECK(n > 0 && deliver("sensors/n/temperature", buf, n) == 2);
    CHECK(mock.n_emits == 0);
    /* The host refuses the emit (the function's emit allow-list): its code is the result. */
    mock.emit_result = KIRI_DENIED;
    CHECK(run("temperature", 5.0) == KIRI_DENIED);
}

static void the_exports_follow_the_abi(void) {
    CHECK(kiri_abi_version() == 1);
    CHECK(kiri_alloc(KIRI_EVENT_BUF_SIZE) != NULL);
    CHECK(kiri_alloc(KIRI_EVENT_BUF_SIZE + 1) == NULL);
    CHECK(kiri_alloc(-1) == NULL);
}

int main(void) {
    only_readings_above_the_limit_raise_alerts();
    other_kinds_are_ignored_unless_configured();
    a_missing_limit_is_a_clear_failure();
    what_is_not_a_reading_is_logged_and_refused();
    alerts_are_the_bytes_the_rust_example_emits();
    json_readings_alert_the_same();
    too_big_and_refused_alerts_fail();
    the_exports_follow_the_abi();
    printf("test_threshold: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
