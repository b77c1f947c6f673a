/* The connection file: every field read, every way it can be wrong refused clearly. */
#include "t.h"
#include "conn.h"

static const char *GOOD =
    "{\"shell_port\": 5001, \"iopub_port\": 5002, \"stdin_port\": 5003, \"control_port\": 5004,"
    " \"hb_port\": 5005, \"ip\": \"127.0.0.1\", \"key\": \"a0436f6c-1916-498b-8eb9-e81ab9368e84\","
    " \"transport\": \"tcp\", \"signature_scheme\": \"hmac-sha256\", \"kernel_name\": \"loupe\"}";

static void test_good(void) {
    kn_conn c;
    char err[256], ep[256];
    T_EQ_INT(kn_conn_parse(GOOD, strlen(GOOD), &c, err, sizeof err), 0);
    T_EQ_INT(c.shell_port, 5001);
    T_EQ_INT(c.hb_port, 5005);
    T_EQ_INT(c.key_len, 36);
    kn_conn_endpoint(&c, c.iopub_port, ep, sizeof ep);
    T_STR(ep, "tcp://127.0.0.1:5002");
    kn_conn_free(&c);
}

static void test_ipc_and_ipv6(void) {
    kn_conn c;
    char err[256], ep[256];
    const char *ipc = "{\"transport\":\"ipc\",\"ip\":\"/tmp/kernel-1\",\"shell_port\":1,\"iopub_port\":2,"
                      "\"stdin_port\":3,\"control_port\":4,\"hb_port\":5,\"key\":\"\"}";
    T_EQ_INT(kn_conn_parse(ipc, strlen(ipc), &c, err, sizeof err), 0);
    kn_conn_endpoint(&c, 4, ep, sizeof ep);
    T_STR(ep, "ipc:///tmp/kernel-1-4");
    T_EQ_INT(c.key_len, 0);
    kn_conn_free(&c);
    const char *v6 = "{\"ip\":\"::1\",\"shell_port\":1,\"iopub_port\":2,\"stdin_port\":3,\"control_port\":4,\"hb_port\":5}";
    T_EQ_INT(kn_conn_parse(v6, strlen(v6), &c, err, sizeof err), 0);
    kn_conn_endpoint(&c, 1, ep, sizeof ep);
    T_STR(ep, "tcp://[::1]:1");
    kn_conn_free(&c);
}

static void test_errors(void) {
    kn_conn c;
    char err[256];
    const char *scheme = "{\"signature_scheme\":\"hmac-md5\",\"shell_port\":1,\"iopub_port\":2,\"stdin_port\":3,\"control_port\":4,\"hb_port\":5}";
    T_EQ_INT(kn_conn_parse(scheme, strlen(scheme), &c, err, sizeof err), -1);
    T_CONTAINS(err, "unknown signature_scheme \"hmac-md5\"");
    const char *transport = "{\"transport\":\"udp\"}";
    T_EQ_INT(kn_conn_parse(transport, strlen(transport), &c, err, sizeof err), -1);
    T_CONTAINS(err, "unknown transport");
    const char *noport = "{\"shell_port\":1,\"iopub_port\":2,\"stdin_port\":3,\"control_port\":4}";
    T_EQ_INT(kn_conn_parse(noport, strlen(noport), &c, err, sizeof err), -1);
    T_CONTAINS(err, "hb_port is missing");
    T_EQ_INT(kn_conn_parse("{", 1, &c, err, sizeof err), -1);
    T_CONTAINS(err, "not a JSON object");
    T_EQ_INT(kn_conn_load("/nonexistent/kernel.json", &c, err, sizeof err), -1);
    T_CONTAINS(err, "cannot read connection file /nonexistent/kernel.json");
}

int main(void) {
    T_RUN(test_good);
    T_RUN(test_ipc_and_ipv6);
    T_RUN(test_errors);
    return t_done();
}
