/*
 * A link test, not run: code for which clang emits calls to memcpy, memset, memcmp, memmove
 * and strlen (struct copies, zeroed arrays, explicit calls). Built freestanding by
 * `make test-c-sdk` (clang --target=wasm32 -nostdlib), it links only because kiri.h defines
 * those functions for freestanding builds: without them wasm-ld fails with "undefined symbol:
 * memcmp" and the like (build it with -DKIRI_NO_LIBC_SHIMS to see).
 */
#include "kiri.h"

struct big {
    char b[300];
};
static struct big g1, g2;
static char copy[1024];

static int on_event(const kiri_event *ev) {
    char zero[512] = {0}; /* memset */
    struct big local = g1; /* memcpy */
    g2 = local;
    size_t n = ev->topic.len < sizeof copy ? ev->topic.len : sizeof copy;
    memcpy(copy, ev->topic.ptr, n); /* memcpy of a variable length */
    if (n > ev->payload_len) n = ev->payload_len;
    if (memcmp(ev->payload, copy, n) == 0) return 1; /* memcmp */
    if (memcmp(ev->payload, copy, n) < 0) return 2;
    memmove(zero + 1, zero, n % 500);
    return zero[ev->payload_len % sizeof zero] + (int)strlen(copy) + g2.b[n % sizeof g2.b];
}

KIRI_EXPORTS(on_event);
