/* Wire framing and signing: signatures match a known HMAC-SHA256, tampering is caught,
 * truncated and malformed messages are refused with a reason. */
#include <sodium.h>
#include <stdlib.h>
#include "t.h"
#include "wire.h"

#define F(s) ((kn_frame){(unsigned char *)(s), sizeof(s) - 1})

static void test_sign_known_vector(void) {
    /* RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?" split in 4 parts. */
    kn_signer s = {.key = (unsigned char *)"Jefe", .len = 4};
    kn_frame f[4] = {F("what do ya"), F(" want "), F("for nothing"), F("?")};
    char hex[65];
    kn_sign(&s, f, hex);
    T_STR(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void test_sign_long_key(void) {
    /* Keys longer than the block size are hashed first (RFC 4231 case 6). */
    unsigned char key[131];
    memset(key, 0xaa, sizeof key);
    kn_signer s = {.key = key, .len = sizeof key};
    kn_frame f[4] = {F("Test Using Larger Than Block-Siz"), F("e Key - Hash Key First"), F(""), F("")};
    char hex[65];
    kn_sign(&s, f, hex);
    T_STR(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_no_key_no_signature(void) {
    kn_signer s = {.key = NULL, .len = 0};
    kn_frame f[4] = {F("{}"), F("{}"), F("{}"), F("{}")};
    char hex[65] = "x";
    kn_sign(&s, f, hex);
    T_STR(hex, "");
}

static int build(kn_signer *s, kn_frame *fr, const char *header, const char *content, char hex[65]) {
    fr[0] = F("ident-1");
    fr[1] = F(KN_DELIM);
    fr[3] = (kn_frame){(unsigned char *)header, strlen(header)};
    fr[4] = F("{}");
    fr[5] = F("{}");
    fr[6] = (kn_frame){(unsigned char *)content, strlen(content)};
    kn_sign(s, fr + 3, hex);
    fr[2] = (kn_frame){(unsigned char *)hex, strlen(hex)};
    return 7;
}

static const char *HDR = "{\"msg_id\":\"1\",\"msg_type\":\"execute_request\",\"session\":\"s\",\"username\":\"u\",\"date\":\"\",\"version\":\"5.3\"}";

static void test_parse_good(void) {
    kn_signer s = {.key = (unsigned char *)"secret", .len = 6};
    kn_frame fr[8];
    char hex[65], err[256];
    int n = build(&s, fr, HDR, "{\"code\":\"x\"}", hex);
    kn_msg m;
    T_EQ_INT(kn_msg_parse(&s, fr, n, &m, err, sizeof err), 0);
    T_STR(m.msg_type, "execute_request");
    T_EQ_INT(m.n_idents, 1);
    T_STR(json_string_value(json_object_get(m.content, "code")), "x");
    kn_msg_free(&m);
}

static void test_parse_bad_signature(void) {
    kn_signer s = {.key = (unsigned char *)"secret", .len = 6};
    kn_frame fr[8];
    char hex[65], err[256];
    int n = build(&s, fr, HDR, "{\"code\":\"x\"}", hex);
    fr[6] = F("{\"code\":\"rm\"}");   /* content changed after signing */
    kn_msg m;
    T_EQ_INT(kn_msg_parse(&s, fr, n, &m, err, sizeof err), -1);
    T_CONTAINS(err, "invalid signature");
    /* A missing signature is just as bad. */
    build(&s, fr, HDR, "{}", hex);
    fr[2] = F("");
    T_EQ_INT(kn_msg_parse(&s, fr, n, &m, err, sizeof err), -1);
}

static void test_parse_truncated(void) {
    kn_signer s = {.key = NULL, .len = 0};
    kn_frame fr[8];
    char hex[65], err[256];
    build(&s, fr, HDR, "{}", hex);
    kn_msg m;
    T_EQ_INT(kn_msg_parse(&s, fr, 5, &m, err, sizeof err), -1);
    T_CONTAINS(err, "truncated");
    kn_frame nodelim[2] = {F("a"), F("b")};
    T_EQ_INT(kn_msg_parse(&s, nodelim, 2, &m, err, sizeof err), -1);
    T_CONTAINS(err, "delimiter");
}

static void test_parse_bad_json(void) {
    kn_signer s = {.key = NULL, .len = 0};
    kn_frame fr[8];
    char hex[65], err[256];
    int n = build(&s, fr, "{\"msg_id\":", "{}", hex);
    kn_msg m;
    T_EQ_INT(kn_msg_parse(&s, fr, n, &m, err, sizeof err), -1);
    T_CONTAINS(err, "invalid JSON in header");
    n = build(&s, fr, HDR, "[1,2]", hex);
    T_EQ_INT(kn_msg_parse(&s, fr, n, &m, err, sizeof err), -2);   /* answerable: header is good */
    T_CONTAINS(err, "content is not a JSON object");
    T_STR(m.msg_type, "execute_request");
    T_EQ_INT(m.n_idents, 1);
    kn_msg_free(&m);
    n = build(&s, fr, "{\"msg_id\":\"1\"}", "{}", hex);
    T_EQ_INT(kn_msg_parse(&s, fr, n, &m, err, sizeof err), -1);
    T_CONTAINS(err, "msg_type");
}

static void test_reply_type(void) {
    char out[64];
    kn_reply_type("execute_request", out, sizeof out);
    T_STR(out, "execute_reply");
    kn_reply_type("comm_open", out, sizeof out);
    T_STR(out, "comm_open_reply");
}

static void test_signer_precomputed_matches(void) {
    unsigned char key[] = "0d4b3a52-5c1f-4f3e-9a51-3b9f2f0e7d11";
    kn_signer plain = {.key = key, .len = sizeof key - 1}, pre;
    kn_signer_init(&pre, key, sizeof key - 1);
    kn_frame f[4] = {F("{\"a\":1}"), F("{}"), F("{}"), F("{\"b\":2}")};
    char h1[65], h2[65], h3[65];
    kn_sign(&plain, f, h1);
    kn_sign(&pre, f, h2);
    kn_sign(&pre, f, h3);   /* the precomputed state is copied, never used up */
    T_STR(h1, h2);
    T_STR(h2, h3);
    kn_signer none;
    kn_signer_init(&none, NULL, 0);
    kn_sign(&none, f, h1);
    T_STR(h1, "");
}

static void test_iso_now(void) {
    char d[40];
    kn_iso_now(d);
    T_EQ_INT(strlen(d), 27);
    T_OK(d[4] == '-' && d[7] == '-' && d[10] == 'T' && d[13] == ':' && d[16] == ':' && d[19] == '.' && d[26] == 'Z');
    for (int i = 20; i < 26; i++) T_OK(d[i] >= '0' && d[i] <= '9');
    T_OK(!strncmp(d, "20", 2));
}

static void test_jstr_escapes(void) {
    kn_buf b;
    kn_buf_init(&b);
    const char s[] = "a\"b\\c\n\t\x01\x1f\0d \xc3\xa9 \xe2\x80\xa8 /";
    kn_buf_jstr(&b, s, sizeof s - 1);
    json_error_t e;
    json_t *j = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    T_OK(json_is_string(j));
    T_EQ_INT(json_string_length(j), sizeof s - 1);
    T_OK(j && !memcmp(json_string_value(j), s, sizeof s - 1));
    json_decref(j);
    kn_buf_free(&b);
    /* past the inline part: a long string goes to the heap and stays intact */
    size_t n = 3 * KN_BUF_INLINE;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
    kn_buf_jstr(&b, big, n);
    kn_buf_int(&b, -1234567890123LL);
    T_EQ_INT(b.len, n + 2 + 14);
    T_OK(!memcmp(b.p + 1, big, n) && !memcmp(b.p + n + 2, "-1234567890123", 14));
    kn_buf_free(&b);
    free(big);
}

/* A message written by kn_out parses back: header fields, the parent echoed byte for byte,
 * the signature checks, msg_ids differ and count up. */
static void test_out_roundtrip(void) {
    kn_signer s;
    kn_signer_init(&s, (unsigned char *)"k", 1);
    kn_ids ids;
    kn_ids_init(&ids);
    T_EQ_INT(strlen(ids.session), 36);
    const char parent[] = "{\"msg_id\": \"abc\",  \"msg_type\":\"execute_request\", \"session\":\"s\"}";
    char first_id[128] = "";
    for (int round = 0; round < 2; round++) {
        kn_out o;
        kn_out_start(&o, &ids, round ? "weird\"type" : "status", round ? NULL : parent, round ? 0 : sizeof parent - 1);
        kn_buf_puts(&o.b, "{\"execution_state\":\"idle\"}");
        kn_frame body[4];
        char hex[65], err[256];
        T_EQ_INT(kn_out_finish(&o, &s, body, hex), 0);
        kn_frame fr[8] = {F("ident"), F(KN_DELIM), {(unsigned char *)hex, 64}, body[0], body[1], body[2], body[3], F("buf0")};
        kn_msg m;
        T_EQ_INT(kn_msg_parse(&s, fr, 8, &m, err, sizeof err), 0);
        T_EQ_INT(m.n_buffers, 1);
        T_EQ_INT(m.n_idents, 1);
        T_STR(m.msg_type, round ? "weird\"type" : "status");
        T_STR(json_string_value(json_object_get(m.header, "version")), KN_PROTOCOL_VERSION);
        T_STR(json_string_value(json_object_get(m.header, "session")), ids.session);
        T_STR(json_string_value(json_object_get(m.header, "username")), "kernel");
        const char *date = json_string_value(json_object_get(m.header, "date"));
        T_OK(date && strlen(date) == 27 && date[26] == 'Z');
        const char *id = json_string_value(json_object_get(m.header, "msg_id"));
        T_OK(id && !strncmp(id, ids.session, 36));
        if (round == 0) {
            T_EQ_INT(body[1].len, sizeof parent - 1);
            T_OK(!memcmp(body[1].data, parent, sizeof parent - 1));
            T_STR(json_string_value(json_object_get(m.parent, "msg_id")), "abc");
            snprintf(first_id, sizeof first_id, "%s", id ? id : "");
        } else {
            T_OK(body[1].len == 2 && !memcmp(body[1].data, "{}", 2));
            T_OK(id && strcmp(id, first_id) != 0);
        }
        T_STR(json_string_value(json_object_get(m.content, "execution_state")), "idle");
        /* the header frame is kept as received, to be echoed as the parent of replies */
        T_EQ_INT(m.header_len, body[0].len);
        T_OK(m.header_text && !memcmp(m.header_text, body[0].data, body[0].len));
        kn_msg_free(&m);
        kn_out_free(&o);
    }
    /* another start: a new session, so ids never repeat across restarts */
    kn_ids again;
    kn_ids_init(&again);
    T_OK(strcmp(again.session, ids.session) != 0);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    T_RUN(test_sign_known_vector);
    T_RUN(test_sign_long_key);
    T_RUN(test_no_key_no_signature);
    T_RUN(test_parse_good);
    T_RUN(test_parse_bad_signature);
    T_RUN(test_parse_truncated);
    T_RUN(test_parse_bad_json);
    T_RUN(test_reply_type);
    T_RUN(test_signer_precomputed_matches);
    T_RUN(test_iso_now);
    T_RUN(test_jstr_escapes);
    T_RUN(test_out_roundtrip);
    return t_done();
}
