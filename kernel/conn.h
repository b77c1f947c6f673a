/* conn.h — the connection file a Jupyter client writes before starting the kernel:
 *
 *   {"transport": "tcp" | "ipc", "ip": "127.0.0.1",
 *    "shell_port": N, "iopub_port": N, "stdin_port": N, "control_port": N, "hb_port": N,
 *    "signature_scheme": "hmac-sha256", "key": "…", "kernel_name": "…"}
 *
 * With tcp, endpoints are tcp://IP:PORT. With ipc, `ip` is a path prefix and the endpoints
 * are ipc://IP-PORT (jupyter_client's convention). Port 0 is refused: the client picks ports. */
#ifndef KN_CONN_H
#define KN_CONN_H
#include <stddef.h>

typedef struct {
    char transport[8];
    char ip[1024];
    int shell_port, iopub_port, stdin_port, control_port, hb_port;
    char *key;          /* malloc'd, may be "" */
    size_t key_len;
} kn_conn;

/* Returns 0, or -1 with a message in err (unreadable file, bad JSON, unknown
 * signature scheme, unknown transport, missing port). */
int kn_conn_load(const char *path, kn_conn *c, char *err, size_t errcap);
int kn_conn_parse(const char *text, size_t len, kn_conn *c, char *err, size_t errcap);
void kn_conn_free(kn_conn *c);

/* "tcp://127.0.0.1:5555" or "ipc://path-5555" */
void kn_conn_endpoint(const kn_conn *c, int port, char *out, size_t cap);

#endif
