/* free-calibrate: measures a model's calibration curve (for each confidence threshold, the
 * share of positions the exit head would take, and how often its argmax is the full
 * model's) and writes it as the free.calib.* keys min_agreement and the automatic VERIFY
 * threshold read.
 *
 *     free-calibrate -m MODEL.gguf (-p PROMPTS | -f TEXT) [-n 128] [-c 128]
 *                    [--calib-tokens N] [-t T] [--exit-layer N]
 *                    [-o CALIB.gguf] [--write-model OUT.gguf]
 *
 * -p PROMPTS (free-bench's format: one prompt per line, \n \t \\ unescaped): each prompt is
 * continued greedily at full depth for n tokens, and the prompt plus its continuation is
 * then run once more with the exit head on every row (teacher forcing, free_eval_exit);
 * the rows that chose the continuation are measured. This is the text a decoder sees
 * (its own greedy output), so the agreement is the one decoding meets; the default.
 * -f TEXT: teacher forcing on a text, in chunks of c tokens (each from an empty context,
 * BOS first when the vocabulary adds one), every row after the first measured.
 * Agreement: the exit head's argmax equals the final head's (on the same row). The
 * sample count of a threshold is the number of positions whose confidence exceeds it,
 * which is what the one-sided Wilson bound of min_agreement needs; with --decode, the
 * effective number: the exits checked divided by the design effect of the prompts (the
 * between-prompt variance of the disagreement rate over its binomial variance, at least
 * 1), since the tokens of one text are not independent draws.
 *
 * -o writes a calibration file: a GGUF without tensors holding free.calib.thresholds,
 * .exit_rate, .agreement, .samples (f32 arrays), .exit_layer (u32), .positions (u32) and
 * .source (string) - free-cli --calibration and free_ctx_params.calibration_file read it.
 * --write-model writes a copy of the model (every key and tensor) with those keys in
 * place of its own. The table goes to stdout. */
#include "calib_file.h"
#include "model.h"
#include "tokenizer.h"
#include "tool_args.h"

#include <free/free.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const float GRID[] = {0.05f, 0.1f,  0.15f, 0.2f, 0.25f, 0.3f,  0.35f, 0.4f,
                             0.45f, 0.5f,  0.55f, 0.6f, 0.65f, 0.7f,  0.75f, 0.8f,
                             0.85f, 0.9f,  0.925f, 0.95f, 0.97f, 0.98f, 0.99f};
#define N_GRID ((int32_t)(sizeof GRID / sizeof GRID[0]))

typedef struct options {
    const char *model, *prompts, *text, *out, *model_out;
    long n_predict, n_ctx, max_positions, threads, exit_layer;
    double decode_from; /* > 0: --decode, thresholds of the grid from this one up */
} options;

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: free-calibrate -m MODEL.gguf (-p PROMPTS [--decode T] | -f TEXT) [-n 128]\n"
            "                      [-c 128]\n"
            "                      [--calib-tokens N] [-t T] [--exit-layer N]\n"
            "                      [-o CALIB.gguf] [--write-model OUT.gguf]\n"
            "  Measures the calibration curve (threshold -> exit rate, agreement of the exit\n"
            "  head's argmax with the full model's, sample counts) and writes free.calib.*.\n"
            "  -p PROMPTS      one prompt per line (\\n \\t \\\\ unescaped): greedy full-depth\n"
            "                  continuations of -n tokens are measured (what decoding sees)\n"
            "  -f TEXT         teacher forcing on a text, chunks of -c tokens\n"
            "  --decode T      with -p: decode each prompt with --exit free at every grid\n"
            "                  threshold >= T and measure the early exits the final head\n"
            "                  checks (what FREE decoding meets, divergence included)\n"
            "  -n N            tokens generated per prompt (default 128)\n"
            "  -c N            tokens per chunk of -f (default 128)\n"
            "  --calib-tokens N  stop after N measured positions (default: all)\n"
            "  -t T            threads (default: all cores, at most 8)\n"
            "  --exit-layer N  exit layer (default: the file's free.exit_layer)\n"
            "  -o FILE         write a calibration file (for free-cli --calibration)\n"
            "  --write-model F write a copy of the model carrying the curve\n");
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->n_ctx = 128;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!v) {
            fprintf(stderr, "free-calibrate: %s needs a value (or is unknown)\n", a);
            return 2;
        }
        if (!strcmp(a, "-m"))
            o->model = v;
        else if (!strcmp(a, "-p"))
            o->prompts = v;
        else if (!strcmp(a, "-f"))
            o->text = v;
        else if (!strcmp(a, "-o"))
            o->out = v;
        else if (!strcmp(a, "--write-model"))
            o->model_out = v;
        else if (!strcmp(a, "-n"))
            ok = tool_parse_long(v, 1, 1 << 16, &o->n_predict);
        else if (!strcmp(a, "-c"))
            ok = tool_parse_long(v, 4, 1 << 16, &o->n_ctx);
        else if (!strcmp(a, "--calib-tokens"))
            ok = tool_parse_long(v, 1, 1L << 30, &o->max_positions);
        else if (!strcmp(a, "-t"))
            ok = tool_parse_long(v, 1, 256, &o->threads);
        else if (!strcmp(a, "--decode")) {
            char *end;
            o->decode_from = strtod(v, &end);
            ok = end != v && !*end && o->decode_from > 0.0 && o->decode_from < 1.0;
        } else if (!strcmp(a, "--exit-layer"))
            ok = tool_parse_long(v, 1, 65535, &o->exit_layer);
        else {
            fprintf(stderr, "free-calibrate: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "free-calibrate: bad value for %s: %s\n", a, v);
            return 2;
        }
        i++;
    }
    if (o->decode_from > 0.0 && !o->prompts) {
        fprintf(stderr, "free-calibrate: --decode needs -p PROMPTS\n");
        return 2;
    }
    if (!o->model || !o->prompts == !o->text) {
        fprintf(stderr, "free-calibrate: -m MODEL and one of -p PROMPTS or -f TEXT are "
                        "required\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *grown = realloc(buf, cap * 2 + 1);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad || !buf) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* \n, \t and \\ in place (free-bench's prompt format). */
static void unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (r[0] == '\\' && (r[1] == 'n' || r[1] == 't' || r[1] == '\\')) {
            *w++ = r[1] == 'n' ? '\n' : r[1] == 't' ? '\t' : '\\';
            r++;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

static int32_t argmax(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

typedef struct run {
    free_model *m;
    free_ctx *ctx;
    size_t nv, cap; /* rows the buffers hold */
    float *logits, *exit_logits, *conf;
    fr_calib_acc acc;
    long max_positions;
} run;

/* Teacher forcing over tokens[0..n): rows from..n-2 (row j predicts token j + 1) are
 * measured. */
static int measure(run *r, const int32_t *tokens, size_t n, size_t from)
{
    free_ctx_reset(r->ctx);
    if (free_eval_exit(r->ctx, tokens, n, r->logits, r->exit_logits, r->conf) != FREE_OK) {
        fprintf(stderr, "free-calibrate: %s\n", free_ctx_last_error(r->ctx));
        return 1;
    }
    for (size_t j = from; j + 1 < n; j++) {
        if (r->max_positions > 0 && r->acc.positions >= (uint64_t)r->max_positions)
            break;
        const bool agree = argmax(r->exit_logits + j * r->nv, r->nv) ==
                           argmax(r->logits + j * r->nv, r->nv);
        fr_calib_acc_add(&r->acc, r->conf[j], agree);
    }
    return 0;
}

static bool done(const run *r)
{
    return r->max_positions > 0 && r->acc.positions >= (uint64_t)r->max_positions;
}

static int tokenize(free_model *m, const char *text, bool bos, int32_t **out, size_t *n)
{
    size_t need = 0;
    free_status s = free_tokenize(m, text, -1, bos, NULL, 0, &need);
    if (s != FREE_OK && s != FREE_ERR_BUFFER_TOO_SMALL)
        return 1;
    *out = malloc((need ? need : 1) * sizeof **out);
    if (!*out || free_tokenize(m, text, -1, bos, *out, need, n) != FREE_OK) {
        free(*out);
        *out = NULL;
        return 1;
    }
    return 0;
}

static int from_text(run *r, const options *o)
{
    size_t len;
    char *text = read_file(o->text, &len);
    if (!text) {
        fprintf(stderr, "free-calibrate: cannot read %s: %s\n", o->text, strerror(errno));
        return 1;
    }
    const bool bos = fr_tokenizer_add_bos(r->m->tokenizer) && free_token_bos(r->m) >= 0;
    int32_t *tok = NULL;
    size_t n = 0;
    int rc = tokenize(r->m, text, bos, &tok, &n);
    free(text);
    if (rc) {
        fprintf(stderr, "free-calibrate: tokenizing %s: %s\n", o->text, free_last_error());
        return 1;
    }
    const size_t c = (size_t)o->n_ctx;
    for (size_t k = 0; k + c <= n && !done(r) && !rc; k += c) {
        if (bos)
            tok[k] = free_token_bos(r->m);
        rc = measure(r, tok + k, c, 1);
    }
    free(tok);
    return rc;
}

static int from_prompts(run *r, const options *o)
{
    size_t len;
    char *all = read_file(o->prompts, &len);
    if (!all) {
        fprintf(stderr, "free-calibrate: cannot read %s: %s\n", o->prompts, strerror(errno));
        return 1;
    }
    const bool bos = fr_tokenizer_add_bos(r->m->tokenizer) && free_token_bos(r->m) >= 0;
    int rc = 0, n_prompts = 0;
    for (char *line = strtok(all, "\n"); line && !rc && !done(r); line = strtok(NULL, "\n")) {
        unescape(line);
        int32_t *tok = NULL;
        size_t n = 0;
        if (!*line)
            continue;
        if (tokenize(r->m, line, bos, &tok, &n) || n == 0) {
            fprintf(stderr, "free-calibrate: tokenizing a prompt: %s\n", free_last_error());
            free(tok);
            rc = 1;
            break;
        }
        if (n + (size_t)o->n_predict > r->cap) {
            fprintf(stderr, "free-calibrate: a prompt of %zu tokens is too long; skipped\n", n);
            free(tok);
            continue;
        }
        int32_t *seq = realloc(tok, (n + (size_t)o->n_predict) * sizeof *seq);
        if (!seq) {
            free(tok);
            rc = 1;
            break;
        }
        const size_t np = n;
        free_ctx_reset(r->ctx);
        free_status s = free_prefill(r->ctx, seq, n);
        for (long g = 0; s == FREE_OK && g < o->n_predict; g++) {
            free_step_info info;
            info.size = sizeof info;
            s = free_step(r->ctx, &seq[n], &info);
            if (s == FREE_OK) {
                n++;
                if (info.is_eos)
                    break;
            }
        }
        if (s != FREE_OK) {
            fprintf(stderr, "free-calibrate: generating: %s\n", free_ctx_last_error(r->ctx));
            free(seq);
            rc = 1;
            break;
        }
        rc = measure(r, seq, n, np - 1); /* row np - 1 chose the first generated token */
        free(seq);
        n_prompts++;
    }
    free(all);
    if (!rc)
        fprintf(stderr, "free-calibrate: %d prompts continued\n", n_prompts);
    return rc;
}

/* Prompts of the file, unescaped, in order; returns how many (0 on error). */
static int read_prompts(const char *path, char **buf, char ***lines)
{
    size_t len;
    *buf = read_file(path, &len);
    *lines = NULL;
    if (!*buf) {
        fprintf(stderr, "free-calibrate: cannot read %s: %s\n", path, strerror(errno));
        return 0;
    }
    int n = 0;
    for (size_t i = 0; i < len; i++)
        n += (*buf)[i] == '\n';
    *lines = calloc((size_t)n + 1, sizeof **lines);
    if (!*lines)
        return 0;
    n = 0;
    for (char *line = strtok(*buf, "\n"); line; line = strtok(NULL, "\n")) {
        unescape(line);
        if (*line)
            (*lines)[n++] = line;
    }
    return n;
}

/* --decode: FREE decoding at each threshold; the early exits the deep pass checked (every
 * row: agreement_stats) give the agreement, all tokens handed out the exit rate. Tokens
 * the final head chose always agree, so the disagreements are all early exits. */
static int decode_curve(run *r, const options *o, fr_calib *c)
{
    char *buf, **lines;
    const int n_prompts = read_prompts(o->prompts, &buf, &lines);
    int rc = n_prompts > 0 ? 0 : 1;
    memset(c, 0, sizeof *c);
    const bool bos = fr_tokenizer_add_bos(r->m->tokenizer) && free_token_bos(r->m) >= 0;
    for (int32_t g = 0; g < N_GRID && !rc; g++) {
        if (GRID[g] < o->decode_from - 1e-6)
            continue;
        free_ctx_params p;
        free_ctx_params_init(&p, sizeof p);
        free_ctx_get_params(r->ctx, &p);
        p.exit_mode = FREE_EXIT_FREE;
        p.threshold = GRID[g];
        p.agreement_stats = 1;
        if (free_ctx_set_params(r->ctx, &p) != FREE_OK ||
            free_ctx_reset_stats(r->ctx) != FREE_OK) {
            fprintf(stderr, "free-calibrate: %s\n", free_ctx_last_error(r->ctx));
            rc = 1;
            break;
        }
        double sum_e2 = 0.0, sum_ew = 0.0, sum_w2 = 0.0; /* per-prompt cross sums */
        int used = 0;
        for (int k = 0; k < n_prompts && !rc; k++) {
            free_stats before;
            before.size = sizeof before;
            free_ctx_stats(r->ctx, &before);
            int32_t *tok = NULL;
            size_t n = 0;
            if (tokenize(r->m, lines[k], bos, &tok, &n) || n == 0 ||
                n + (size_t)o->n_predict > r->cap) {
                free(tok);
                continue;
            }
            free_ctx_reset(r->ctx);
            free_status s = free_prefill(r->ctx, tok, n);
            for (long i = 0; s == FREE_OK && i < o->n_predict; i++) {
                int32_t t;
                free_step_info info;
                info.size = sizeof info;
                s = free_step(r->ctx, &t, &info);
                if (s == FREE_OK && info.is_eos)
                    break;
            }
            free(tok);
            if (s != FREE_OK) {
                fprintf(stderr, "free-calibrate: decoding: %s\n", free_ctx_last_error(r->ctx));
                rc = 1;
            }
            free_stats after;
            after.size = sizeof after;
            free_ctx_stats(r->ctx, &after);
            const double deep_k = (double)((after.tokens - after.shallow_exits) -
                                           (before.tokens - before.shallow_exits));
            const double e = (double)(after.agreement_checked - before.agreement_checked) -
                             deep_k;
            const double w = (double)((after.agreement_checked - after.agreement_matched) -
                                      (before.agreement_checked - before.agreement_matched));
            sum_e2 += e * e;
            sum_ew += e * w;
            sum_w2 += w * w;
            used++;
        }
        free_stats st;
        st.size = sizeof st;
        free_ctx_stats(r->ctx, &st);
        const uint64_t deep = st.tokens - st.shallow_exits;
        const uint64_t checked = st.agreement_checked > deep ? st.agreement_checked - deep : 0;
        const uint64_t wrong = st.agreement_checked - st.agreement_matched;
        const int32_t i = c->n++;
        c->thr[i] = GRID[g];
        c->exit_rate[i] = st.tokens ? (float)((double)st.shallow_exits / (double)st.tokens)
                                    : 0.0f;
        c->agreement[i] = checked ? (float)((double)(checked - wrong) / (double)checked)
                                  : 1.0f;
        /* The tokens of one text share its fate (once it parts from full depth's, more
         * exits differ), so they are not independent draws: the sample count is the
         * effective one, checked / design effect, with the variance of the disagreement
         * rate estimated between prompts (a ratio estimator over prompts as clusters). */
        double deff = 1.0;
        if (checked > 0 && wrong > 0 && wrong < checked && used > 1) {
            const double pw = (double)wrong / (double)checked, E = (double)checked;
            const double v_cluster = (double)used / (double)(used - 1) *
                                     (sum_w2 - 2.0 * pw * sum_ew + pw * pw * sum_e2) / (E * E);
            const double v_binom = pw * (1.0 - pw) / E;
            if (v_cluster > v_binom)
                deff = v_cluster / v_binom;
        }
        c->samples[i] = floor((double)checked / deff);
        if (st.tokens > r->acc.positions)
            r->acc.positions = st.tokens;
        fprintf(stderr, "free-calibrate: threshold %.3f: %llu tokens, %llu early exits "
                "checked, %llu differ; design effect %.2f over %d prompts\n",
                (double)GRID[g], (unsigned long long)st.tokens, (unsigned long long)checked,
                (unsigned long long)wrong, deff, used);
    }
    free(lines);
    free(buf);
    return rc;
}

static int write_outputs(const run *r, const options *o, const fr_calib *c, int32_t ls)
{
    fr_error err;
    fr_error_clear(&err);
    char src[512];
    snprintf(src, sizeof src, "free-calibrate %s %s",
             o->decode_from > 0.0 ? "FREE decoding of"
             : o->prompts         ? "greedy continuations of"
                                  : "teacher forcing on",
             o->prompts ? o->prompts : o->text);
    const fr_calib_info info = {ls, r->acc.positions, src};
    if (o->out) {
        if (fr_calib_write_file(c, &info, o->out, &err) != FREE_OK) {
            fprintf(stderr, "free-calibrate: %s: %s\n", o->out, err.msg);
            return 1;
        }
        fprintf(stderr, "free-calibrate: calibration written to %s\n", o->out);
    }
    if (o->model_out) {
        if (fr_calib_write_model(r->m->gguf, c, &info, o->model_out, &err) != FREE_OK) {
            fprintf(stderr, "free-calibrate: %s: %s\n", o->model_out, err.msg);
            return 1;
        }
        fprintf(stderr, "free-calibrate: model with the curve written to %s\n", o->model_out);
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : 2;
    run r;
    memset(&r, 0, sizeof r);
    fr_calib curve;
    memset(&curve, 0, sizeof curve);
    r.max_positions = o.max_positions;
    fr_error err;
    fr_error_clear(&err);
    fr_calib_acc_init(&r.acc, GRID, N_GRID, &err);
    if (free_model_load(o.model, NULL, &r.m) != FREE_OK) {
        fprintf(stderr, "free-calibrate: %s\n", free_last_error());
        return 1;
    }
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_ctx = o.prompts ? 0 : (int32_t)o.n_ctx; /* prompts: the training context */
    p.n_threads = (int32_t)o.threads;
    p.exit_layer = (int32_t)o.exit_layer;
    p.exit_mode = FREE_EXIT_NONE; /* the continuations are the full model's */
    if (free_ctx_create(r.m, &p, &r.ctx) != FREE_OK) {
        fprintf(stderr, "free-calibrate: %s\n", free_last_error());
        free_model_destroy(r.m);
        return 1;
    }
    free_ctx_get_params(r.ctx, &p);
    r.cap = (size_t)p.n_ctx;
    const int32_t ls = p.exit_layer > 0 ? p.exit_layer
                       : free_model_exit_layer(r.m) > 0 ? free_model_exit_layer(r.m)
                                                        : free_model_n_layers(r.m) / 4;
    r.nv = (size_t)free_model_n_vocab(r.m);
    r.logits = malloc(r.cap * r.nv * sizeof *r.logits);
    r.exit_logits = malloc(r.cap * r.nv * sizeof *r.exit_logits);
    r.conf = malloc(r.cap * sizeof *r.conf);
    if (!r.logits || !r.exit_logits || !r.conf) {
        fprintf(stderr, "free-calibrate: out of memory\n");
        rc = 1;
    } else {
        rc = o.decode_from > 0.0 ? decode_curve(&r, &o, &curve)
             : o.prompts          ? from_prompts(&r, &o)
                                  : from_text(&r, &o);
    }
    if (!rc && r.acc.positions == 0) {
        fprintf(stderr, "free-calibrate: nothing was measured (text shorter than -c?)\n");
        rc = 1;
    }
    if (!rc) {
        fr_calib c = curve;
        if (o.decode_from <= 0.0)
            fr_calib_acc_curve(&r.acc, &c);
        printf("# %s, exit layer %d, %llu positions (%s)\n", o.model, ls,
               (unsigned long long)r.acc.positions,
               o.decode_from > 0.0 ? "FREE decoding, positions = tokens per threshold"
            : o.prompts         ? "greedy continuations"
                                : "teacher forcing");
        printf("# threshold exit_rate agreement samples wilson95_lower\n");
        for (int32_t i = 0; i < c.n; i++)
            printf("%.3f %.4f %.4f %.0f %.4f\n", (double)c.thr[i], (double)c.exit_rate[i],
                   (double)c.agreement[i], c.samples[i],
                   fr_wilson_lower(c.agreement[i], c.samples[i]));
        rc = write_outputs(&r, &o, &c, ls);
    }
    free(r.logits);
    free(r.exit_logits);
    free(r.conf);
    free_ctx_destroy(r.ctx);
    free_model_destroy(r.m);
    return rc;
}
