#include "wire.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

void kn_sign(const kn_signer *s, const kn_frame f[4], char hex[65]) {
    if (!s || s->len == 0) { hex[0] = 0; return; }
    /* The init/update/final form accepts any key length (Jupyter keys are 36-64 chars). */
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, s->key, s->len);
    for (int i = 0; i < 4; i++) crypto_auth_hmacsha256_update(&st, f[i].data, f[i].len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, 65, mac, sizeof mac);
}

static json_t *parse_object(const kn_frame *f, const char *what, char *errbuf, size_t cap) {
    json_error_t e;
    json_t *j = json_loadb((const char *)f->data, f->len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    if (!j) {
        snprintf(errbuf, cap, "invalid JSON in %s: %s", what, e.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        snprintf(errbuf, cap, "%s is not a JSON object", what);
        json_decref(j);
        return NULL;
    }
    return j;
}

static int copy_frames(kn_frame **dst, const kn_frame *src, size_t n) {
    *dst = NULL;
    if (n == 0) return 0;
    *dst = calloc(n, sizeof **dst);
    if (!*dst) return -1;
    for (size_t i = 0; i < n; i++) {
        (*dst)[i].data = malloc(src[i].len ? src[i].len : 1);
        if (!(*dst)[i].data) return -1;
        memcpy((*dst)[i].data, src[i].data, src[i].len);
        (*dst)[i].len = src[i].len;
    }
    return 0;
}

int kn_msg_parse(const kn_signer *s, kn_frame *frames, size_t n, kn_msg *m,
                 char *errbuf, size_t cap) {
    memset(m, 0, sizeof *m);
    size_t d = 0;
    while (d < n && !(frames[d].len == strlen(KN_DELIM) && !memcmp(frames[d].data, KN_DELIM, frames[d].len)))
        d++;
    if (d == n) { snprintf(errbuf, cap, "no <IDS|MSG> delimiter in %zu frames", n); return -1; }
    if (n - d - 1 < 5) {
        snprintf(errbuf, cap, "truncated message: %zu frames after the delimiter, need 5", n - d - 1);
        return -1;
    }
    kn_frame *sig = &frames[d + 1], *body = &frames[d + 2];
    if (s && s->len) {
        char want[65];
        kn_sign(s, body, want);
        if (sig->len != 64 || sodium_memcmp(sig->data, want, 64) != 0) {
            snprintf(errbuf, cap, "invalid signature");
            return -1;
        }
    }
    m->header = parse_object(&body[0], "header", errbuf, cap);
    if (!m->header) return -1;
    m->msg_type = json_string_value(json_object_get(m->header, "msg_type"));
    if (!m->msg_type || !json_is_string(json_object_get(m->header, "msg_id"))) {
        snprintf(errbuf, cap, "header lacks msg_type or msg_id");
        kn_msg_free(m);
        return -1;
    }
    if (copy_frames(&m->idents, frames, d)) {
        snprintf(errbuf, cap, "out of memory");
        kn_msg_free(m);
        return -1;
    }
    m->n_idents = d;
    /* From here on the sender is known: a bad body is answered, not silently dropped. */
    static const char *names[3] = {"parent_header", "metadata", "content"};
    json_t **dst[3] = {&m->parent, &m->metadata, &m->content};
    for (int i = 0; i < 3; i++) {
        *dst[i] = parse_object(&body[i + 1], names[i], errbuf, cap);
        if (!*dst[i]) return -2;
    }
    if (copy_frames(&m->buffers, frames + d + 6, n - d - 6)) {
        snprintf(errbuf, cap, "out of memory");
        return -2;
    }
    m->n_buffers = n - d - 6;
    return 0;
}

void kn_msg_free(kn_msg *m) {
    json_decref(m->header); json_decref(m->parent);
    json_decref(m->metadata); json_decref(m->content);
    for (size_t i = 0; i < m->n_idents; i++) free(m->idents ? m->idents[i].data : NULL);
    for (size_t i = 0; i < m->n_buffers; i++) free(m->buffers ? m->buffers[i].data : NULL);
    free(m->idents); free(m->buffers);
    memset(m, 0, sizeof *m);
}

int kn_msg_encode(const kn_signer *s, json_t *header, json_t *parent, json_t *metadata,
                  json_t *content, kn_frame out[4], char hex[65]) {
    json_t *parts[4] = {header, parent, metadata, content};
    for (int i = 0; i < 4; i++) {
        char *txt = json_dumps(parts[i] ? parts[i] : json_object(), JSON_COMPACT | JSON_ENCODE_ANY);
        if (!txt) {
            for (int k = 0; k < i; k++) free(out[k].data);
            return -1;
        }
        out[i].data = (unsigned char *)txt;
        out[i].len = strlen(txt);
    }
    kn_sign(s, out, hex);
    return 0;
}

void kn_reply_type(const char *t, char *out, size_t cap) {
    size_t n = strlen(t);
    if (n > 8 && !strcmp(t + n - 8, "_request"))
        snprintf(out, cap, "%.*s_reply", (int)(n - 8), t);
    else
        snprintf(out, cap, "%s_reply", t);
}

void kn_iso_now(char out[40]) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 40, "%s.%06ldZ", base, ts.tv_nsec / 1000);
}

void kn_uuid(char out[37]) {
    unsigned char b[16];
    randombytes_buf(b, sizeof b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

json_t *kn_header_new(const char *msg_type, const char *session, const char *username) {
    char id[37], date[40];
    kn_uuid(id);
    kn_iso_now(date);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "msg_id", id, "session", session,
                     "username", username, "date", date, "msg_type", msg_type,
                     "version", KN_PROTOCOL_VERSION);
}
