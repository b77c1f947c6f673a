#include "kernel.h"
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define STREAM_FLUSH_MS 50          /* coalescing window for stream text */
#define STREAM_FLUSH_BYTES (1 << 18)
#define MAX_FRAMES 4096


static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void set_linger(void *s, int ms) { zmq_setsockopt(s, ZMQ_LINGER, &ms, sizeof ms); }

/* ---------- sending ---------- */

/* Send a message built in o: prefix frames (identities or topic), delimiter, signature, the
 * four JSON frames. */
static void send_out(kn_kernel *k, void *sock, const kn_frame *prefix, size_t np, kn_out *o) {
    kn_frame body[4];
    char hex[65];
    if (kn_out_finish(o, &k->signer, body, hex)) {
        fprintf(stderr, "loupe: out of memory for a %s message\n", o->msg_type);
        return;
    }
    for (size_t i = 0; i < np; i++) zmq_send(sock, prefix[i].data, prefix[i].len, ZMQ_SNDMORE);
    zmq_send(sock, KN_DELIM, sizeof KN_DELIM - 1, ZMQ_SNDMORE);
    zmq_send(sock, hex, strlen(hex), ZMQ_SNDMORE);
    for (int i = 0; i < 4; i++) zmq_send(sock, body[i].data, body[i].len, i < 3 ? ZMQ_SNDMORE : 0);
}

static void stream_flush(kn_kernel *k);
static void stream_add(kn_kernel *k, const char *name, const char *parent, size_t plen,
                       const char *text, size_t n);

void kn_begin(kn_kernel *k, kn_out *o, kn_msg *parent, const char *msg_type) {
    if (parent && parent->header_text) kn_out_start(o, &k->ids, msg_type, parent->header_text, parent->header_len);
    else kn_out_start(o, &k->ids, msg_type, NULL, 0);
}

/* Every thread publishes on the one XPUB socket under pub_lock (a mutex is the full memory
 * barrier ZeroMQ asks for when a socket is used by more than one thread). Pending stream text
 * goes out first, so the order of a cell's outputs is kept. */
void kn_publish_end(kn_kernel *k, kn_out *o) {
    /* topic "kernel.<session>.<msg_type>"; a topic only filters, so a long type is cut */
    char topic[7 + 36 + 1 + 64];
    size_t ml = strnlen(o->msg_type, 64);
    memcpy(topic, "kernel.", 7);
    memcpy(topic + 7, k->ids.session, 36);
    topic[43] = '.';
    memcpy(topic + 44, o->msg_type, ml);
    kn_frame t = {(unsigned char *)topic, 44 + ml};
    pthread_mutex_lock(&k->pub_lock);
    if (k->iopub) {
        stream_flush(k);
        send_out(k, k->iopub, &t, 1, o);
    }
    pthread_mutex_unlock(&k->pub_lock);
    kn_out_free(o);
}

void kn_publish(kn_kernel *k, kn_msg *parent, const char *msg_type, json_t *content) {
    kn_out o;
    kn_begin(k, &o, parent, msg_type);
    kn_buf_json(&o.b, content);
    json_decref(content);
    kn_publish_end(k, &o);
}

void kn_wait_subscriber(kn_kernel *k, int ms) {
    for (int waited = 0; waited < ms && !atomic_load(&k->subscribed); waited++) {
        struct timespec t = {0, 1000000};
        nanosleep(&t, NULL);
    }
}

void kn_publish_status(kn_kernel *k, kn_msg *parent, const char *state) {
    kn_out o;
    kn_begin(k, &o, parent, "status");
    kn_buf_puts(&o.b, "{\"execution_state\":\"");
    kn_buf_puts(&o.b, state);
    kn_buf_puts(&o.b, "\"}");
    kn_publish_end(k, &o);
}

void kn_publish_stream(kn_kernel *k, kn_msg *parent, const char *name, const char *text, size_t n) {
    const char *ph = parent && parent->header_text ? parent->header_text : "{}";
    size_t plen = parent && parent->header_text ? parent->header_len : 2;
    pthread_mutex_lock(&k->pub_lock);
    if (k->iopub) stream_add(k, name, ph, plen, text, n);
    pthread_mutex_unlock(&k->pub_lock);
}

void kn_publish_flush(kn_kernel *k) {
    pthread_mutex_lock(&k->pub_lock);
    if (k->iopub) stream_flush(k);
    pthread_mutex_unlock(&k->pub_lock);
}

void kn_reply_end(kn_kernel *k, kn_out *o, void *sock, kn_msg *req) {
    send_out(k, sock, req->idents, req->n_idents, o);
    kn_out_free(o);
}

void kn_reply(kn_kernel *k, void *sock, kn_msg *req, const char *msg_type, json_t *content) {
    kn_out o;
    kn_begin(k, &o, req, msg_type);
    kn_buf_json(&o.b, content);
    json_decref(content);
    kn_reply_end(k, &o, sock, req);
}

/* ---------- receiving ---------- */

/* Read all frames of one multipart message. Returns the count, 0 when nothing arrived,
 * -1 when the context is gone. Frames beyond MAX_FRAMES are read and discarded. */
static int recv_frames(void *sock, int timeout_ms, kn_frame *f, size_t cap) {
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&it, 1, timeout_ms);
    if (rc < 0) return errno == ETERM ? -1 : 0;
    if (rc == 0) return 0;
    size_t n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            for (size_t i = 0; i < n; i++) free(f[i].data);
            return errno == ETERM ? -1 : 0;
        }
        more = zmq_msg_more(&part);
        if (n < cap) {
            size_t len = zmq_msg_size(&part);
            f[n].data = malloc(len ? len : 1);
            if (f[n].data) {
                memcpy(f[n].data, zmq_msg_data(&part), len);
                f[n].len = len;
                n++;
            }
        }
        zmq_msg_close(&part);
    }
    return (int)n;
}

int kn_recv(kn_kernel *k, void *sock, int timeout_ms, kn_msg *m) {
    static _Thread_local kn_frame f[MAX_FRAMES];
    int n = recv_frames(sock, timeout_ms, f, MAX_FRAMES);
    if (n <= 0) return n;
    char err[256];
    int rc = kn_msg_parse(&k->signer, f, (size_t)n, m, err, sizeof err);
    for (int i = 0; i < n; i++) free(f[i].data);
    if (rc == -2 && sock == k->stdin_sock) rc = -1;
    if (rc == -2) {
        /* Signed by our client but unreadable: say so, or the front end waits forever. */
        fprintf(stderr, "loupe: invalid %s: %s\n", m->msg_type, err);
        if (!m->parent) m->parent = json_object();
        kn_publish_status(k, m, "busy");
        char reply_type[160];
        kn_reply_type(m->msg_type, reply_type, sizeof reply_type);
        kn_reply(k, sock, m, reply_type,
                 json_pack("{s:s, s:s, s:s, s:[s]}", "status", "error", "ename", "InvalidMessage",
                           "evalue", err, "traceback", err));
        kn_publish_status(k, m, "idle");
        kn_msg_free(m);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "loupe: dropped a message: %s\n", err);
        return 0;
    }
    return 1;
}

/* ---------- heartbeat ---------- */

static void *hb_main(void *arg) {
    kn_kernel *k = arg;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, k->hb, 0) < 0) {
            zmq_msg_close(&m);
            if (errno == ETERM) break;
            continue;
        }
        int more = zmq_msg_more(&m);
        zmq_msg_send(&m, k->hb, more ? ZMQ_SNDMORE : 0);
        zmq_msg_close(&m);
    }
    zmq_close(k->hb);
    return NULL;
}

/* ---------- IOPub ---------- */

/* Coalesced stream text (guarded by pub_lock): consecutive writes to one stream of one
 * request are sent together after STREAM_FLUSH_MS, at STREAM_FLUSH_BYTES, or before any
 * other message. */
static void stream_flush(kn_kernel *k) {
    kn_pending *p = &k->pending;
    if (!p->parent) return;
    /* jansson checks the text is UTF-8; text that is not is dropped, not sent as bad JSON */
    json_t *content = json_pack("{s:s, s:s%}", "name", p->name, "text", p->text ? p->text : "", p->len);
    if (content) {
        char topic[32];
        size_t tl = (size_t)snprintf(topic, sizeof topic, "stream.%s", p->name);
        kn_frame t = {(unsigned char *)topic, tl};
        kn_out o;
        kn_out_start(&o, &k->ids, "stream", p->parent, p->parent_len);
        kn_buf_json(&o.b, content);
        send_out(k, k->iopub, &t, 1, &o);
        kn_out_free(&o);
        json_decref(content);
    }
    free(p->parent);
    p->parent = NULL;
    p->len = 0;
}

static void stream_add(kn_kernel *k, const char *name, const char *parent, size_t plen,
                       const char *text, size_t n) {
    kn_pending *p = &k->pending;
    if (p->parent && (strcmp(p->name, name) || p->parent_len != plen || memcmp(p->parent, parent, plen)))
        stream_flush(k);
    if (!p->parent) {
        snprintf(p->name, sizeof p->name, "%s", name);
        p->parent = malloc(plen + 1);
        if (!p->parent) return;
        memcpy(p->parent, parent, plen);
        p->parent[plen] = 0;
        p->parent_len = plen;
        p->since = now_ms();
    }
    if (p->len + n + 1 > p->cap) {
        size_t cap = p->cap ? p->cap : 4096;
        while (cap < p->len + n + 1) cap *= 2;
        char *t = realloc(p->text, cap);
        if (!t) return;
        p->text = t; p->cap = cap;
    }
    memcpy(p->text + p->len, text, n);
    p->len += n;
    p->text[p->len] = 0;
    if (p->len >= STREAM_FLUSH_BYTES) stream_flush(k);
}

static void welcome(kn_kernel *k, const unsigned char *topic, size_t len) {
    kn_out o;
    kn_out_start(&o, &k->ids, "iopub_welcome", NULL, 0);
    /* a topic that is not UTF-8 gets an empty content, as before */
    json_t *content = json_pack("{s:s%}", "subscription", (const char *)topic, len);
    kn_buf_json(&o.b, content);
    json_decref(content);
    kn_frame t = {(unsigned char *)topic, len};
    send_out(k, k->iopub, &t, 1, &o);
    kn_out_free(&o);
}

/* The IOPub thread: greets new subscribers and sends stream text that has waited long
 * enough. It sleeps in poll() on the XPUB socket's file descriptor, which becomes readable
 * when ZeroMQ has events for the socket, so it touches the socket only under pub_lock. */
static void *iopub_main(void *arg) {
    kn_kernel *k = arg;
    int fd = -1;
    size_t fdlen = sizeof fd;
    zmq_getsockopt(k->iopub, ZMQ_FD, &fd, &fdlen);
    kn_frame f[8];
    while (!atomic_load(&k->stopping)) {
        int timeout = 20;
        pthread_mutex_lock(&k->pub_lock);
        int events = 0;
        size_t elen = sizeof events;
        /* ZMQ_FD is edge-triggered: drain everything ZMQ_EVENTS reports before sleeping. */
        while (zmq_getsockopt(k->iopub, ZMQ_EVENTS, &events, &elen) == 0 && (events & ZMQ_POLLIN)) {
            int n = recv_frames(k->iopub, 0, f, 8);
            if (n <= 0) break;
            /* A subscription frame: first byte 1 = subscribe, the rest is the topic. */
            if (f[0].len >= 1 && f[0].data[0] == 1) {
                atomic_store(&k->subscribed, 1);
                welcome(k, f[0].data + 1, f[0].len - 1);
            } else if (f[0].len >= 1 && f[0].data[0] == 0) {   /* the last one of a topic left */
                atomic_store(&k->subscribed, 0);
            }
            for (int i = 0; i < n; i++) free(f[i].data);
        }
        if (k->pending.parent) {
            double wait = STREAM_FLUSH_MS - (now_ms() - k->pending.since);
            if (wait <= 0) stream_flush(k);
            else if (wait < timeout) timeout = (int)wait + 1;
        }
        pthread_mutex_unlock(&k->pub_lock);
        struct pollfd pfd = {fd, POLLIN, 0};
        poll(&pfd, fd >= 0 ? 1 : 0, timeout);
    }
    return NULL;
}

/* ---------- control ---------- */

static void *control_main(void *arg) {
    kn_kernel *k = arg;
    while (!atomic_load(&k->stopping)) {
        kn_msg m;
        int rc = kn_recv(k, k->control, 100, &m);
        if (rc < 0) break;
        if (rc == 0) continue;
        kn_publish_status(k, &m, "busy");
        int shutdown = 0;
        if (!strcmp(m.msg_type, "kernel_info_request")) {
            kn_reply(k, k->control, &m, "kernel_info_reply", kn_kernel_info());
        } else if (!strcmp(m.msg_type, "interrupt_request")) {
            atomic_store(&k->interrupted, 1);
            lp_interrupt(k->interp);
            kn_reply(k, k->control, &m, "interrupt_reply", json_pack("{s:s}", "status", "ok"));
        } else if (!strcmp(m.msg_type, "shutdown_request")) {
            int restart = json_is_true(json_object_get(m.content, "restart"));
            kn_reply(k, k->control, &m, "shutdown_reply",
                     json_pack("{s:s, s:b}", "status", "ok", "restart", restart));
            shutdown = 1;
        } else {
            fprintf(stderr, "loupe: control: unknown message type %s\n", m.msg_type);
        }
        kn_publish_status(k, &m, "idle");
        kn_msg_free(&m);
        if (shutdown) {
            atomic_store(&k->quit, 1);
            atomic_store(&k->interrupted, 1);
            lp_interrupt(k->interp);
            /* The main thread stops at its next interrupt point; a cell stuck in a long
             * computation without one must not keep a shut-down kernel alive. */
            for (int i = 0; i < 300 && !atomic_load(&k->stopping); i++) usleep(10000);
            if (!atomic_load(&k->stopping)) {
                fprintf(stderr, "loupe: shutdown: the running cell did not stop; exiting\n");
                usleep(100000);
                _exit(0);
            }
        }
    }
    zmq_close(k->control);
    return NULL;
}

/* ---------- start and run ---------- */

static kn_kernel *sig_kernel;

static void on_sigint(int sig) {
    (void)sig;
    if (sig_kernel) {
        atomic_store(&sig_kernel->interrupted, 1);
        lp_interrupt(sig_kernel->interp);
    }
}

static void *bind_socket(kn_kernel *k, int type, int port, const char *what) {
    void *s = zmq_socket(k->zctx, type);
    char ep[1200];
    kn_conn_endpoint(&k->conn, port, ep, sizeof ep);
    set_linger(s, 1000);
    if (strchr(k->conn.ip, ':')) {
        int one = 1;
        zmq_setsockopt(s, ZMQ_IPV6, &one, sizeof one);
    }
    if (type == ZMQ_ROUTER) {
        /* A 50 MB message is accepted and answered; beyond 1 GiB ZeroMQ drops the peer. */
        int64_t max = 1LL << 30;
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max);
    }
    if (type == ZMQ_XPUB) {
        int one = 1;
        zmq_setsockopt(s, ZMQ_XPUB_VERBOSE, &one, sizeof one);
    }
    if (zmq_bind(s, ep) != 0) {
        fprintf(stderr, "loupe: cannot bind %s socket to %s: %s\n", what, ep, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

int kn_start(kn_kernel *k, const char *path) {
    memset(k, 0, sizeof *k);
    char err[1024];
    if (sodium_init() < 0) { fprintf(stderr, "loupe: libsodium failed to start\n"); return -1; }
    if (kn_conn_load(path, &k->conn, err, sizeof err)) {
        fprintf(stderr, "loupe: %s\n", err);
        return -1;
    }
    kn_signer_init(&k->signer, (unsigned char *)k->conn.key, k->conn.key_len);
    kn_ids_init(&k->ids);
    k->zctx = zmq_ctx_new();
    pthread_mutex_init(&k->pub_lock, NULL);
    k->shell = bind_socket(k, ZMQ_ROUTER, k->conn.shell_port, "shell");
    k->control = bind_socket(k, ZMQ_ROUTER, k->conn.control_port, "control");
    k->stdin_sock = bind_socket(k, ZMQ_ROUTER, k->conn.stdin_port, "stdin");
    k->iopub = bind_socket(k, ZMQ_XPUB, k->conn.iopub_port, "iopub");
    k->hb = bind_socket(k, ZMQ_REP, k->conn.hb_port, "heartbeat");
    if (!k->shell || !k->control || !k->stdin_sock || !k->iopub || !k->hb) return -1;
    k->interp = lp_interp_new();
    if (!k->interp) { fprintf(stderr, "loupe: cannot create the interpreter\n"); return -1; }
    k->hist = kn_hist_open(NULL);
    sig_kernel = k;
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_create(&k->iopub_thread, NULL, iopub_main, k);
    pthread_create(&k->hb_thread, NULL, hb_main, k);
    pthread_create(&k->control_thread, NULL, control_main, k);
    return 0;
}

int kn_run(kn_kernel *k) {
    kn_publish_status(k, NULL, "starting");
    while (!atomic_load(&k->quit)) {
        kn_msg m;
        int rc = kn_recv(k, k->shell, 100, &m);
        if (rc < 0) break;
        if (rc == 0) continue;
        kn_dispatch_shell(k, &m);
        kn_msg_free(&m);
    }
    atomic_store(&k->stopping, 1);
    pthread_join(k->iopub_thread, NULL);
    zmq_close(k->shell);
    zmq_close(k->stdin_sock);
    zmq_ctx_shutdown(k->zctx);   /* wakes the heartbeat thread */
    pthread_join(k->control_thread, NULL);
    pthread_join(k->hb_thread, NULL);
    pthread_mutex_lock(&k->pub_lock);   /* no thread publishes any more: send what is left */
    stream_flush(k);
    zmq_close(k->iopub);
    k->iopub = NULL;
    pthread_mutex_unlock(&k->pub_lock);
    free(k->pending.text);
    zmq_ctx_term(k->zctx);
    lp_interp_free(k->interp);
    kn_hist_close(k->hist);
    kn_conn_free(&k->conn);
    return 0;
}
