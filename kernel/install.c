/* install.c — `loupe-kernel install`: write the kernelspec where `jupyter kernelspec list`
 * finds it. kernel.json names this binary by its absolute path, so the kernel works from
 * any environment; the logos are compiled into the binary (kernel/embed.cmake). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <jansson.h>
#include "kernel.h"

extern const unsigned char kn_logo_32x32_png[], kn_logo_64x64_png[], kn_logo_svg_svg[];
extern const size_t kn_logo_32x32_png_len, kn_logo_64x64_png_len, kn_logo_svg_svg_len;

static int mkdir_p(const char *path) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static int write_file(const char *dir, const char *name, const void *data, size_t n) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "loupe-kernel install: cannot write %s: %s\n", path, strerror(errno));
        if (f) fclose(f);
        return -1;
    }
    return fclose(f);
}

static int python_prefix(char *out, size_t cap) {
    const char *v = getenv("VIRTUAL_ENV");
    if (!v) v = getenv("CONDA_PREFIX");
    if (v) { snprintf(out, cap, "%s", v); return 0; }
    FILE *p = popen("python3 -c 'import sys; print(sys.prefix)' 2>/dev/null", "r");
    if (!p) return -1;
    if (!fgets(out, (int)cap, p)) { pclose(p); return -1; }
    pclose(p);
    out[strcspn(out, "\n")] = 0;
    return out[0] ? 0 : -1;
}

static void usage(void) {
    fprintf(stderr, "usage: loupe-kernel install [--user | --sys-prefix | --prefix DIR] [--name NAME]\n"
                    "  --user        ~/.local/share/jupyter/kernels (the default)\n"
                    "  --sys-prefix  the current Python's sys.prefix/share/jupyter/kernels\n"
                    "  --prefix DIR  DIR/share/jupyter/kernels\n"
                    "  --name NAME   kernel name (default: loupe)\n");
}

int kn_install(int argc, char **argv, const char *self) {
    const char *name = "loupe", *prefix = NULL;
    int mode = 0;   /* 0 user, 1 sys-prefix, 2 prefix */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--user")) mode = 0;
        else if (!strcmp(argv[i], "--sys-prefix")) mode = 1;
        else if (!strcmp(argv[i], "--prefix") && i + 1 < argc) { mode = 2; prefix = argv[++i]; }
        else if (!strcmp(argv[i], "--name") && i + 1 < argc) name = argv[++i];
        else { usage(); return 2; }
    }
    if (!*name || strchr(name, '/')) { fprintf(stderr, "loupe-kernel install: invalid name \"%s\"\n", name); return 2; }
    char base[PATH_MAX], dir[PATH_MAX];
    if (mode == 0) {
        const char *d = getenv("JUPYTER_DATA_DIR"), *home = getenv("HOME");
        if (d && *d) snprintf(base, sizeof base, "%s/kernels", d);
        else snprintf(base, sizeof base, "%s/.local/share/jupyter/kernels", home ? home : ".");
    } else if (mode == 1) {
        char pre[PATH_MAX];
        if (python_prefix(pre, sizeof pre)) {
            fprintf(stderr, "loupe-kernel install: --sys-prefix: no python3 found to ask for sys.prefix\n");
            return 1;
        }
        snprintf(base, sizeof base, "%s/share/jupyter/kernels", pre);
    } else {
        snprintf(base, sizeof base, "%s/share/jupyter/kernels", prefix);
    }
    snprintf(dir, sizeof dir, "%s/%s", base, name);
    if (mkdir_p(dir)) {
        fprintf(stderr, "loupe-kernel install: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char exe[PATH_MAX];
    if (!realpath(self, exe)) snprintf(exe, sizeof exe, "%s", self);
    json_t *spec = json_pack("{s:[s, s, s], s:s, s:s, s:s, s:{}, s:{s:b}}",
                             "argv", exe, "-f", "{connection_file}", "display_name", "loupe",
                             "language", "loupe", "interrupt_mode", "message", "env",
                             "metadata", "debugger", 0);
    char *txt = json_dumps(spec, JSON_INDENT(2));
    int rc = write_file(dir, "kernel.json", txt, strlen(txt)) ||
             write_file(dir, "logo-32x32.png", kn_logo_32x32_png, kn_logo_32x32_png_len) ||
             write_file(dir, "logo-64x64.png", kn_logo_64x64_png, kn_logo_64x64_png_len) ||
             write_file(dir, "logo-svg.svg", kn_logo_svg_svg, kn_logo_svg_svg_len);
    free(txt);
    json_decref(spec);
    if (rc) return 1;
    printf("Installed kernelspec %s in %s\n", name, dir);
    return 0;
}
