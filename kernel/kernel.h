/* kernel.h — the Jupyter kernel: sockets, threads, and the dispatch from msg_type to handler.
 *
 * Threads:
 *   main     the shell socket: runs cells (lp_execute), completion, inspection, history
 *   control  the control socket: interrupt and shutdown are answered while a cell runs
 *   hb       the heartbeat REP socket: echoes whatever arrives
 *   iopub    greets every new subscriber with iopub_welcome and sends coalesced stream
 *            text once it has waited STREAM_FLUSH_MS (a loop of prints sends a few messages,
 *            not thousands). The other threads publish on the XPUB socket themselves, under
 *            pub_lock: no thread hop between a reply and its idle status.
 *
 * The kernel knows nothing about models: it talks to the runtime through runtime/loupe.h. */
#ifndef KN_KERNEL_H
#define KN_KERNEL_H
#include <pthread.h>
#include <stdatomic.h>
#include "conn.h"
#include "history.h"
#include "loupe.h"
#include "wire.h"

/* Stream text waiting to be sent (coalescing). */
typedef struct kn_pending {
    char name[16];       /* "stdout" / "stderr" */
    char *parent;        /* parent header JSON text; NULL: nothing pending */
    size_t parent_len;
    char *text; size_t len, cap;
    double since;        /* ms, when the first pending byte arrived */
} kn_pending;

typedef struct kn_kernel {
    void *zctx;
    kn_conn conn;
    kn_signer signer;
    kn_ids ids;               /* the session and its msg_id counter */
    void *shell, *control, *stdin_sock, *hb;
    void *iopub;              /* XPUB; every use under pub_lock */
    pthread_mutex_t pub_lock;
    kn_pending pending;       /* under pub_lock */
    pthread_t hb_thread, iopub_thread, control_thread;
    lp_interp *interp;
    kn_history *hist;
    int execution_count;
    atomic_int quit;          /* shutdown requested */
    atomic_int stopping;      /* main thread is tearing down */
    atomic_int interrupted;   /* an interrupt arrived for the running cell */
    atomic_int subscribed;    /* an IOPub subscriber is connected (the iopub thread sets it on
                                 a subscription, clears it when the last one leaves) */
    /* The shell request being handled (for the output sink and input_request). */
    kn_msg *cur;
    int cur_silent, cur_allow_stdin;
    json_t *cur_payload;
} kn_kernel;

/* Bind every socket and start the threads; returns 0 or -1 with a message on stderr. */
int  kn_start(kn_kernel *k, const char *connection_file);
/* Serve the shell socket until shutdown. Returns the process exit status. */
int  kn_run(kn_kernel *k);

/* Publish on IOPub from the calling thread (under pub_lock).
 * content is stolen. parent may be NULL (then parent_header is {}). */
void kn_publish(kn_kernel *k, kn_msg *parent, const char *msg_type, json_t *content);
void kn_publish_status(kn_kernel *k, kn_msg *parent, const char *state);
/* Wait until an IOPub subscriber is connected, at most ms milliseconds: a client whose IOPub
 * connection is still on its way when its first execute_request arrives (jupyter console
 * with piped input sends it right after kernel_info) would otherwise miss that cell's output
 * and its idle status, and wait for the idle forever. */
void kn_wait_subscriber(kn_kernel *k, int ms);
/* A message whose content the caller writes as JSON text into o->b: kn_begin writes the
 * header and parent, then kn_publish_end (IOPub) or kn_reply_end (a ROUTER socket, to the
 * request's identities) signs it, sends it and frees o. */
void kn_begin(kn_kernel *k, kn_out *o, kn_msg *parent, const char *msg_type);
void kn_publish_end(kn_kernel *k, kn_out *o);
/* Stream text (coalesced by the IOPub thread). */
void kn_publish_stream(kn_kernel *k, kn_msg *parent, const char *name, const char *text, size_t n);
/* Send pending stream text now (before a prompt, for instance). */
void kn_publish_flush(kn_kernel *k);

/* Reply on a ROUTER socket to request `req` with the same identities. content is stolen. */
void kn_reply(kn_kernel *k, void *sock, kn_msg *req, const char *msg_type, json_t *content);
void kn_reply_end(kn_kernel *k, kn_out *o, void *sock, kn_msg *req);

/* Receive one multipart message; 1: got one in *m, 0: nothing (timeout), -1: context gone.
 * Malformed or badly signed messages are dropped with a line on stderr (returns 0). */
int kn_recv(kn_kernel *k, void *sock, int timeout_ms, kn_msg *m);

/* Shell handlers (handlers.c). */
void kn_dispatch_shell(kn_kernel *k, kn_msg *m);
json_t *kn_kernel_info(void);

/* kernelspec install (install.c): argv after "install". */
int kn_install(int argc, char **argv, const char *self_path);

#endif
