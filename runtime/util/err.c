#include "util/err.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char errbuf[LP_ERR_MAX];

int lp_seterr(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return -1;
}

int lp_preferr(const char *fmt, ...) {
    char prefix[LP_ERR_MAX], old[LP_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errbuf, sizeof old);
    snprintf(errbuf, sizeof errbuf, "%s: %s", prefix, old);
    return -1;
}

const char *lp_geterr(void) { return errbuf[0] ? errbuf : "unknown error"; }
void lp_clearerr(void) { errbuf[0] = 0; }
