/* free-bench's command line, prompts file and list of modes. */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
        "usage: free-bench -m MODEL [options]\n"
        "  -m, --model FILE     GGUF model\n"
        "  -f, --prompts-file F one prompt per line, \\n \\t \\\\ unescaped (default "
        "bench/prompts.txt)\n"
        "  --prompts K          use the first K prompts (default all)\n"
        "  -n, --tokens N       tokens generated per prompt (default 128)\n"
        "  -t, --threads N      compute threads (default: the library's, all cores up to 8)\n"
        "  --modes LIST         comma-separated: none, free:X (threshold X), adaptive or\n"
        "                       adaptive:Z (posterior level zeta), verify:X (default\n"
        "                       none,free:0.3,free:0.5,free:0.7,free:0.9,adaptive,verify:0.5);\n"
        "                       also auto (the library's default mode) and agree:A (FREE\n"
        "                       at min_agreement A)\n"
        "  --calibration FILE   agree:A modes read the curve of FILE (free-calibrate -o)\n"
        "                       instead of the model's\n"
        "                       none is always run first as the baseline\n"
        "  -r, --reps N         repetitions (default 3)\n"
        "  --parallel N         N prompts at once through free_batch_step (each exactly -n\n"
        "                       tokens), against one stream through the same call:\n"
        "                       aggregate and per-stream tokens/s, step latency, waiting,\n"
        "                       weight GB/s against the probe; N1,N2,... (e.g. 1,2,4,8,16)\n"
        "                       runs each count, interleaved, and adds a sweep table\n"
        "  --exit-layer N       exit layer for every config (default: the file's)\n"
        "  --warmup N           untimed warm-up generations per config (default 1)\n"
        "  --probe-mb M         bandwidth-probe buffer in MiB (default 4 x LLC, 256..2048;\n"
        "                       0 skips the probe)\n"
        "  --json FILE          JSON output (default free-bench.json)\n"
        "  --svg FILE           speed/quality plot (default free-bench.svg)\n"
        "  --check              exit 3 unless verify reproduces NONE exactly and NONE is\n"
        "                       the same in every rep\n");
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int fb_parse_args(int argc, char **argv, fb_options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *num = NULL, lo = 0, hi = 1 << 24;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--check")) {
            o->check = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "free-bench: option %s needs a value (try --help)\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--prompts-file")) o->prompts = v;
        else if (!strcmp(a, "--modes")) o->modes = v;
        else if (!strcmp(a, "--json")) o->json = v;
        else if (!strcmp(a, "--calibration")) o->calibration = v;
        else if (!strcmp(a, "--svg")) o->svg = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--tokens")) num = &o->n_tokens, lo = 1;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) num = &o->threads, hi = 256;
        else if (!strcmp(a, "-r") || !strcmp(a, "--reps")) num = &o->reps, lo = 1;
        else if (!strcmp(a, "--prompts")) num = &o->max_prompts, lo = 1;
        else if (!strcmp(a, "--parallel")) {
            /* N, or a list N1,N2,... (a sweep). */
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            o->n_parallel = 0;
            for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                if (o->n_parallel == FB_MAX_PARALLEL ||
                    parse_int(tok, 1, 1024, &o->parallel_list[o->n_parallel])) {
                    fprintf(stderr, "free-bench: --parallel takes N or up to %d counts N1,N2,.. "
                                    "in 1..1024, not '%s'\n", FB_MAX_PARALLEL, v);
                    return -1;
                }
                o->n_parallel++;
            }
            if (o->n_parallel == 0) {
                fprintf(stderr, "free-bench: --parallel needs a count\n");
                return -1;
            }
            o->parallel = o->parallel_list[0];
        }
        else if (!strcmp(a, "--warmup")) num = &o->warmup;
        else if (!strcmp(a, "--exit-layer")) num = &o->exit_layer, lo = 1;
        else if (!strcmp(a, "--probe-mb")) {
            char *end;
            o->probe_mb = strtod(v, &end);
            if (end == v || *end || !(o->probe_mb >= 0 && o->probe_mb <= 65536)) {
                fprintf(stderr, "free-bench: invalid --probe-mb '%s'\n", v);
                return -1;
            }
        } else {
            fprintf(stderr, "free-bench: unknown option '%s' (try --help)\n", a);
            return -1;
        }
        if (num && parse_int(v, lo, hi, num)) {
            fprintf(stderr, "free-bench: invalid value '%s' for %s (%d..%d)\n", v, a, lo, hi);
            return -1;
        }
    }
    if (!o->model) {
        fprintf(stderr, "free-bench: no model given: use -m MODEL.gguf\n");
        return -1;
    }
    return 0;
}

/* ---- prompts ---------------------------------------------------------------------------- */

/* Undoes the file's escapes in place: \n, \t and \\ (anything else is kept as written). */
static void unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r == '\\' && (r[1] == 'n' || r[1] == 't' || r[1] == '\\')) {
            r++;
            *w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : '\\';
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

int fb_read_prompts(const char *path, int max, fb_prompt **out, int *n_out)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "free-bench: cannot read prompts file %s: %s\n", path, strerror(errno));
        return -1;
    }
    fb_prompt *p = NULL;
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((max == 0 || n < max) && (len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        fb_prompt *grown = realloc(p, (size_t)(n + 1) * sizeof *p);
        char *text = strdup(line);
        if (!grown || !text) {
            free(text);
            free(grown ? grown : p);
            free(line);
            fclose(f);
            fprintf(stderr, "free-bench: out of memory reading %s\n", path);
            return -1;
        }
        p = grown;
        unescape(text);
        p[n++] = (fb_prompt){text, NULL, 0};
    }
    free(line);
    fclose(f);
    if (n == 0) {
        fprintf(stderr, "free-bench: %s has no prompts\n", path);
        free(p);
        return -1;
    }
    *out = p;
    *n_out = n;
    return 0;
}

/* ---- configurations --------------------------------------------------------------------- */

int fb_parse_modes(const char *list, fb_config **out, int *n_out)
{
    char *copy = strdup(list);
    fb_config *c = calloc(strlen(list) / 2 + 2, sizeof *c); /* one per item at most */
    if (!copy || !c) {
        free(copy);
        free(c);
        return -1;
    }
    int n = 1;
    snprintf(c[0].name, sizeof c[0].name, "none");
    c[0].kind = FB_NONE;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        double x = NAN;
        if (colon) {
            char *end;
            *colon = '\0';
            x = strtod(colon + 1, &end);
            if (end == colon + 1 || *end || !isfinite(x)) {
                fprintf(stderr, "free-bench: invalid number in mode '%s:%s'\n", tok, colon + 1);
                goto bad;
            }
        }
        fb_config k = {0};
        if (!strcmp(tok, "none")) {
            continue; /* always present, first */
        } else if (!strcmp(tok, "free") || !strcmp(tok, "verify")) {
            k.kind = tok[0] == 'f' ? FB_FREE : FB_VERIFY;
            k.threshold = colon ? x : 0.9;
            snprintf(k.name, sizeof k.name, "%s:%g", tok, k.threshold);
        } else if (!strcmp(tok, "auto") && !colon) {
            k.kind = FB_VERIFY;
            k.auto_mode = 1;
            snprintf(k.name, sizeof k.name, "auto");
        } else if (!strcmp(tok, "agree") && colon) {
            if (!(x > 0 && x <= 1)) {
                fprintf(stderr, "free-bench: agreement must be in (0, 1]: '%g'\n", x);
                goto bad;
            }
            k.kind = FB_FREE;
            k.min_agreement = x;
            snprintf(k.name, sizeof k.name, "free@%g", x);
        } else if (!strcmp(tok, "adaptive")) {
            k.kind = FB_ADAPTIVE;
            k.threshold = 0.9;
            k.zeta = colon ? x : 0.4;
            if (!(k.zeta > 0 && k.zeta < 1)) {
                fprintf(stderr, "free-bench: zeta must be in (0, 1): '%g'\n", k.zeta);
                goto bad;
            }
            snprintf(k.name, sizeof k.name, colon ? "adaptive:%g" : "adaptive", k.zeta);
        } else {
            fprintf(stderr, "free-bench: unknown mode '%s' (none, free:X, adaptive[:Z], "
                            "verify:X)\n", tok);
            goto bad;
        }
        c[n++] = k;
    }
    free(copy);
    *out = c;
    *n_out = n;
    return 0;
bad:
    free(copy);
    free(c);
    return -1;
}
