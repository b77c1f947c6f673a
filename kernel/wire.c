#include "wire.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

void kn_signer_init(kn_signer *s, unsigned char *key, size_t len) {
    s->key = key;
    s->len = len;
    s->keyed = len > 0;
    /* The init/update/final form accepts any key length (Jupyter keys are 36-64 chars). */
    if (s->keyed) crypto_auth_hmacsha256_init(&s->st, key, len);
}

void kn_sign(const kn_signer *s, const kn_frame f[4], char hex[65]) {
    if (!s || s->len == 0) { hex[0] = 0; return; }
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    if (s->keyed) st = s->st;   /* the key blocks are already hashed: two compressions saved */
    else crypto_auth_hmacsha256_init(&st, s->key, s->len);
    for (int i = 0; i < 4; i++) crypto_auth_hmacsha256_update(&st, f[i].data, f[i].len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, 65, mac, sizeof mac);
}

static json_t *parse_object(const kn_frame *f, const char *what, char *errbuf, size_t cap) {
    if (f->len == 2 && f->data[0] == '{' && f->data[1] == '}') return json_object();   /* most parents and metadata */
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
    m->header_text = malloc(body[0].len + 1);
    if (!m->header_text) {
        snprintf(errbuf, cap, "out of memory");
        kn_msg_free(m);
        return -1;
    }
    memcpy(m->header_text, body[0].data, body[0].len);
    m->header_text[body[0].len] = 0;
    m->header_len = body[0].len;
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
    free(m->idents); free(m->buffers); free(m->header_text);
    memset(m, 0, sizeof *m);
}

void kn_reply_type(const char *t, char *out, size_t cap) {
    size_t n = strlen(t);
    if (n > 8 && !strcmp(t + n - 8, "_request"))
        snprintf(out, cap, "%.*s_reply", (int)(n - 8), t);
    else
        snprintf(out, cap, "%s_reply", t);
}

/* The seconds part is formatted once per second per thread; only the microseconds change. */
void kn_iso_now(char out[40]) {
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[24];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        if (strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm) != 19) return (void)snprintf(out, 40, "1970-01-01T00:00:00.000000Z");
        cached_sec = ts.tv_sec;
    }
    memcpy(out, cached, 19);
    long us = ts.tv_nsec / 1000;
    out[19] = '.';
    for (int i = 25; i >= 20; i--) { out[i] = (char)('0' + us % 10); us /= 10; }
    out[26] = 'Z';
    out[27] = 0;
}

void kn_uuid(char out[37]) {
    unsigned char b[16];
    randombytes_buf(b, sizeof b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    static const char hexd[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hexd[b[i] >> 4];
        *o++ = hexd[b[i] & 15];
    }
    *o = 0;
}

/* ---------- writing ---------- */

void kn_buf_init(kn_buf *b) {
    b->p = b->inl;
    b->len = 0;
    b->cap = sizeof b->inl;
    b->oom = 0;
}

void kn_buf_free(kn_buf *b) {
    if (b->p != b->inl) free(b->p);
    kn_buf_init(b);
}

static int buf_room(kn_buf *b, size_t n) {
    if (b->oom) return 0;
    if (b->len + n <= b->cap) return 1;
    size_t cap = b->cap * 2;
    while (cap < b->len + n) cap *= 2;
    char *p = b->p == b->inl ? malloc(cap) : realloc(b->p, cap);
    if (!p) { b->oom = 1; return 0; }
    if (b->p == b->inl) memcpy(p, b->inl, b->len);
    b->p = p;
    b->cap = cap;
    return 1;
}

void kn_buf_put(kn_buf *b, const void *data, size_t n) {
    if (!buf_room(b, n)) return;
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void kn_buf_puts(kn_buf *b, const char *s) { kn_buf_put(b, s, strlen(s)); }

void kn_buf_jstr(kn_buf *b, const char *s, size_t n) {
    static const char hexd[] = "0123456789abcdef";
    kn_buf_puts(b, "\"");
    size_t run = 0;   /* bytes copied as they are, written in one go */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        kn_buf_put(b, s + run, i - run);
        run = i + 1;
        char e[6] = {'\\', 0};
        size_t en = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        default:
            e[1] = 'u'; e[2] = '0'; e[3] = '0'; e[4] = hexd[c >> 4]; e[5] = hexd[c & 15];
            en = 6;
        }
        kn_buf_put(b, e, en);
    }
    kn_buf_put(b, s + run, n - run);
    kn_buf_puts(b, "\"");
}

/* Decimal digits of v at the end of t[24]; returns where they start. (snprintf costs more
 * than the rest of a header.) */
static char *utoa_end(unsigned long long v, char t[24]) {
    char *p = t + 24;
    do { *--p = (char)('0' + v % 10); v /= 10; } while (v);
    return p;
}

void kn_buf_int(kn_buf *b, long long v) {
    char t[24];
    if (v < 0) kn_buf_put(b, "-", 1);
    char *d = utoa_end(v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v, t);
    kn_buf_put(b, d, (size_t)(t + 24 - d));
}

static int dump_cb(const char *data, size_t n, void *arg) {
    kn_buf *b = arg;
    kn_buf_put(b, data, n);
    return b->oom ? -1 : 0;
}

void kn_buf_json(kn_buf *b, json_t *v) {
    if (!v) { kn_buf_puts(b, "{}"); return; }
    if (json_dump_callback(v, dump_cb, b, JSON_COMPACT | JSON_ENCODE_ANY)) b->oom = 1;
}

void kn_ids_init(kn_ids *ids) {
    kn_uuid(ids->session);
    ids->prefix_len = (size_t)snprintf(ids->prefix, sizeof ids->prefix, "%s_%d_", ids->session, (int)getpid());
    atomic_store(&ids->next, 1);
}

void kn_out_start(kn_out *o, kn_ids *ids, const char *msg_type, const char *parent, size_t parent_len) {
    kn_buf *b = &o->b;
    kn_buf_init(b);
    o->msg_type = msg_type;
    char n[24], date[40];
    char *d = utoa_end(atomic_fetch_add(&ids->next, 1), n);
    kn_iso_now(date);
    kn_buf_puts(b, "{\"msg_id\":\"");
    kn_buf_put(b, ids->prefix, ids->prefix_len);
    kn_buf_put(b, d, (size_t)(n + 24 - d));
    kn_buf_puts(b, "\",\"session\":\"");
    kn_buf_put(b, ids->session, 36);
    kn_buf_puts(b, "\",\"username\":\"kernel\",\"date\":\"");
    kn_buf_put(b, date, 27);
    kn_buf_puts(b, "\",\"msg_type\":");
    kn_buf_jstr(b, msg_type, strlen(msg_type));
    kn_buf_puts(b, ",\"version\":\"" KN_PROTOCOL_VERSION "\"}");
    o->end[0] = b->len;
    if (parent) kn_buf_put(b, parent, parent_len);
    else kn_buf_puts(b, "{}");
    o->end[1] = b->len;
    kn_buf_puts(b, "{}");
    o->end[2] = b->len;
}

int kn_out_finish(kn_out *o, const kn_signer *s, kn_frame f[4], char hex[65]) {
    if (o->b.oom) return -1;
    o->end[3] = o->b.len;
    size_t start = 0;
    for (int i = 0; i < 4; i++) {
        f[i] = (kn_frame){(unsigned char *)o->b.p + start, o->end[i] - start};
        start = o->end[i];
    }
    kn_sign(s, f, hex);
    return 0;
}

void kn_out_free(kn_out *o) { kn_buf_free(&o->b); }
