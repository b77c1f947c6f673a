/* libFuzzer target: the wire parser (kn_msg_parse) and the connection-file parser.
 * Input: byte 0 picks the mode; the rest is split into frames at each "\n--\n".
 *   mode & 3 == 0: signed with key "fuzz"; the signature frame is recomputed half the time
 *                  (mode & 4) so the fuzzer reaches the JSON parsing behind it
 *   mode & 3 == 1: no key
 *   mode & 3 == 2: the whole rest is a connection file */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0];
    data++, size--;
    if ((mode & 3) == 2) {
        kn_conn c;
        char err[256];
        if (kn_conn_parse((const char *)data, size, &c, err, sizeof err) == 0) kn_conn_free(&c);
        return 0;
    }
    kn_frame f[64];
    size_t n = 0, start = 0;
    for (size_t i = 0; i + 4 <= size && n < 63; i++) {
        if (memcmp(data + i, "\n--\n", 4)) continue;
        f[n++] = (kn_frame){(unsigned char *)data + start, i - start};
        start = i + 4;
        i += 3;
    }
    f[n++] = (kn_frame){(unsigned char *)data + start, size - start};
    kn_signer s = {.key = (unsigned char *)"fuzz", .len = (mode & 3) == 0 ? 4 : 0};
    char hex[65];
    if ((mode & 4) && s.len) {
        for (size_t d = 0; d + 6 <= n; d++) {
            if (f[d].len == 9 && !memcmp(f[d].data, KN_DELIM, 9)) {
                kn_sign(&s, f + d + 2, hex);
                f[d + 1] = (kn_frame){(unsigned char *)hex, 64};
                break;
            }
        }
    }
    kn_msg m;
    char err[256];
    int rc = kn_msg_parse(&s, f, n, &m, err, sizeof err);
    if (rc == 0 || rc == -2) kn_msg_free(&m);   /* -2: header and identities are kept */
    return 0;
}
