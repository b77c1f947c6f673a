/* kfloor — the least a kernel can do for kbench's empty-cell round trip, to show the floor
 * that ZeroMQ and this machine set.
 *
 *   kfloor -f CONNECTION_FILE
 *
 * It binds shell (ROUTER), iopub (XPUB) and control (ROUTER) where the connection file says
 * and answers every shell request the way a kernel answers an empty cell: status busy,
 * execute_input, the reply, status idle — four messages with the request's header echoed as
 * parent_header, built with snprintf into fixed buffers and signed with HMAC-SHA256 from a
 * precomputed key state. No JSON parsing, no interpreter, one thread of ours (plus ZeroMQ's
 * I/O thread, as in any ZeroMQ program). A control request is answered and ends it. */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

static crypto_auth_hmacsha256_state key_state;
static unsigned long long counter;

static void *bind_sock(void *ctx, int type, json_t *conn, const char *port_key) {
    void *s = zmq_socket(ctx, type);
    char ep[256];
    snprintf(ep, sizeof ep, "tcp://%s:%d", json_string_value(json_object_get(conn, "ip")),
             (int)json_integer_value(json_object_get(conn, port_key)));
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(s, ep)) { perror(ep); return NULL; }
    return s;
}

/* prefix frames, delimiter, signature, header, parent, {}, content */
static void send_msg(void *s, zmq_msg_t *prefix, int np, const char *type, const char *parent, size_t plen,
                     const char *content) {
    char header[256];
    int hl = snprintf(header, sizeof header,
                      "{\"msg_id\":\"kfloor_%llu\",\"session\":\"kfloor\",\"username\":\"kernel\","
                      "\"date\":\"2026-01-01T00:00:00.000000Z\",\"msg_type\":\"%s\",\"version\":\"5.5\"}",
                      ++counter, type);
    crypto_auth_hmacsha256_state st = key_state;
    unsigned char mac[32];
    char hex[65];
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)header, (size_t)hl);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)parent, plen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"{}", 2);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)content, strlen(content));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    for (int i = 0; i < np; i++) zmq_send(s, zmq_msg_data(&prefix[i]), zmq_msg_size(&prefix[i]), ZMQ_SNDMORE);
    zmq_send(s, "<IDS|MSG>", 9, ZMQ_SNDMORE);
    zmq_send(s, hex, 64, ZMQ_SNDMORE);
    zmq_send(s, header, (size_t)hl, ZMQ_SNDMORE);
    zmq_send(s, parent, plen, ZMQ_SNDMORE);
    zmq_send(s, "{}", 2, ZMQ_SNDMORE);
    zmq_send(s, content, strlen(content), 0);
}

/* Receive one request; identities in id[0..*nid), the header frame in *hdr. */
static int recv_req(void *s, zmq_msg_t *id, int *nid, zmq_msg_t *hdr) {
    zmq_msg_t part;
    int idx = -1, n = 0, more = 1;
    *nid = 0;
    while (more) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, s, 0) < 0) return -1;
        more = zmq_msg_more(&part);
        if (idx < 0 && zmq_msg_size(&part) == 9 && !memcmp(zmq_msg_data(&part), "<IDS|MSG>", 9)) {
            idx = 0;
            zmq_msg_close(&part);
        } else if (idx < 0 && *nid < 8) {
            zmq_msg_init(&id[*nid]);
            zmq_msg_move(&id[(*nid)++], &part);
        } else if (idx >= 0 && ++n == 2) {
            zmq_msg_init(hdr);
            zmq_msg_move(hdr, &part);
        } else {
            zmq_msg_close(&part);
        }
    }
    return n >= 2 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 3 || strcmp(argv[1], "-f")) { fprintf(stderr, "usage: kfloor -f CONNECTION_FILE\n"); return 2; }
    if (sodium_init() < 0) return 1;
    json_t *conn = json_load_file(argv[2], 0, NULL);
    if (!conn) { fprintf(stderr, "kfloor: cannot read %s\n", argv[2]); return 1; }
    const char *key = json_string_value(json_object_get(conn, "key"));
    crypto_auth_hmacsha256_init(&key_state, (const unsigned char *)key, strlen(key));
    void *ctx = zmq_ctx_new();
    void *shell = bind_sock(ctx, ZMQ_ROUTER, conn, "shell_port");
    void *iopub = bind_sock(ctx, ZMQ_XPUB, conn, "iopub_port");
    void *control = bind_sock(ctx, ZMQ_ROUTER, conn, "control_port");
    if (!shell || !iopub || !control) return 1;
    static const char busy[] = "{\"execution_state\":\"busy\"}", idle[] = "{\"execution_state\":\"idle\"}";
    for (;;) {
        zmq_pollitem_t it[3] = {{shell, 0, ZMQ_POLLIN, 0}, {control, 0, ZMQ_POLLIN, 0}, {iopub, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 3, -1) < 0) break;
        if (it[2].revents & ZMQ_POLLIN) {   /* subscriptions: read and ignore */
            zmq_msg_t m;
            zmq_msg_init(&m);
            zmq_msg_recv(&m, iopub, 0);
            zmq_msg_close(&m);
        }
        for (int c = 0; c < 2; c++) {
            if (!(it[c].revents & ZMQ_POLLIN)) continue;
            void *s = c ? control : shell;
            zmq_msg_t id[8], hdr;
            int nid;
            if (recv_req(s, id, &nid, &hdr)) continue;
            const char *ph = zmq_msg_data(&hdr);
            size_t pl = zmq_msg_size(&hdr);
            zmq_msg_t topic;
            zmq_msg_init_size(&topic, 6);
            memcpy(zmq_msg_data(&topic), "status", 6);
            send_msg(iopub, &topic, 1, "status", ph, pl, busy);
            send_msg(iopub, &topic, 1, "execute_input", ph, pl, "{\"code\":\"\",\"execution_count\":1}");
            send_msg(s, id, nid, "execute_reply", ph, pl,
                     "{\"status\":\"ok\",\"execution_count\":1,\"payload\":[],\"user_expressions\":{}}");
            send_msg(iopub, &topic, 1, "status", ph, pl, idle);
            zmq_msg_close(&topic);
            zmq_msg_close(&hdr);
            for (int i = 0; i < nid; i++) zmq_msg_close(&id[i]);
            if (c) goto done;
        }
    }
done:
    zmq_close(shell); zmq_close(iopub); zmq_close(control);
    zmq_ctx_term(ctx);
    json_decref(conn);
    return 0;
}
