/* Wire framing and signing: signatures match a known HMAC-SHA256, tampering is caught,
 * truncated and malformed messages are refused with a reason. */
#include <sodium.h>
#include <stdlib.h>
#include "t.h"
#include "wire.h"

#define F(s) ((kn_frame){(unsigned char *)(s), sizeof(s) - 1})

static void test_sign_known_vector(void) {
    /* RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?" split in 4 parts. */
    kn_signer s = {(unsigned char *)"Jefe", 4};
    kn_frame f[4] = {F("what do ya"), F(" want "), F("for nothing"), F("?")};
    char hex[65];
    kn_sign(&s, f, hex);
    T_STR(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void test_sign_long_key(void) {
    /* Keys longer than the block size are hashed first (RFC 4231 case 6). */
    unsigned char key[131];
    memset(key, 0xaa, sizeof key);
    kn_signer s = {key, sizeof key};
    kn_frame f[4] = {F("Test Using Larger Than Block-Siz"), F("e Key - Hash Key First"), F(""), F("")};
    char hex[65];
    kn_sign(&s, f, hex);
    T_STR(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_no_key_no_signature(void) {
    kn_signer s = {NULL, 0};
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
    kn_signer s = {(unsigned char *)"secret", 6};
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
    kn_signer s = {(unsigned char *)"secret", 6};
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
    kn_signer s = {NULL, 0};
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
    kn_signer s = {NULL, 0};
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

static void test_encode_roundtrip_with_buffers(void) {
    kn_signer s = {(unsigned char *)"k", 1};
    json_t *h = kn_header_new("status", "sess", "kernel");
    json_t *c = json_pack("{s:s}", "execution_state", "idle");
    kn_frame body[4];
    char hex[65], err[256];
    T_EQ_INT(kn_msg_encode(&s, h, NULL, NULL, c, body, hex), 0);
    kn_frame fr[9] = {F(KN_DELIM), {(unsigned char *)hex, 64}, body[0], body[1], body[2], body[3], F("buf0"), F("buf1")};
    kn_msg m;
    T_EQ_INT(kn_msg_parse(&s, fr, 8, &m, err, sizeof err), 0);
    T_EQ_INT(m.n_buffers, 2);
    T_EQ_INT(m.n_idents, 0);
    T_STR(json_string_value(json_object_get(m.header, "version")), KN_PROTOCOL_VERSION);
    const char *date = json_string_value(json_object_get(m.header, "date"));
    T_OK(date && strlen(date) == 27 && date[26] == 'Z');
    kn_msg_free(&m);
    for (int i = 0; i < 4; i++) free(body[i].data);
    json_decref(h);
    json_decref(c);
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
    T_RUN(test_encode_roundtrip_with_buffers);
    return t_done();
}
