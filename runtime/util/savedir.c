/* savedir.c — a directory of files that appears whole (savedir.h). */
#define _GNU_SOURCE
#include "util/savedir.h"
#include "util/err.h"
#include "util/mem.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = lp_malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    s[la] = '/';
    memcpy(s + la + 1, b, lb + 1);
    return s;
}

static int mkdirs(const char *dir) {
    char *p = lp_strdup(dir);
    if (!p) return lp_seterr("out of memory");
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0755) < 0 && errno != EEXIST) {
                int rc = lp_seterr("%s: %s", p, strerror(errno));
                lp_free(p);
                return rc;
            }
            *s = '/';
        }
    lp_free(p);
    return 0;
}

static void fsync_dir(const char *dir) {   /* best effort: makes renames durable */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) { fsync(fd); close(fd); }
}

/* Remove a directory of plain files (a temporary one). */
static void remove_flat(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = join(dir, e->d_name);
            if (p) { unlink(p); lp_free(p); }
        }
        closedir(d);
    }
    rmdir(dir);
}

static void split(const char *target, char **parent, const char **base) {
    const char *sl = strrchr(target, '/');
    *base = sl ? sl + 1 : target;
    *parent = sl ? lp_strndup(target, (size_t)(sl - target) + (sl == target)) : lp_strdup(".");
}

/* `.<base>.loupe-tmp-<pid>-<n>` whose process is gone (or is us: an earlier failed save). */
static void clean_stale(const char *parent, const char *base, const char *target) {
    DIR *d = opendir(parent);
    if (d) {
        size_t bl = strlen(base);
        struct dirent *e;
        while ((e = readdir(d))) {
            const char *n = e->d_name;
            if (n[0] != '.' || strncmp(n + 1, base, bl) || strncmp(n + 1 + bl, ".loupe-tmp-", 11))
                continue;
            long pid = strtol(n + 1 + bl + 11, NULL, 10);
            if (pid > 0 && pid != (long)getpid() && !(kill((pid_t)pid, 0) < 0 && errno == ESRCH))
                continue;   /* another live process is saving here */
            char *p = join(parent, n);
            if (p) { remove_flat(p); lp_free(p); }
        }
        closedir(d);
    }
    /* older loupe wrote NAME.tmp.XXXXXX inside the target */
    if ((d = opendir(target))) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strstr(e->d_name, ".tmp.")) continue;
            char *p = join(target, e->d_name);
            struct stat s;
            if (p && lstat(p, &s) == 0 && S_ISREG(s.st_mode)) unlink(p);
            lp_free(p);
        }
        closedir(d);
    }
}

int sd_begin(sd_dir *d, const char *target) {
    memset(d, 0, sizeof *d);
    size_t l = strlen(target);
    while (l > 1 && target[l - 1] == '/') l--;
    if (l == 0) return lp_seterr("empty directory name");
    if (!(d->target = lp_strndup(target, l))) return lp_seterr("out of memory");
    struct stat s;
    if (stat(d->target, &s) == 0 && !S_ISDIR(s.st_mode)) {
        int rc = lp_seterr("%s exists and is not a directory", d->target);
        sd_abort(d);
        return rc;
    }
    char *parent;
    const char *base;
    split(d->target, &parent, &base);
    if (!parent) { sd_abort(d); return lp_seterr("out of memory"); }
    if (!strcmp(base, ".") || !strcmp(base, "..")) {
        lp_free(parent);
        sd_abort(d);
        return lp_seterr("`%s`: name the directory itself, not `.` or `..`", target);
    }
    if (mkdirs(d->target) < 0) { lp_free(parent); sd_abort(d); return -1; }
    clean_stale(parent, base, d->target);
    static unsigned counter;
    size_t cap = strlen(parent) + strlen(base) + 64;
    d->tmp = lp_malloc(cap);
    if (!d->tmp) { lp_free(parent); sd_abort(d); return lp_seterr("out of memory"); }
    int made = -1;
    for (int tries = 0; tries < 100 && made < 0; tries++) {
        snprintf(d->tmp, cap, "%s/.%s.loupe-tmp-%ld-%u", parent, base, (long)getpid(), ++counter);
        made = mkdir(d->tmp, 0755);
        if (made < 0 && errno != EEXIST) break;
    }
    lp_free(parent);
    if (made < 0) {
        int rc = lp_seterr("%s: cannot create a temporary directory: %s", d->tmp, strerror(errno));
        lp_free(d->tmp);
        d->tmp = NULL;
        sd_abort(d);
        return rc;
    }
    return 0;
}

char *sd_path(const sd_dir *d, const char *name) {
    char *p = join(d->tmp, name);
    if (!p) lp_seterr("out of memory");
    return p;
}

static int write_fd_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) { if (errno == EINTR) continue; return -1; }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int sd_write_text(sd_dir *d, const char *name, const char *text) {
    char *p = sd_path(d, name);
    if (!p) return -1;
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    if (fd < 0 || write_fd_all(fd, text, strlen(text)) < 0 || fsync(fd) < 0)
        rc = lp_seterr("%s: write failed: %s", p, strerror(errno));
    if (fd >= 0 && close(fd) < 0 && !rc) rc = lp_seterr("%s: write failed: %s", p, strerror(errno));
    lp_free(p);
    return rc;
}

int sd_copy_file(sd_dir *d, const char *src, const char *name) {
    char *p = sd_path(d, name);
    if (!p) return -1;
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;
    if (in < 0) rc = lp_seterr("%s: %s", src, strerror(errno));
    else if ((out = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        rc = lp_seterr("%s: %s", p, strerror(errno));
    char buf[65536];
    while (!rc) {
        ssize_t k = read(in, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) rc = lp_seterr("%s: read failed: %s", src, strerror(errno));
        if (k <= 0) break;
        if (write_fd_all(out, buf, (size_t)k) < 0) rc = lp_seterr("%s: write failed: %s", p, strerror(errno));
    }
    if (!rc && fsync(out) < 0) rc = lp_seterr("%s: write failed: %s", p, strerror(errno));
    if (in >= 0) close(in);
    if (out >= 0 && close(out) < 0 && !rc) rc = lp_seterr("%s: write failed: %s", p, strerror(errno));
    lp_free(p);
    return rc;
}

static int is_mine(const char *name, const char *const *mine) {
    if (strstr(name, ".tmp.")) return 1;   /* leftovers of older versions */
    for (; *mine; mine++) {
        size_t l = strlen(*mine);
        if (l && (*mine)[l - 1] == '*' ? !strncmp(name, *mine, l - 1) : !strcmp(name, *mine))
            return 1;
    }
    return 0;
}

/* The target holds only plain files this kind of save writes. */
static int only_mine(const char *target, const char *const *mine) {
    DIR *d = opendir(target);
    if (!d) return 0;
    int ok = 1;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = join(target, e->d_name);
        struct stat s;
        ok = p && lstat(p, &s) == 0 && S_ISREG(s.st_mode) && is_mine(e->d_name, mine);
        lp_free(p);
    }
    closedir(d);
    return ok;
}

static void sd_free(sd_dir *d) {
    lp_free(d->target);
    lp_free(d->tmp);
    d->target = d->tmp = NULL;
}

void sd_abort(sd_dir *d) {
    if (d->tmp) remove_flat(d->tmp);
    sd_free(d);
}

int sd_commit(sd_dir *d, const char *const *mine) {
    fsync_dir(d->tmp);
    char *parent;
    const char *base;
    split(d->target, &parent, &base);
    if (!parent) { sd_abort(d); return lp_seterr("out of memory"); }
    int rc = 0;
    d->exchanged = 0;
    DIR *probe = opendir(d->target);
    int empty = 1;
    if (probe) {
        struct dirent *e;
        while ((e = readdir(probe)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) { empty = 0; break; }
        closedir(probe);
    }
    /* a symbolic link to a directory stays a link: its files are replaced one by one */
    struct stat ls;
    int link = lstat(d->target, &ls) == 0 && S_ISLNK(ls.st_mode);
    /* an empty target (sd_begin made it, or a fresh folder): a plain rename replaces it */
    if (!link && empty && rename(d->tmp, d->target) == 0) {
        fsync_dir(parent);
        lp_free(parent);
        sd_free(d);
        return 0;
    }
    if (!link && only_mine(d->target, mine) &&
        renameat2(AT_FDCWD, d->tmp, AT_FDCWD, d->target, RENAME_EXCHANGE) == 0) {
        d->exchanged = 1;
        fsync_dir(parent);
        remove_flat(d->tmp);   /* the old files */
        lp_free(parent);
        sd_free(d);
        return 0;
    }
    /* file by file, in the order of `mine` (then anything else written) */
    DIR *dd = opendir(d->tmp);
    if (!dd) rc = lp_seterr("%s: %s", d->tmp, strerror(errno));
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while (!rc && (e = readdir(dd))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char **nn = lp_realloc(names, sizeof *nn * (n + 1));
        if (!nn || !(nn[n] = lp_strdup(e->d_name))) { if (nn) names = nn; rc = lp_seterr("out of memory"); break; }
        names = nn;
        n++;
    }
    if (dd) closedir(dd);
    size_t order_len = 0;
    while (mine[order_len]) order_len++;
    for (size_t pass = 0; !rc && pass <= order_len; pass++) {
        for (size_t i = 0; !rc && i < n; i++) {
            if (!names[i]) continue;
            int want = pass < order_len ? !strcmp(names[i], mine[pass]) : 1;
            if (!want) continue;
            char *from = join(d->tmp, names[i]), *to = join(d->target, names[i]);
            if (!from || !to) rc = lp_seterr("out of memory");
            else if (rename(from, to) < 0) rc = lp_seterr("%s: cannot rename into place: %s", to, strerror(errno));
            lp_free(from);
            lp_free(to);
            lp_free(names[i]);
            names[i] = NULL;
        }
    }
    for (size_t i = 0; i < n; i++) lp_free(names[i]);
    lp_free(names);
    fsync_dir(d->target);
    lp_free(parent);
    sd_abort(d);
    return rc;
}
