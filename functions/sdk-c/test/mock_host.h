/*
 * mock_host: the kiri imports for native tests. kiri.h declares them as plain functions when
 * not built for wasm; mock_host.c defines them against an in-memory host that records what
 * the function does (emits, publishes, logs, responses, key-value writes) and serves the
 * configuration and input format a test sets.
 */
#ifndef MOCK_HOST_H
#define MOCK_HOST_H

#include "kiri.h"

#define MOCK_MAX 64

typedef struct mock_output {
    char topic[KIRI_MAX_TOPIC_BYTES + 1];
    uint8_t payload[4096];
    size_t len;
} mock_output;

typedef struct mock_log_line {
    int32_t level;
    char text[4097];
} mock_log_line;

typedef struct mock_state {
    mock_output emits[MOCK_MAX];
    int n_emits;
    mock_output publishes[MOCK_MAX];
    int n_publishes;
    mock_log_line logs[MOCK_MAX];
    int n_logs;
    uint8_t response[4096];
    size_t response_len;
    int32_t input_format;
    int32_t emit_result; /* returned by emit instead of recording when negative */
    int64_t now_ms;
    const char *config_json; /* what config_json returns for any key; NULL: not found */
    const char *http_request; /* what http_request returns; NULL: not an HTTP call */
    int32_t http_status;      /* what http_response last set */
    char http_headers[1024];
} mock_state;

extern mock_state mock;

/* Clears everything: outputs, configuration, state; input format CBOR. */
void mock_reset(void);
/* Sets (or, with value NULL, removes) a configuration value. */
void mock_set_config(const char *key, const char *value);
/* A value from the key-value state, NULL if absent. */
const uint8_t *mock_kv(const char *key, size_t *len);

#endif
