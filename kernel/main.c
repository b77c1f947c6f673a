/* loupe-kernel — the Jupyter kernel for the loupe language.
 *
 *   loupe-kernel -f CONNECTION_FILE     run (Jupyter starts it this way)
 *   loupe-kernel install [...]          write the kernelspec (see install.c)
 *   loupe-kernel --version */
#include <stdio.h>
#include <string.h>
#include "kernel.h"

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "install")) return kn_install(argc - 2, argv + 2, argv[0]);
    if (argc >= 2 && !strcmp(argv[1], "--version")) { printf("loupe-kernel %s\n", lp_version()); return 0; }
    const char *conn = NULL;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-f") || !strcmp(argv[i], "--connection-file")) && i + 1 < argc) conn = argv[++i];
        else if (!strncmp(argv[i], "--f=", 4)) conn = argv[i] + 4;
    }
    if (!conn) {
        fprintf(stderr, "usage: loupe-kernel -f CONNECTION_FILE\n       loupe-kernel install [--user | --sys-prefix | --prefix DIR] [--name NAME]\n");
        return 2;
    }
    static kn_kernel k;
    if (kn_start(&k, conn)) return 1;
    return kn_run(&k);
}
