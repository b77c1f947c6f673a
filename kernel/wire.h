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

#define KN_DELIM "<IDS|MSG>"
#define KN_PROTOCOL_VERSION "5.5"

typedef struct {
    unsigned char *data;
    size_t len;
} kn_frame;

typedef struct {
    kn_frame *idents;  size_t n_idents;   /* routing identities (owned) */
    json_t *header, *parent, *metadata, *content;   /* owned references */
    kn_frame *buffers; size_t n_buffers;  /* owned */
    const char *msg_type;                 /* borrowed from header */
} kn_msg;

/* The signing key; len 0 means messages are neither signed nor checked. */
typedef struct {
    unsigned char *key;
    size_t len;
} kn_signer;

/* hex (65 bytes incl. NUL) = HMAC-SHA256(key, f[0] ‖ f[1] ‖ f[2] ‖ f[3]), or "" without key. */
void kn_sign(const kn_signer *s, const kn_frame f[4], char hex[65]);

/* Parse frames into *m. Returns 0; or -1 with a reason in errbuf (no delimiter, fewer than
 * five frames after it, bad signature, bad header): drop the message; or -2 when the header
 * is good but parent_header, metadata or content is not a JSON object: m->header and
 * m->idents are set (the rest may be NULL) so the sender can be told; kn_msg_free it.
 * The frames are not consumed (the caller frees them). */
int kn_msg_parse(const kn_signer *s, kn_frame *frames, size_t n, kn_msg *m,
                 char *errbuf, size_t errcap);
void kn_msg_free(kn_msg *m);

/* Serialise header/parent/metadata/content and sign them. Fills out[0..3] with the JSON
 * bytes (caller frees data) and hex with the signature. */
int kn_msg_encode(const kn_signer *s, json_t *header, json_t *parent, json_t *metadata,
                  json_t *content, kn_frame out[4], char hex[65]);

/* A new header for msg_type in session (a fresh msg_id, the current UTC time). */
json_t *kn_header_new(const char *msg_type, const char *session, const char *username);

/* "execute_request" → "execute_reply"; anything else gets "_reply" appended. */
void kn_reply_type(const char *request_type, char *out, size_t cap);

/* ISO 8601 UTC time with microseconds: "2026-11-27T23:59:59.123456Z". */
void kn_iso_now(char out[40]);

/* A random UUID4 string (37 bytes incl. NUL). */
void kn_uuid(char out[37]);

#endif
