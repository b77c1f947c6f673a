/* handlers.c — the shell channel: one handler per msg_type, busy/idle around each, and the
 * output sink that turns what a cell shows into IOPub messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include "kernel.h"
#include "util/err.h"
#include "util/mem.h"

json_t *kn_kernel_info(void) {
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s}, s:s, s:b, s:[{s:s, s:s}]}",
        "status", "ok", "protocol_version", KN_PROTOCOL_VERSION, "implementation", "loupe",
        "implementation_version", lp_version(),
        "language_info", "name", "loupe", "version", lp_version(), "mimetype", "text/x-loupe",
        "file_extension", ".loupe", "pygments_lexer", "python", "codemirror_mode", "python",
        "banner", lp_banner(), "debugger", 0,
        "help_links", "text", "loupe language reference", "url",
        "https://github.com/loupe-kernel/loupe/blob/main/docs/language.md");
}

/* ---------- Unicode positions: Jupyter counts code points, the runtime counts bytes ---------- */

static size_t cp_to_byte(const char *s, size_t len, long cp) {
    size_t i = 0;
    for (long c = 0; i < len && c < cp; c++) {
        i++;
        while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
    }
    return i;
}

static long byte_to_cp(const char *s, size_t byte) {
    long c = 0;
    for (size_t i = 0; i < byte; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
    return c;
}

/* ---------- the output sink ---------- */

static void sink_stream(void *ctx, int fd, const char *text, size_t n) {
    kn_kernel *k = ctx;
    if (k->cur_silent || n == 0) return;
    kn_publish_stream(k, k->cur, fd == 2 ? "stderr" : "stdout", text, n);
}

static void sink_display(void *ctx, json_t *data, json_t *metadata, const char *display_id, int update) {
    kn_kernel *k = ctx;
    if (k->cur_silent) return;
    json_t *c = json_pack("{s:O, s:o}", "data", data,
                          "metadata", metadata ? json_incref(metadata) : json_object());
    if (display_id) json_object_set_new(c, "transient", json_pack("{s:s}", "display_id", display_id));
    kn_publish(k, k->cur, update && display_id ? "update_display_data" : "display_data", c);
}

static void sink_clear(void *ctx, int wait) {
    kn_kernel *k = ctx;
    if (k->cur_silent) return;
    kn_publish(k, k->cur, "clear_output", json_pack("{s:b}", "wait", wait));
}

static void sink_page(void *ctx, json_t *data) {
    kn_kernel *k = ctx;
    json_array_append_new(k->cur_payload, json_pack("{s:s, s:O, s:i}", "source", "page", "data", data, "start", 0));
}

static char *sink_input(void *ctx, const char *prompt, int password) {
    kn_kernel *k = ctx;
    if (!k->cur_allow_stdin)
        return lp_seterr("input: this front end does not accept input (allow_stdin is false)"), NULL;
    kn_publish_flush(k);   /* text printed before the prompt must be visible first */
    /* Drop stale replies from an earlier, interrupted prompt. */
    kn_msg stale;
    while (kn_recv(k, k->stdin_sock, 0, &stale) == 1) kn_msg_free(&stale);
    kn_reply(k, k->stdin_sock, k->cur, "input_request",
             json_pack("{s:s, s:b}", "prompt", prompt ? prompt : "", "password", password));
    for (;;) {
        if (atomic_load(&k->interrupted) || atomic_load(&k->quit))
            return lp_seterr("Interrupted"), NULL;
        kn_msg m;
        int rc = kn_recv(k, k->stdin_sock, 50, &m);
        if (rc < 0) return lp_seterr("input: the kernel is shutting down"), NULL;
        if (rc == 0) continue;
        char *out = NULL;
        if (!strcmp(m.msg_type, "input_reply")) {
            const char *v = json_string_value(json_object_get(m.content, "value"));
            out = lp_strdup(v ? v : "");
        }
        kn_msg_free(&m);
        if (out) return out;
    }
}

/* ---------- execute ---------- */

static char *plain_text(json_t *bundle) {
    const char *t = json_string_value(json_object_get(bundle, "text/plain"));
    return t ? strdup(t) : NULL;
}

static json_t *user_expressions(kn_kernel *k, json_t *exprs) {
    json_t *out = json_object();
    const char *name;
    json_t *v;
    json_object_foreach(exprs, name, v) {
        const char *code = json_string_value(v);
        json_t *r = code ? lp_user_expression(k->interp, code) : NULL;
        if (!r) r = json_pack("{s:s, s:s, s:s, s:[]}", "status", "error", "ename", "TypeError",
                              "evalue", "user expression is not a string", "traceback");
        json_object_set_new(out, name, r);
    }
    return out;
}

static int handle_execute(kn_kernel *k, kn_msg *m) {
    json_t *c = m->content;
    const char *code = json_string_value(json_object_get(c, "code"));
    if (!code) code = "";
    size_t len = json_string_length(json_object_get(c, "code"));
    int silent = json_is_true(json_object_get(c, "silent"));
    json_t *sh = json_object_get(c, "store_history");
    int store = silent ? 0 : (sh ? json_is_true(sh) : 1);
    json_t *soe = json_object_get(c, "stop_on_error");
    int stop_on_error = soe ? json_is_true(soe) : 1;

    if (store) k->execution_count++;
    int count = k->execution_count ? k->execution_count : 1;
    if (!silent) {
        kn_out o;
        kn_begin(k, &o, m, "execute_input");
        kn_buf_puts(&o.b, "{\"code\":");
        kn_buf_jstr(&o.b, code, len);   /* UTF-8: jansson checked it */
        kn_buf_puts(&o.b, ",\"execution_count\":");
        kn_buf_int(&o.b, count);
        kn_buf_puts(&o.b, "}");
        kn_publish_end(k, &o);
    }

    k->cur = m;
    k->cur_silent = silent;
    k->cur_allow_stdin = json_is_true(json_object_get(c, "allow_stdin"));
    k->cur_payload = json_array();
    atomic_store(&k->interrupted, 0);
    lp_sink sink = {k, sink_stream, sink_display, sink_clear, sink_input, sink_page};
    lp_outcome out = {0};
    lp_execute(k->interp, code, len, &sink, &out);

    char *result_text = NULL;
    json_t *uev = NULL, *err_reply = NULL;
    if (!out.error) {
        if (out.result && !silent) {
            result_text = plain_text(out.result);
            kn_publish(k, m, "execute_result",
                       json_pack("{s:i, s:O, s:{}}", "execution_count", count, "data", out.result, "metadata"));
        }
        json_t *ue = json_object_get(c, "user_expressions");
        if (json_object_size(ue)) uev = user_expressions(k, ue);
    } else {
        json_t *tb = out.traceback ? out.traceback : json_array();
        const char *ename = out.ename ? out.ename : "Error", *evalue = out.evalue ? out.evalue : "";
        kn_publish(k, m, "error", json_pack("{s:s, s:s, s:O}", "ename", ename, "evalue", evalue, "traceback", tb));
        err_reply = json_pack("{s:s, s:i, s:s, s:s, s:O, s:O, s:{}}", "status", "error", "execution_count", count,
                              "ename", ename, "evalue", evalue, "traceback", tb, "payload", k->cur_payload,
                              "user_expressions");
        if (!out.traceback) json_decref(tb);
    }
    if (store) kn_hist_add(k->hist, count, code, result_text);
    free(result_text);
    kn_out o;
    kn_begin(k, &o, m, "execute_reply");
    if (err_reply) {
        kn_buf_json(&o.b, err_reply);
    } else {
        /* the common reply, written directly: {"status":"ok","execution_count":N,…} */
        kn_buf_puts(&o.b, "{\"status\":\"ok\",\"execution_count\":");
        kn_buf_int(&o.b, count);
        kn_buf_puts(&o.b, ",\"payload\":");
        if (json_array_size(k->cur_payload)) kn_buf_json(&o.b, k->cur_payload);
        else kn_buf_puts(&o.b, "[]");
        kn_buf_puts(&o.b, ",\"user_expressions\":");
        kn_buf_json(&o.b, uev);   /* NULL: {} */
        kn_buf_puts(&o.b, "}");
    }
    kn_reply_end(k, &o, k->shell, m);
    json_decref(uev);
    json_decref(err_reply);
    int failed = out.error;
    lp_outcome_free(&out);
    json_decref(k->cur_payload);
    k->cur_payload = NULL;
    k->cur = NULL;
    return failed && stop_on_error;
}

/* After a failed cell, requests already queued behind it are answered "aborted", as
 * ipykernel does: the user meant them to run after a cell that did not succeed. The queue is
 * read to its end before the first answer goes out, so a request the client sends in
 * response to an answer is never mistaken for a queued one. */
static void abort_queued(kn_kernel *k) {
    kn_msg queued[64];
    for (;;) {
        size_t n = 0;
        while (n < 64 && kn_recv(k, k->shell, 0, &queued[n]) == 1) n++;
        for (size_t i = 0; i < n; i++) {
            kn_publish_status(k, &queued[i], "busy");
            char reply_type[160];
            kn_reply_type(queued[i].msg_type, reply_type, sizeof reply_type);
            kn_reply(k, k->shell, &queued[i], reply_type, json_pack("{s:s}", "status", "aborted"));
            kn_publish_status(k, &queued[i], "idle");
            kn_msg_free(&queued[i]);
        }
        if (n < 64) return;
    }
}

/* ---------- the other requests ---------- */

/* The code of a complete/inspect request and its cursor as a byte offset. */
static const char *code_and_cursor(kn_msg *m, size_t *len, size_t *cursor) {
    json_t *jc = json_object_get(m->content, "code");
    const char *code = json_string_value(jc);
    if (!code) code = "";
    *len = json_string_length(jc);
    json_t *jp = json_object_get(m->content, "cursor_pos");
    *cursor = json_is_integer(jp) ? cp_to_byte(code, *len, (long)json_integer_value(jp)) : *len;
    return code;
}

static void handle_complete(kn_kernel *k, kn_msg *m) {
    size_t len, cur;
    const char *code = code_and_cursor(m, &len, &cur);
    size_t start = cur, end = cur;
    json_t *items = lp_complete(k->interp, code, len, cur, &start, &end);
    json_t *matches = json_array(), *types = json_array();
    long cs = byte_to_cp(code, start), ce = byte_to_cp(code, end);
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        json_t *text = json_object_get(it, "text");
        if (!json_is_string(text)) continue;
        json_array_append(matches, text);
        json_array_append_new(types, json_pack("{s:i, s:i, s:O, s:s}", "start", cs, "end", ce, "text", text,
                                               "type", json_string_value(json_object_get(it, "type")) ?: ""));
    }
    json_decref(items);
    kn_reply(k, k->shell, m, "complete_reply",
             json_pack("{s:s, s:o, s:i, s:i, s:{s:o}}", "status", "ok", "matches", matches, "cursor_start", cs,
                       "cursor_end", ce, "metadata", "_jupyter_types_experimental", types));
}

static void handle_inspect(kn_kernel *k, kn_msg *m) {
    size_t len, cur;
    const char *code = code_and_cursor(m, &len, &cur);
    int detail = (int)json_integer_value(json_object_get(m->content, "detail_level"));
    json_t *data = lp_inspect(k->interp, code, len, cur, detail);
    kn_reply(k, k->shell, m, "inspect_reply",
             json_pack("{s:s, s:b, s:o, s:{}}", "status", "ok", "found", data != NULL,
                       "data", data ? data : json_object(), "metadata"));
}

static void handle_is_complete(kn_kernel *k, kn_msg *m) {
    json_t *jc = json_object_get(m->content, "code");
    const char *code = json_string_value(jc);
    char indent[64] = "";
    int st = lp_is_complete(k->interp, code ? code : "", json_string_length(jc), indent, sizeof indent);
    json_t *r = json_pack("{s:s}", "status", st == LP_COMPLETE ? "complete" : st == LP_INCOMPLETE ? "incomplete" : "invalid");
    if (st == LP_INCOMPLETE) json_object_set_new(r, "indent", json_string(indent));
    kn_reply(k, k->shell, m, "is_complete_reply", r);
}

static void handle_history(kn_kernel *k, kn_msg *m) {
    kn_reply(k, k->shell, m, "history_reply",
             json_pack("{s:s, s:o}", "status", "ok", "history", kn_hist_query(k->hist, m->content)));
}

static void handle_kernel_info(kn_kernel *k, kn_msg *m) {
    kn_reply(k, k->shell, m, "kernel_info_reply", kn_kernel_info());
}

static void handle_comm_info(kn_kernel *k, kn_msg *m) {
    kn_reply(k, k->shell, m, "comm_info_reply", json_pack("{s:s, s:{}}", "status", "ok", "comms"));
}

/* No comm targets yet: a comm_open is answered by closing it, as ipykernel does. */
static void handle_comm_open(kn_kernel *k, kn_msg *m) {
    const char *id = json_string_value(json_object_get(m->content, "comm_id"));
    if (id) kn_publish(k, m, "comm_close", json_pack("{s:s, s:{}}", "comm_id", id, "data"));
}

static void handle_ignore(kn_kernel *k, kn_msg *m) { (void)k; (void)m; }

/* Older clients send shutdown on shell; answer it the same way as on control. */
static void handle_shutdown(kn_kernel *k, kn_msg *m) {
    int restart = json_is_true(json_object_get(m->content, "restart"));
    kn_reply(k, k->shell, m, "shutdown_reply", json_pack("{s:s, s:b}", "status", "ok", "restart", restart));
    atomic_store(&k->quit, 1);
}

static const struct {
    const char *type;
    void (*fn)(kn_kernel *, kn_msg *);
} shell_handlers[] = {
    {"kernel_info_request", handle_kernel_info},
    {"complete_request", handle_complete},
    {"inspect_request", handle_inspect},
    {"is_complete_request", handle_is_complete},
    {"history_request", handle_history},
    {"comm_info_request", handle_comm_info},
    {"comm_open", handle_comm_open},
    {"comm_msg", handle_ignore},
    {"comm_close", handle_ignore},
    {"shutdown_request", handle_shutdown},
};

void kn_dispatch_shell(kn_kernel *k, kn_msg *m) {
    if (!strcmp(m->msg_type, "execute_request")) kn_wait_subscriber(k, 2000);
    kn_publish_status(k, m, "busy");
    int abort = 0;
    if (!strcmp(m->msg_type, "execute_request")) {
        abort = handle_execute(k, m);
    } else {
        size_t i, n = sizeof shell_handlers / sizeof shell_handlers[0];
        for (i = 0; i < n && strcmp(shell_handlers[i].type, m->msg_type); i++) {}
        if (i < n) shell_handlers[i].fn(k, m);
        else fprintf(stderr, "loupe: shell: unknown message type %s\n", m->msg_type);
    }
    /* before this request's idle: a client that waits for the idle and then sends more
     * must never see that new request aborted */
    if (abort) abort_queued(k);
    kn_publish_status(k, m, "idle");
}
