/* kbench — a raw ZeroMQ Jupyter client in C, so the client's own cost is small next to
 * what it measures and is the same for every kernel.
 *
 *   kbench startup N   -- KERNEL_ARGV...   spawn → kernel_info_reply, N times
 *   kbench roundtrip N -- KERNEL_ARGV...   empty execute_request → execute_reply + idle
 *
 * KERNEL_ARGV gets "-f CONNECTION_FILE" appended. Prints one time in microseconds per line.
 * Messages are signed (HMAC-SHA256) as any client must; replies are not verified. */
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static const char KEY[] = "0d4b3a52-5c1f-4f3e-9a51-3b9f2f0e7d11";
static char session[40];
static int counter;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* A port below the ephemeral range (32768+ on Linux) that binds now. Ports from bind(0)
 * come from that range; since the client connects before the kernel has bound (ZeroMQ
 * retries every millisecond), an outgoing connection could get the very port it is dialling
 * as its own and connect to itself, and the kernel then cannot bind it. */
static int free_port(void) {
    static unsigned seed;
    if (!seed) seed = (unsigned)getpid() ^ (unsigned)now_us();
    for (;;) {
        int port = 20000 + (int)(rand_r(&seed) % 12000);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                .sin_port = htons((uint16_t)port)};
        int ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
        close(s);
        if (ok) return port;
    }
}

typedef struct { pid_t pid; void *ctx, *shell, *iopub, *control; char conn[64]; int ports[5]; } kernel;

static void *sock(kernel *k, int type, int port) {
    void *s = zmq_socket(k->ctx, type);
    int ivl = 1, linger = 0;
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (type == ZMQ_SUB) zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    zmq_connect(s, ep);
    return s;
}

static void start(kernel *k, char **argv) {
    for (int i = 0; i < 5;) {
        int port = free_port(), repeat = 0;
        for (int j = 0; j < i; j++) repeat |= k->ports[j] == port;
        if (!repeat) k->ports[i++] = port;
    }
    snprintf(k->conn, sizeof k->conn, "/tmp/kbench-%d.json", (int)getpid());
    FILE *f = fopen(k->conn, "w");
    fprintf(f, "{\"transport\":\"tcp\",\"ip\":\"127.0.0.1\",\"shell_port\":%d,\"iopub_port\":%d,"
               "\"stdin_port\":%d,\"control_port\":%d,\"hb_port\":%d,\"signature_scheme\":\"hmac-sha256\","
               "\"key\":\"%s\"}", k->ports[0], k->ports[1], k->ports[2], k->ports[3], k->ports[4], KEY);
    fclose(f);
    k->ctx = zmq_ctx_new();
    k->shell = sock(k, ZMQ_DEALER, k->ports[0]);
    k->iopub = sock(k, ZMQ_SUB, k->ports[1]);
    k->control = sock(k, ZMQ_DEALER, k->ports[3]);
    int argc = 0;
    while (argv[argc]) argc++;
    char **av = calloc(argc + 3, sizeof *av);
    memcpy(av, argv, argc * sizeof *av);
    av[argc] = "-f";
    av[argc + 1] = k->conn;
    fflush(stdout);   /* or the child's freopen writes our buffered lines a second time */
    k->pid = fork();
    if (k->pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execvp(av[0], av);
        _exit(127);
    }
    free(av);
}

/* Send a signed request; returns its msg_id in id. */
static void send_req(void *s, const char *type, const char *content, char id[40]) {
    snprintf(id, 40, "kbench-%d-%d", (int)getpid(), ++counter);
    char header[512];
    snprintf(header, sizeof header,
             "{\"msg_id\":\"%s\",\"session\":\"%s\",\"username\":\"kbench\",\"date\":\"2026-01-01T00:00:00Z\","
             "\"msg_type\":\"%s\",\"version\":\"5.3\"}", id, session, type);
    const char *parts[4] = {header, "{}", "{}", content};
    crypto_auth_hmacsha256_state st;
    unsigned char mac[32];
    char hex[65];
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)KEY, strlen(KEY));
    for (int i = 0; i < 4; i++) crypto_auth_hmacsha256_update(&st, (const unsigned char *)parts[i], strlen(parts[i]));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    zmq_send(s, "<IDS|MSG>", 9, ZMQ_SNDMORE);
    zmq_send(s, hex, 64, ZMQ_SNDMORE);
    for (int i = 0; i < 4; i++) zmq_send(s, parts[i], strlen(parts[i]), i < 3 ? ZMQ_SNDMORE : 0);
}

/* Receive one message; fills msg_type, parent msg_id and execution_state (if any).
 * Returns 0 on timeout. */
static int recv_msg(void *s, int timeout_ms, char *type, char *parent, char *state) {
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return 0;
    int idx = -1, more = 1, after = 0;
    type[0] = parent[0] = state[0] = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, s, 0);
        more = zmq_msg_more(&m);
        size_t len = zmq_msg_size(&m);
        const char *d = zmq_msg_data(&m);
        if (idx < 0 && len == 9 && !memcmp(d, "<IDS|MSG>", 9)) idx = 0;
        else if (idx >= 0) {
            after++;
            if (after >= 2 && after <= 5) {
                json_t *j = json_loadb(d, len, 0, NULL);
                if (after == 2) snprintf(type, 64, "%s", json_string_value(json_object_get(j, "msg_type")) ?: "");
                if (after == 3) snprintf(parent, 64, "%s", json_string_value(json_object_get(j, "msg_id")) ?: "");
                if (after == 5) snprintf(state, 16, "%s", json_string_value(json_object_get(j, "execution_state")) ?: "");
                json_decref(j);
            }
        }
        zmq_msg_close(&m);
    }
    return 1;
}

static int wait_reply(void *s, const char *id, int timeout_ms) {
    char type[64], parent[64], state[16];
    double end = now_us() + timeout_ms * 1e3;
    while (now_us() < end)
        if (recv_msg(s, 100, type, parent, state) && !strcmp(parent, id)) return 1;
    return 0;
}

static void stop(kernel *k) {
    char id[40];
    send_req(k->control, "shutdown_request", "{\"restart\":false}", id);
    wait_reply(k->control, id, 3000);
    for (int i = 0; i < 300; i++) {
        if (waitpid(k->pid, NULL, WNOHANG) == k->pid) goto done;
        usleep(10000);
    }
    kill(k->pid, SIGKILL);
    waitpid(k->pid, NULL, 0);
done:
    zmq_close(k->shell); zmq_close(k->iopub); zmq_close(k->control);
    zmq_ctx_term(k->ctx);
    unlink(k->conn);
}

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--")) {
        fprintf(stderr, "usage: kbench startup|roundtrip N -- KERNEL_ARGV...\n");
        return 2;
    }
    if (sodium_init() < 0) return 1;
    snprintf(session, sizeof session, "kbench-session-%d", (int)getpid());
    int n = atoi(argv[2]);
    char id[40];
    if (!strcmp(argv[1], "startup")) {
        for (int i = 0; i < n; i++) {
            kernel k;
            double t0 = now_us();
            start(&k, argv + 4);
            send_req(k.shell, "kernel_info_request", "{}", id);
            if (!wait_reply(k.shell, id, 60000)) {
                fprintf(stderr, "kbench: no kernel_info_reply from %s within 60 s\n", argv[4]);
                return 1;
            }
            printf("%.1f\n", now_us() - t0);
            stop(&k);
        }
        return 0;
    }
    kernel k;
    start(&k, argv + 4);
    send_req(k.shell, "kernel_info_request", "{}", id);
    if (!wait_reply(k.shell, id, 30000)) { fprintf(stderr, "no kernel_info_reply\n"); return 1; }
    usleep(300000);   /* let the IOPub subscription settle */
    char type[64], parent[64], state[16];
    while (recv_msg(k.iopub, 0, type, parent, state)) {}
    const char *content = "{\"code\":\"\",\"silent\":false,\"store_history\":false,\"user_expressions\":{},"
                          "\"allow_stdin\":false,\"stop_on_error\":true}";
    for (int i = 0; i < n + 10; i++) {
        double t0 = now_us();
        send_req(k.shell, "execute_request", content, id);
        int got_reply = 0, got_idle = 0;
        while (!(got_reply && got_idle)) {
            zmq_pollitem_t items[2] = {{k.shell, 0, ZMQ_POLLIN, 0}, {k.iopub, 0, ZMQ_POLLIN, 0}};
            if (zmq_poll(items, 2, 10000) <= 0) { fprintf(stderr, "timeout\n"); return 1; }
            if ((items[0].revents & ZMQ_POLLIN) && recv_msg(k.shell, 0, type, parent, state))
                got_reply |= !strcmp(parent, id);
            if ((items[1].revents & ZMQ_POLLIN) && recv_msg(k.iopub, 0, type, parent, state))
                got_idle |= !strcmp(parent, id) && !strcmp(type, "status") && !strcmp(state, "idle");
        }
        if (i >= 10) printf("%.1f\n", now_us() - t0);   /* the first 10 warm up */
    }
    stop(&k);
    return 0;
}
