/* wire.h — Jupyter wire format: framing and HMAC signing of messages.
 *
 * A message on a ROUTER socket is a list of ZeroMQ frames:
 *
 *   [ident_0 … ident_k]    routing identities (opaque bytes, zero or more)
 *   "<IDS|MSG>"            delimiter
 *   signature              lowercase hex HMAC-SHA256 over the next four frames, "" if no key
 *   header                 JSON object: msg_id, session, username, date, msg_type, version
 *   parent_header          JSON object ({} when none)
 *   metadata               JSON object
 *   content                JSON object
 *   [buffer_0 …]           raw extra buffers (not signed)
 *
 * On IOPub the identities are one topic frame ("stream.stdout", "status", …).
 * The signature covers the exact bytes received, so verification happens on the raw
 * frames before any JSON is parsed; on send we sign the bytes we are about to send. */
#ifndef KN_WIRE_H
#define KN_WIRE_H
#include <stddef.h>
#include <jansson.h>
#include <sodium.h>
#include <stdatomic.h>

#define KN_DELIM "<IDS|MSG>"
#define KN_PROTOCOL_VERSION "5.5"

typedef struct {
    unsigned char *data;
    size_t len;
} kn_frame;

typedef struct {
    kn_frame *idents;  size_t n_idents;   /* routing identities (owned) */
    json_t *header, *parent, *metadata, *content;   /* owned references */
    char *header_text; size_t header_len; /* the header frame as received (echoed as parent) */
    kn_frame *buffers; size_t n_buffers;  /* owned */
    const char *msg_type;                 /* borrowed from header */
} kn_msg;

/* The signing key; len 0 means messages are neither signed nor checked. kn_signer_init
 * hashes the key blocks once (keyed = 1); every signature then starts from a copy of that
 * state. A signer written as {key, len} still works, hashing the key each time. */
typedef struct {
    unsigned char *key;
    size_t len;
    int keyed;
    crypto_auth_hmacsha256_state st;
} kn_signer;

void kn_signer_init(kn_signer *s, unsigned char *key, size_t len);

/* hex (65 bytes incl. NUL) = HMAC-SHA256(key, f[0] ‖ f[1] ‖ f[2] ‖ f[3]), or "" without key. */
void kn_sign(const kn_signer *s, const kn_frame f[4], char hex[65]);

/* Parse frames into *m. Returns 0; or -1 with a reason in errbuf (no delimiter, fewer than
 * five frames after it, bad signature, bad header): drop the message; or -2 when the header
 * is good but parent_header, metadata or content is not a JSON object: m->header,
 * m->header_text and m->idents are set (the rest may be NULL) so the sender can be told;
 * kn_msg_free it. The frames are not consumed (the caller frees them). */
int kn_msg_parse(const kn_signer *s, kn_frame *frames, size_t n, kn_msg *m,
                 char *errbuf, size_t errcap);
void kn_msg_free(kn_msg *m);

/* ---------- writing messages ----------
 *
 * Outgoing messages are written as JSON text straight into one buffer, without building
 * jansson trees for the fixed parts: the header is printed, the parent header is the
 * request's header frame echoed byte for byte, metadata is {}; only the content may come
 * from a jansson value. */

/* A growing byte buffer; the first KN_BUF_INLINE bytes live inside it (do not copy one).
 * After a failed allocation `oom` is set and further writes are ignored. */
#define KN_BUF_INLINE 2048
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
    char inl[KN_BUF_INLINE];
} kn_buf;

void kn_buf_init(kn_buf *b);
void kn_buf_free(kn_buf *b);
void kn_buf_put(kn_buf *b, const void *data, size_t n);
void kn_buf_puts(kn_buf *b, const char *s);
/* A JSON string literal (quotes included) for n bytes of UTF-8, escaped as JSON requires. */
void kn_buf_jstr(kn_buf *b, const char *s, size_t n);
void kn_buf_int(kn_buf *b, long long v);
/* v as compact JSON (any value); NULL writes {}. */
void kn_buf_json(kn_buf *b, json_t *v);

/* Message ids: "<session>_<pid>_<n>" with n counting up from 1, as jupyter_client does.
 * The session is a random UUID4 drawn at start-up, so ids are unique across kernels and
 * restarts without drawing randomness for every message. The counter is atomic: every
 * thread publishes. */
typedef struct {
    char session[37];
    char prefix[64];
    size_t prefix_len;
    _Atomic unsigned long long next;
} kn_ids;

/* A fresh random session and its id prefix. */
void kn_ids_init(kn_ids *ids);

/* One outgoing message: header, parent_header, metadata and content, one after another in
 * b; end[i] is where frame i ends. */
typedef struct {
    kn_buf b;
    size_t end[4];
    const char *msg_type;
} kn_out;

/* Write the header (a new msg_id, the current time), the parent header (the raw JSON text
 * of the request's header; NULL: {}) and empty metadata; the caller then writes the
 * content into o->b. msg_type must stay valid until the message is sent. */
void kn_out_start(kn_out *o, kn_ids *ids, const char *msg_type, const char *parent, size_t parent_len);
/* Close the content, fill the four frames (pointing into o->b) and sign them.
 * Returns -1 when memory ran out (nothing to send). */
int kn_out_finish(kn_out *o, const kn_signer *s, kn_frame f[4], char hex[65]);
void kn_out_free(kn_out *o);

/* "execute_request" → "execute_reply"; anything else gets "_reply" appended. */
void kn_reply_type(const char *request_type, char *out, size_t cap);

/* ISO 8601 UTC time with microseconds: "2026-11-27T23:59:59.123456Z" (27 chars + NUL). */
void kn_iso_now(char out[40]);

/* A random UUID4 string (37 bytes incl. NUL). */
void kn_uuid(char out[37]);

#endif
