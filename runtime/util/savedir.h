/* savedir.h — write a directory of files (an adapter, a checkpoint) so that a reader never
 * sees half of it, even when the process is killed in the middle.
 *
 *   sd_dir d;
 *   if (sd_begin(&d, "out/my-adapter") < 0) fail(lp_geterr());   // out/.my-adapter.loupe-tmp-PID-N/
 *   char *p = sd_path(&d, "adapter_model.safetensors");           // a path inside the temp dir
 *   st_write(p, ...); lp_free(p);
 *   sd_write_text(&d, "adapter_config.json", text);
 *   static const char *const mine[] = {"adapter_config.json", "adapter_model.safetensors", NULL};
 *   if (sd_commit(&d, mine) < 0) ...;     // else sd_abort(&d) on any earlier error
 *
 * How it is made atomic: every file is written, fsync'ed, into a temporary directory beside
 * the target (same filesystem), named `.<base>.loupe-tmp-<pid>-<n>`. Then:
 *  - no target yet: rename(temp, target);
 *  - a target holding only names this kind of save writes (`mine`, plus leftovers of earlier
 *    saves): renameat2(RENAME_EXCHANGE) swaps the two directories in one step, and the old
 *    files (now in the temp directory) are removed;
 *  - a target holding anything else (checkpoint-N folders, the user's files), a symbolic
 *    link, or a filesystem without RENAME_EXCHANGE: each file is renamed into the target, in the order
 *    of `mine` (so put the file readers open first — the config — last). Each file is then
 *    atomic on its own, the set is not: a kill between two renames mixes versions.
 * A process killed before the commit leaves its temporary directory; the next save into the
 * same target removes those whose process is gone (and stray `NAME.tmp.*` files inside the
 * target left by older versions of loupe). */
#ifndef LOUPE_SAVEDIR_H
#define LOUPE_SAVEDIR_H

typedef struct sd_dir {
    char *target;   /* as given, without trailing slashes */
    char *tmp;      /* the temporary directory */
    int exchanged;  /* how the last commit went: 1 swapped, 0 renamed or file by file */
} sd_dir;

/* Make the parent directories, remove stale temporaries of this target, create the temporary
 * directory. -1 + lp_seterr (the target exists and is not a directory, I/O errors). */
int   sd_begin(sd_dir *d, const char *target);
/* tmp/name (lp_free it); NULL + lp_seterr on OOM. */
char *sd_path(const sd_dir *d, const char *name);
/* Write text to tmp/name and fsync it. */
int   sd_write_text(sd_dir *d, const char *name, const char *text);
/* Copy file src to tmp/name and fsync it. */
int   sd_copy_file(sd_dir *d, const char *src, const char *name);
/* Move the files into place (see above); `mine` is a NULL-terminated list of names this kind
 * of save writes (a name ending in `*` is a prefix). Frees d. */
int   sd_commit(sd_dir *d, const char *const *mine);
/* Remove the temporary directory and free d. */
void  sd_abort(sd_dir *d);

#endif
