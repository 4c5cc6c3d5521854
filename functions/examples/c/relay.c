/*
 * relay: a Kiri function in plain C against docs/writing-functions.md (no SDK, no libc).
 *
 * Forwards each payload unchanged to the cloud on "<prefix>/<input topic>" (config `prefix`,
 * default "relay"), and counts the events it relayed in its key-value state (key "count",
 * a little-endian u32), logging every 100th.
 *
 * Build (what `make functions-c` runs):
 *   clang --target=wasm32 -nostdlib -O2 -Wl,--no-entry -Wl,--export=kiri_abi_version \
 *     -Wl,--export=kiri_alloc -Wl,--export=kiri_on_event -o relay.wasm relay.c
 */
#define IMPORT(name) __attribute__((import_module("kiri"), import_name(name)))

IMPORT("emit") int kiri_emit(const char *topic, int topic_len, const char *payload, int payload_len);
IMPORT("log") void kiri_log(int level, const char *msg, int msg_len);
IMPORT("config") int kiri_config(const char *key, int key_len, char *out, int out_cap);
IMPORT("kv_get") int kiri_kv_get(const char *key, int key_len, char *out, int out_cap);
IMPORT("kv_put") int kiri_kv_put(const char *key, int key_len, const char *val, int val_len);

enum { LOG_INFO = 2, ERR_TOO_BIG = 1, ERR_EMIT = 2 };

/* One buffer for the event the host writes in; events larger than this fail cleanly. */
static char event_buf[256 * 1024 + 2048];
static char topic_buf[1024];

int kiri_abi_version(void) { return 1; }

int kiri_alloc(int len) {
    return len >= 0 && len <= (int)sizeof event_buf ? (int)event_buf : 0;
}

static int copy(char *dst, int at, int cap, const char *src, int n) {
    for (int i = 0; i < n && at < cap; i++) dst[at++] = src[i];
    return at;
}

static int fmt_u32(char *dst, unsigned v) {
    char tmp[10];
    int n = 0, i = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) dst[i++] = tmp[--n];
    return i;
}

int kiri_on_event(const char *topic, int topic_len, const char *payload, int payload_len,
                  long long received_at_ms) {
    (void)received_at_ms;
    char prefix[64];
    int prefix_len = kiri_config("prefix", 6, prefix, sizeof prefix);
    if (prefix_len < 0 || prefix_len > (int)sizeof prefix) {
        prefix_len = copy(prefix, 0, sizeof prefix, "relay", 5);
    }
    if (prefix_len + 1 + topic_len > (int)sizeof topic_buf) return ERR_TOO_BIG;
    int n = copy(topic_buf, 0, sizeof topic_buf, prefix, prefix_len);
    n = copy(topic_buf, n, sizeof topic_buf, "/", 1);
    n = copy(topic_buf, n, sizeof topic_buf, topic, topic_len);
    if (kiri_emit(topic_buf, n, payload, payload_len) < 0) return ERR_EMIT;

    unsigned count = 0;
    unsigned char raw[4];
    if (kiri_kv_get("count", 5, (char *)raw, 4) == 4) {
        count = raw[0] | raw[1] << 8 | raw[2] << 16 | (unsigned)raw[3] << 24;
    }
    count++;
    raw[0] = count; raw[1] = count >> 8; raw[2] = count >> 16; raw[3] = count >> 24;
    kiri_kv_put("count", 5, (const char *)raw, 4);
    if (count % 100 == 0) {
        char line[32];
        int m = copy(line, 0, sizeof line, "relayed ", 8);
        m += fmt_u32(line + m, count);
        kiri_log(LOG_INFO, line, m);
    }
    return 0;
}
