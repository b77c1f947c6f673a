/* History: kept across kernel restarts (sessions), tail/range/search, file mode 0600. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "t.h"
#include "history.h"

static char path[256];

static json_t *q(kn_history *h, const char *req) {
    json_t *r = json_loads(req, 0, NULL);
    json_t *out = kn_hist_query(h, r);
    json_decref(r);
    return out;
}

static void test_sessions_and_queries(void) {
    kn_history *h = kn_hist_open(path);
    T_EQ_INT(kn_hist_session(h), 1);
    kn_hist_add(h, 1, "x = 1", NULL);
    kn_hist_add(h, 2, "print x", NULL);
    kn_hist_close(h);

    struct stat st;
    T_EQ_INT(stat(path, &st), 0);
    T_EQ_INT(st.st_mode & 0777, 0600);

    h = kn_hist_open(path);   /* a restarted kernel: a new session that sees the old one */
    T_EQ_INT(kn_hist_session(h), 2);
    kn_hist_add(h, 1, "x", "1");
    json_t *tail = q(h, "{\"hist_access_type\":\"tail\",\"n\":2,\"output\":false}");
    T_EQ_INT(json_array_size(tail), 2);
    T_STR(json_string_value(json_array_get(json_array_get(tail, 1), 2)), "x");
    T_EQ_INT(json_integer_value(json_array_get(json_array_get(tail, 0), 0)), 1);
    json_decref(tail);

    json_t *out = q(h, "{\"hist_access_type\":\"tail\",\"n\":1,\"output\":true}");
    T_STR(json_string_value(json_array_get(json_array_get(json_array_get(out, 0), 2), 1)), "1");
    json_decref(out);

    json_t *range = q(h, "{\"hist_access_type\":\"range\",\"session\":-1,\"start\":2,\"stop\":3}");
    T_EQ_INT(json_array_size(range), 1);
    T_STR(json_string_value(json_array_get(json_array_get(range, 0), 2)), "print x");
    json_decref(range);

    kn_hist_add(h, 2, "print x", NULL);
    json_t *s = q(h, "{\"hist_access_type\":\"search\",\"pattern\":\"print*\"}");
    T_EQ_INT(json_array_size(s), 2);
    json_decref(s);
    s = q(h, "{\"hist_access_type\":\"search\",\"pattern\":\"print*\",\"unique\":true}");
    T_EQ_INT(json_array_size(s), 1);
    json_decref(s);
    s = q(h, "{\"hist_access_type\":\"search\",\"pattern\":\"*\",\"n\":3}");
    T_EQ_INT(json_array_size(s), 3);
    T_STR(json_string_value(json_array_get(json_array_get(s, 2), 2)), "print x");   /* newest last */
    json_decref(s);
    kn_hist_close(h);
}

static void test_glob(void) {
    T_OK(kn_glob("a*c", "abbbc"));
    T_OK(kn_glob("?b*", "ab"));
    T_OK(!kn_glob("a*d", "abc"));
    T_OK(kn_glob("*", ""));
}

/* The history and its session counter (history.c) are removed before and after: a file left
 * by an earlier run whose pid this one reuses would start the sessions past 1. */
static void remove_files(void) {
    char counter[sizeof path + 16];
    snprintf(counter, sizeof counter, "%s.session", path);
    unlink(path);
    unlink(counter);
}

int main(void) {
    snprintf(path, sizeof path, "/tmp/loupe-test-history-%d/x/history.jsonl", (int)getpid());
    remove_files();
    T_RUN(test_sessions_and_queries);
    T_RUN(test_glob);
    remove_files();
    *strrchr(path, '/') = 0;   /* and the two directories kn_hist_open made */
    rmdir(path);
    *strrchr(path, '/') = 0;
    rmdir(path);
    return t_done();
}
