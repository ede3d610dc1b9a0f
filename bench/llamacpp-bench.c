/* llamacpp-bench: llama.cpp's own decoding speed on a GGUF, measured the way free-bench
 * measures libfree's, so the two can be run interleaved on the same machine.
 *
 *     llamacpp-bench -m MODEL.gguf [-f PROMPTS] [--prompts K] [-n 128] [-t 1] [-r 3]
 *                    [--json OUT.json]
 *
 * The library is the prebuilt llama.cpp of $FREE_ORACLE_DIR (scripts/oracle), reached with
 * dlopen; without it the program says so and exits 77 (skipped). For each rep and prompt:
 * a new context (llama.cpp's default parameters, n_threads = n_threads_batch = -t), the
 * prompt (BOS as the vocabulary says) decoded as one batch, then greedy decoding: each
 * token is the argmax of the last logits and is fed back one at a time. decode tok/s =
 * tokens produced after the first / time of those single-token llama_decode calls (the
 * first token comes from the prompt's logits, as in free-bench). The median and quartiles
 * over runs are printed, one line per run on stderr.
 *
 * No llama.h is available, so as little of llama.cpp's ABI as possible is used: the params
 * structs are received from the *_default_params functions into a larger buffer and passed
 * back unchanged (in memory in the x86-64 SysV ABI), llama_batch is declared (unchanged for
 * years), and the rest are plain functions on pointers and integers. */
#include "../tests/oracle.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct params_buf {
    unsigned char b[1024];
} params_buf;

typedef struct ll_batch { /* struct llama_batch */
    int32_t n_tokens;
    int32_t *token;
    float *embd;
    int32_t *pos;
    int32_t *n_seq_id;
    int32_t **seq_id;
    int8_t *logits;
} ll_batch;

typedef struct llama_api {
    void (*backend_init)(void);
    void (*load_all_from_path)(const char *dir);
    void (*log_set)(void (*cb)(int level, const char *text, void *user), void *user);
    params_buf (*model_defaults)(void);
    params_buf (*context_defaults)(void);
    void *(*model_load)(const char *path, params_buf params);
    void (*model_free)(void *model);
    void *(*init_from_model)(void *model, params_buf params);
    void (*ctx_free)(void *ctx);
    void (*set_n_threads)(void *ctx, int32_t n, int32_t n_batch);
    ll_batch (*batch_get_one)(int32_t *tokens, int32_t n);
    int32_t (*decode)(void *ctx, ll_batch batch);
    float *(*logits_ith)(void *ctx, int32_t i);
    const void *(*model_vocab)(const void *model);
    int32_t (*vocab_n_tokens)(const void *vocab);
    int32_t (*tokenize)(const void *vocab, const char *text, int32_t len, int32_t *tokens,
                        int32_t n_max, bool add_special, bool parse_special);
} llama_api;

static void quiet(int level, const char *text, void *user)
{
    (void)level;
    (void)text;
    (void)user;
}

static bool sym(void *h, const char *name, void *fn_field)
{
    char reason[256];
    if (!oracle_sym(h, name, fn_field, reason, sizeof reason)) {
        fprintf(stderr, "llamacpp-bench: %s\n", reason);
        return false;
    }
    return true;
}

/* 0 when loaded, 77 when the oracle is absent (skip), 1 on a broken installation. */
static int open_llama(llama_api *a)
{
    memset(a, 0, sizeof *a);
    char path[4096], reason[4200];
    void *llama, *ggml;
    int rc = oracle_open_llama(&llama, &ggml, path, sizeof path, reason, sizeof reason);
    if (rc == 77) {
        fprintf(stderr, "llamacpp-bench: %s%s: skipped\n", reason,
                getenv("FREE_ORACLE_DIR") && *getenv("FREE_ORACLE_DIR")
                    ? ""
                    : " (scripts/oracle installs llama.cpp)");
        return 77;
    }
    if (rc != 0) {
        fprintf(stderr, "llamacpp-bench: %s\n", reason);
        return 1;
    }
    if (ggml) {
        void *p = dlsym(ggml, "ggml_backend_load_all_from_path");
        if (p)
            memcpy(&a->load_all_from_path, &p, sizeof p);
    }
    bool ok = sym(llama, "llama_backend_init", &a->backend_init) &&
              sym(llama, "llama_log_set", &a->log_set) &&
              sym(llama, "llama_model_default_params", &a->model_defaults) &&
              sym(llama, "llama_context_default_params", &a->context_defaults) &&
              sym(llama, "llama_model_load_from_file", &a->model_load) &&
              sym(llama, "llama_model_free", &a->model_free) &&
              sym(llama, "llama_init_from_model", &a->init_from_model) &&
              sym(llama, "llama_free", &a->ctx_free) &&
              sym(llama, "llama_set_n_threads", &a->set_n_threads) &&
              sym(llama, "llama_batch_get_one", &a->batch_get_one) &&
              sym(llama, "llama_decode", &a->decode) &&
              sym(llama, "llama_get_logits_ith", &a->logits_ith) &&
              sym(llama, "llama_model_get_vocab", &a->model_vocab) &&
              sym(llama, "llama_vocab_n_tokens", &a->vocab_n_tokens) &&
              sym(llama, "llama_tokenize", &a->tokenize);
    if (!ok)
        return 1;
    if (!getenv("FREE_ORACLE_VERBOSE"))
        a->log_set(quiet, NULL);
    if (a->load_all_from_path)
        a->load_all_from_path(getenv("FREE_ORACLE_DIR"));
    a->backend_init();
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One prompt per line; \n, \t and \\ unescaped (free-bench's format). */
static int read_prompts(const char *path, int max, char ***out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "llamacpp-bench: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[8192];
    char **v = NULL;
    int n = 0;
    while ((max <= 0 || n < max) && fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        if (len == 0)
            continue;
        char *p = malloc(len + 1), *w = p;
        char **grown = realloc(v, sizeof *v * (size_t)(n + 1));
        if (!p || !grown) {
            free(p);
            break;
        }
        v = grown;
        for (size_t i = 0; i < len; i++) {
            if (line[i] == '\\' && i + 1 < len && strchr("nt\\", line[i + 1])) {
                char c = line[++i];
                *w++ = c == 'n' ? '\n' : c == 't' ? '\t' : '\\';
            } else {
                *w++ = line[i];
            }
        }
        *w = '\0';
        v[n++] = p;
    }
    fclose(f);
    *out = v;
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(const double *sorted, int n, double q)
{
    double pos = q * (n - 1);
    int i = (int)pos;
    double f = pos - i;
    return i + 1 < n ? sorted[i] * (1 - f) + sorted[i + 1] * f : sorted[i];
}

/* Greedy decoding of n tokens after prompt; returns tokens/s of the single-token decodes,
 * or a negative value on failure. */
static double run_once(const llama_api *a, void *model, const char *prompt, int n, int threads)
{
    const void *vocab = a->model_vocab(model);
    const int32_t nv = a->vocab_n_tokens(vocab);
    int32_t toks[2048];
    int32_t nt = a->tokenize(vocab, prompt, (int32_t)strlen(prompt), toks, 2048, true, false);
    if (nt <= 0) {
        fprintf(stderr, "llamacpp-bench: tokenizing the prompt failed (%d)\n", nt);
        return -1;
    }
    void *ctx = a->init_from_model(model, a->context_defaults());
    if (!ctx) {
        fprintf(stderr, "llamacpp-bench: llama_init_from_model failed\n");
        return -1;
    }
    a->set_n_threads(ctx, threads, threads);
    double rate = -1;
    if (a->decode(ctx, a->batch_get_one(toks, nt)) == 0) {
        double t0 = now_ms();
        int made = 0;
        for (; made < n - 1; made++) {
            const float *lg = a->logits_ith(ctx, -1);
            int32_t best = 0;
            for (int32_t v = 1; v < nv; v++)
                if (lg[v] > lg[best])
                    best = v;
            if (a->decode(ctx, a->batch_get_one(&best, 1)) != 0)
                break; /* the context is full: stop here */
        }
        double ms = now_ms() - t0;
        rate = made > 0 && ms > 0 ? made / (ms / 1e3) : -1;
    }
    a->ctx_free(ctx);
    return rate;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: llamacpp-bench -m MODEL.gguf [-f PROMPTS] [--prompts K] [-n 128] "
               "[-t 1] [-r 3] [--json OUT]\n"
               "  llama.cpp's greedy decode tokens/s (the library of $FREE_ORACLE_DIR);\n"
               "  exits 77 when it is absent.\n");
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *prompts_path = "bench/prompts.txt", *json = NULL;
    int max_prompts = 0, n_tokens = 128, threads = 1, reps = 3;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "llamacpp-bench: %s needs a value\n", o);
            return 2;
        }
        if (!strcmp(o, "-m")) model_path = v;
        else if (!strcmp(o, "-f")) prompts_path = v;
        else if (!strcmp(o, "--json")) json = v;
        else if (!strcmp(o, "--prompts")) max_prompts = atoi(v);
        else if (!strcmp(o, "-n")) n_tokens = atoi(v);
        else if (!strcmp(o, "-t")) threads = atoi(v);
        else if (!strcmp(o, "-r")) reps = atoi(v);
        else {
            fprintf(stderr, "llamacpp-bench: unknown option %s\n", o);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!model_path || n_tokens < 2 || threads < 1 || reps < 1) {
        usage(stderr);
        return 2;
    }
    llama_api a;
    int rc = open_llama(&a);
    if (rc)
        return rc;
    char **prompts = NULL;
    int np = read_prompts(prompts_path, max_prompts, &prompts);
    if (np <= 0)
        return 1;
    void *model = a.model_load(model_path, a.model_defaults());
    if (!model) {
        fprintf(stderr, "llamacpp-bench: llama.cpp cannot load %s\n", model_path);
        return 1;
    }
    double *rates = malloc(sizeof *rates * (size_t)(np * reps));
    int nr = 0;
    run_once(&a, model, prompts[0], 8, threads); /* warm-up */
    for (int r = 0; r < reps; r++)
        for (int p = 0; p < np; p++) {
            double rate = run_once(&a, model, prompts[p], n_tokens, threads);
            if (rate < 0)
                continue;
            fprintf(stderr, "rep %d prompt %d: %.1f tokens/s\n", r + 1, p + 1, rate);
            rates[nr++] = rate;
        }
    a.model_free(model);
    if (nr == 0) {
        fprintf(stderr, "llamacpp-bench: no run succeeded\n");
        return 1;
    }
    qsort(rates, (size_t)nr, sizeof *rates, cmp_double);
    const double med = quantile(rates, nr, 0.5), p25 = quantile(rates, nr, 0.25),
                 p75 = quantile(rates, nr, 0.75);
    printf("llama.cpp %s: %d prompts x %d tokens x %d reps, %d threads: decode %.1f tokens/s "
           "(median; p25 %.1f, p75 %.1f)\n", model_path, np, n_tokens, reps, threads, med,
           p25, p75);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "llamacpp-bench: cannot write %s\n", json);
            return 1;
        }
        fprintf(f, "{\"engine\": \"llama.cpp\", \"model\": \"%s\", \"prompts\": %d, "
                   "\"tokens\": %d, \"reps\": %d, \"threads\": %d, \"decode_tokens_per_s\": "
                   "{\"median\": %.4g, \"p25\": %.4g, \"p75\": %.4g, \"runs\": %d}}\n",
                model_path, np, n_tokens, reps, threads, med, p25, p75, nr);
        fclose(f);
    }
    for (int p = 0; p < np; p++)
        free(prompts[p]);
    free(prompts);
    free(rates);
    return 0;
}
