/* hub.c — a Hugging Face Hub id ("Qwen/Qwen2-0.5B", "gpt2") resolved to the snapshot that
 * huggingface_hub has already downloaded into its cache, so that `load "Qwen/Qwen2-0.5B"`
 * opens what transformers fetched before. Nothing is downloaded: loupe never uses the network.
 *
 * The cache is huggingface_hub's: $HF_HUB_CACHE, else $HF_HOME/hub, else
 * $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. A repo lives in
 * models--ORG--NAME/, its files under snapshots/COMMIT/, and refs/main names the commit that
 * `from_pretrained` uses by default. */
#include "model/model.h"
#include "util/err.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int mdl_is_hub_id(const char *s) {
    int parts = 1;
    size_t run = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '/') {
            if (!run || ++parts > 2) return 0;
            run = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                   *p == '-' || *p == '_' || (*p == '.' && run)) {
            if (!run && (*p == '-' || *p == '.')) return 0;
            run++;
        } else {
            return 0;
        }
    }
    return run > 0 && !strstr(s, "..") && strlen(s) < 200;
}

const char *mdl_hub_cache(char *out, size_t cap) {
    const char *v;
    if ((v = getenv("HF_HUB_CACHE")) && *v) snprintf(out, cap, "%s", v);
    else if ((v = getenv("HF_HOME")) && *v) snprintf(out, cap, "%s/hub", v);
    else if ((v = getenv("XDG_CACHE_HOME")) && *v) snprintf(out, cap, "%s/huggingface/hub", v);
    else snprintf(out, cap, "%s/.cache/huggingface/hub", (v = getenv("HOME")) && *v ? v : "");
    return out;
}

static int is_dir(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

int mdl_hub_snapshot(const char *id, char *out, size_t cap) {
    if (!mdl_is_hub_id(id)) return -1;
    char cache[1024], repo[1400], ref[1500], commit[128] = "";
    mdl_hub_cache(cache, sizeof cache);
    snprintf(repo, sizeof repo, "%s/models--", cache);
    size_t n = strlen(repo);
    for (const char *p = id; *p && n + 3 < sizeof repo; p++) {   /* '/' becomes "--" */
        if (*p == '/') repo[n++] = '-', repo[n++] = '-';
        else repo[n++] = *p;
    }
    repo[n] = 0;
    snprintf(ref, sizeof ref, "%s/refs/main", repo);
    FILE *f = fopen(ref, "r");
    if (f) {
        if (!fgets(commit, sizeof commit, f)) commit[0] = 0;
        fclose(f);
        commit[strcspn(commit, " \t\r\n")] = 0;
    }
    if (commit[0] && !strchr(commit, '/') && strcmp(commit, "..") &&
        (size_t)snprintf(out, cap, "%s/snapshots/%s", repo, commit) < cap && is_dir(out))
        return 0;
    /* no refs/main (a download by revision): the only snapshot there is */
    snprintf(ref, sizeof ref, "%s/snapshots", repo);
    DIR *d = opendir(ref);
    if (!d) return -1;
    int found = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        found++;
        if ((size_t)snprintf(out, cap, "%s/%s", ref, e->d_name) >= cap) found = 2;
    }
    closedir(d);
    return found == 1 && is_dir(out) ? 0 : -1;
}
