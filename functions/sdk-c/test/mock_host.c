/* The kiri imports for native tests: see mock_host.h. */
#include "mock_host.h"

#include <assert.h>
#include <string.h>

mock_state mock;

#define MAX_ENTRIES 64

typedef struct entry {
    bool used;
    char key[KIRI_MAX_KEY_BYTES + 1];
    size_t key_len;
    uint8_t value[512];
    size_t len;
} entry;

static entry config[MAX_ENTRIES];
static entry kv[MAX_ENTRIES];

void mock_reset(void) {
    memset(&mock, 0, sizeof mock);
    memset(config, 0, sizeof config);
    memset(kv, 0, sizeof kv);
    mock.input_format = KIRI_FORMAT_CBOR;
}

static entry *find(entry *table, const void *key, size_t len) {
    for (int i = 0; i < MAX_ENTRIES; i++) {
        if (table[i].used && table[i].key_len == len && memcmp(table[i].key, key, len) == 0) {
            return &table[i];
        }
    }
    return NULL;
}

static entry *insert(entry *table, const void *key, size_t len) {
    entry *e = find(table, key, len);
    for (int i = 0; !e && i < MAX_ENTRIES; i++) {
        if (!table[i].used) e = &table[i];
    }
    assert(e && len <= KIRI_MAX_KEY_BYTES);
    e->used = true;
    memcpy(e->key, key, len);
    e->key_len = len;
    return e;
}

void mock_set_config(const char *key, const char *value) {
    entry *e = find(config, key, strlen(key));
    if (!value) {
        if (e) e->used = false;
        return;
    }
    e = insert(config, key, strlen(key));
    assert(strlen(value) <= sizeof e->value);
    memcpy(e->value, value, strlen(value));
    e->len = strlen(value);
}

const uint8_t *mock_kv(const char *key, size_t *len) {
    entry *e = find(kv, key, strlen(key));
    if (!e) return NULL;
    *len = e->len;
    return e->value;
}

static int32_t read_entry(entry *table, const void *key, int32_t key_len, void *out,
                          int32_t cap) {
    entry *e = find(table, key, (size_t)key_len);
    if (!e) return KIRI_NOT_FOUND;
    memcpy(out, e->value, e->len < (size_t)cap ? e->len : (size_t)cap);
    return (int32_t)e->len;
}

static int32_t output(mock_output *list, int *n, const char *topic, int32_t topic_len,
                      const void *payload, int32_t len) {
    if (topic_len <= 0) return KIRI_INVALID;
    if (topic_len > KIRI_MAX_TOPIC_BYTES) return KIRI_TOO_LARGE;
    if (*n == MOCK_MAX) return KIRI_LIMIT;
    assert((size_t)len <= sizeof list[*n].payload);
    memcpy(list[*n].topic, topic, (size_t)topic_len);
    list[*n].topic[topic_len] = '\0';
    memcpy(list[*n].payload, payload, (size_t)len);
    list[*n].len = (size_t)len;
    (*n)++;
    return KIRI_OK;
}

int32_t kiri_emit(const char *topic, int32_t topic_len, const void *payload,
                  int32_t payload_len) {
    if (mock.emit_result < 0) return mock.emit_result;
    return output(mock.emits, &mock.n_emits, topic, topic_len, payload, payload_len);
}

int32_t kiri_publish(const char *topic, int32_t topic_len, const void *payload,
                     int32_t payload_len) {
    return output(mock.publishes, &mock.n_publishes, topic, topic_len, payload, payload_len);
}

int32_t kiri_respond(const void *body, int32_t body_len) {
    assert((size_t)body_len <= sizeof mock.response);
    memcpy(mock.response, body, (size_t)body_len);
    mock.response_len = (size_t)body_len;
    return KIRI_OK;
}

void kiri_log(int32_t level, const char *msg, int32_t msg_len) {
    assert(mock.n_logs < MOCK_MAX && msg_len >= 0 && msg_len <= 4096);
    mock.logs[mock.n_logs].level = level;
    memcpy(mock.logs[mock.n_logs].text, msg, (size_t)msg_len);
    mock.logs[mock.n_logs].text[msg_len] = '\0';
    mock.n_logs++;
}

int64_t kiri_now_ms(void) { return mock.now_ms; }

int32_t kiri_config(const char *key, int32_t key_len, char *out, int32_t out_cap) {
    return read_entry(config, key, key_len, out, out_cap);
}

int32_t kiri_kv_get(const void *key, int32_t key_len, void *out, int32_t out_cap) {
    if (key_len <= 0 || key_len > KIRI_MAX_KEY_BYTES) return KIRI_INVALID;
    return read_entry(kv, key, key_len, out, out_cap);
}

int32_t kiri_kv_put(const void *key, int32_t key_len, const void *value, int32_t value_len) {
    if (key_len <= 0 || key_len > KIRI_MAX_KEY_BYTES) return KIRI_INVALID;
    if ((size_t)value_len > sizeof kv[0].value) return KIRI_TOO_LARGE;
    entry *e = insert(kv, key, (size_t)key_len);
    memcpy(e->value, value, (size_t)value_len);
    e->len = (size_t)value_len;
    return KIRI_OK;
}

int32_t kiri_kv_delete(const void *key, int32_t key_len) {
    entry *e = find(kv, key, (size_t)key_len);
    if (e) e->used = false;
    return KIRI_OK;
}

/* The matching keys in table order (the gateway sorts them; the tests do not rely on it). */
int32_t kiri_kv_list(const void *prefix, int32_t prefix_len, void *out, int32_t out_cap) {
    uint8_t *o = out;
    size_t n = 0;
    for (int i = 0; i < MAX_ENTRIES; i++) {
        entry *e = &kv[i];
        if (!e->used || e->key_len < (size_t)prefix_len ||
            memcmp(e->key, prefix, (size_t)prefix_len) != 0) {
            continue;
        }
        uint8_t head[2] = {(uint8_t)(e->key_len >> 8), (uint8_t)e->key_len};
        for (size_t k = 0; k < 2 + e->key_len; k++, n++) {
            if (n < (size_t)out_cap) o[n] = k < 2 ? head[k] : (uint8_t)e->key[k - 2];
        }
    }
    return (int32_t)n;
}

int32_t kiri_caller(char *out, int32_t out_cap) {
    (void)out;
    (void)out_cap;
    return KIRI_NOT_FOUND;
}

int32_t kiri_input_format(void) { return mock.input_format; }

static int32_t answer(const char *value, char *out, int32_t out_cap) {
    if (!value) return KIRI_NOT_FOUND;
    size_t n = strlen(value);
    memcpy(out, value, n < (size_t)out_cap ? n : (size_t)out_cap);
    return (int32_t)n;
}

int32_t kiri_config_json(const char *key, int32_t key_len, char *out, int32_t out_cap) {
    (void)key;
    (void)key_len;
    return answer(mock.config_json, out, out_cap);
}

int32_t kiri_http_request(char *out, int32_t out_cap) {
    return answer(mock.http_request, out, out_cap);
}

int32_t kiri_http_response(int32_t status, const char *headers, int32_t headers_len) {
    if (status < 200 || status > 599 || headers_len < 0 ||
        (size_t)headers_len >= sizeof mock.http_headers) {
        return KIRI_INVALID;
    }
    mock.http_status = status;
    memcpy(mock.http_headers, headers, (size_t)headers_len);
    mock.http_headers[headers_len] = 0;
    return KIRI_OK;
}
