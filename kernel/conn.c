#include "conn.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kn_conn_parse(const char *text, size_t len, kn_conn *c, char *err, size_t cap) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *j = json_loadb(text, len, 0, &je);
    if (!j || !json_is_object(j)) {
        snprintf(err, cap, "connection file is not a JSON object (%s, line %d)", j ? "not an object" : je.text, je.line);
        json_decref(j);
        return -1;
    }
    int rc = -1;
    const char *transport = json_string_value(json_object_get(j, "transport"));
    if (!transport) transport = "tcp";
    if (strcmp(transport, "tcp") && strcmp(transport, "ipc")) {
        snprintf(err, cap, "unknown transport \"%s\" (expected tcp or ipc)", transport);
        goto out;
    }
    snprintf(c->transport, sizeof c->transport, "%s", transport);
    const char *ip = json_string_value(json_object_get(j, "ip"));
    if (!ip) ip = "127.0.0.1";
    if (strlen(ip) >= sizeof c->ip) { snprintf(err, cap, "ip is too long"); goto out; }
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    const char *scheme = json_string_value(json_object_get(j, "signature_scheme"));
    if (scheme && strcmp(scheme, "hmac-sha256")) {
        snprintf(err, cap, "unknown signature_scheme \"%s\" (loupe supports hmac-sha256)", scheme);
        goto out;
    }
    const char *key = json_string_value(json_object_get(j, "key"));
    c->key = strdup(key ? key : "");
    c->key_len = strlen(c->key);
    struct { const char *name; int *port; } ports[] = {
        {"shell_port", &c->shell_port}, {"iopub_port", &c->iopub_port},
        {"stdin_port", &c->stdin_port}, {"control_port", &c->control_port},
        {"hb_port", &c->hb_port}};
    for (size_t i = 0; i < sizeof ports / sizeof ports[0]; i++) {
        json_t *p = json_object_get(j, ports[i].name);
        if (!json_is_integer(p) || json_integer_value(p) <= 0 || json_integer_value(p) > 65535) {
            snprintf(err, cap, "%s is missing or not a port number", ports[i].name);
            goto out;
        }
        *ports[i].port = (int)json_integer_value(p);
    }
    rc = 0;
out:
    if (rc) { free(c->key); c->key = NULL; }
    json_decref(j);
    return rc;
}

int kn_conn_load(const char *path, kn_conn *c, char *err, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, cap, "cannot read connection file %s", path); return -1; }
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n == sizeof buf) { snprintf(err, cap, "connection file %s is too large", path); return -1; }
    if (kn_conn_parse(buf, n, c, err, cap)) {
        char inner[512];
        snprintf(inner, sizeof inner, "%s", err);
        snprintf(err, cap, "%s: %s", path, inner);
        return -1;
    }
    return 0;
}

void kn_conn_free(kn_conn *c) { free(c->key); c->key = NULL; }

void kn_conn_endpoint(const kn_conn *c, int port, char *out, size_t cap) {
    if (!strcmp(c->transport, "ipc"))
        snprintf(out, cap, "ipc://%s-%d", c->ip, port);
    else if (strchr(c->ip, ':'))
        snprintf(out, cap, "tcp://[%s]:%d", c->ip, port);
    else
        snprintf(out, cap, "tcp://%s:%d", c->ip, port);
}
