/* free-perplexity: a model's perplexity on a text, with the protocol of llama.cpp's
 * llama-perplexity so that the figures compare one to one.
 *
 *     free-perplexity -m MODEL -f TEXT [-c 128] [--chunks K] [-t T] [-b N]
 *                     [--exit none|free|verify] [--threshold X] [--exit-layer N]
 *                     [--min-agreement A] [--calibration CALIB.gguf]
 *
 * The whole text is tokenized (BOS first when the vocabulary adds one) and split into
 * chunks of c tokens (a remainder shorter than c is dropped); each chunk is evaluated on
 * its own from an empty context, with BOS in place of its first token; the predictions of
 * tokens c/2 + 1 ... c - 1 of each chunk are scored (the second half, which has at least
 * c/2 tokens of context). PPL = exp(mean NLL); the uncertainty is llama.cpp's,
 * PPL * sqrt(var(NLL) / (count - 1)).
 *
 * --exit free measures early exit itself: at each scored position whose shallow exit
 * confidence passes the threshold, the exit head's logits stand in for the full model's
 * (teacher forcing: every position sees the true previous tokens, through free_eval_exit).
 * --exit verify is lossless, so its perplexity is the full model's (none).
 * The threshold of --exit free is free-cli's: --threshold X, else the calibrated one for
 * --min-agreement A (default 0.99; the model's free.calib.* curve or --calibration's), else
 * 0.9 for a model without a curve.
 *
 * Progress on stderr; the last stdout line is "PPL = 11.0930 +/- 0.3615". */
#include "model.h"
#include "tokenizer.h"
#include "tool_args.h"

#include <free/free.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct options {
    const char *model, *text;
    long n_ctx, chunks, threads, batch, exit_layer;
    int exit_mode;
    float threshold, min_agreement;
    bool threshold_given;
    const char *calibration;
} options;

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: free-perplexity -m MODEL.gguf -f TEXT [-c 128] [--chunks K] [-t T] [-b N]\n"
            "                       [--exit none|free|verify] [--threshold X] [--exit-layer N]\n"
            "  llama.cpp's llama-perplexity protocol: chunks of c tokens (BOS first), the\n"
            "  second half of each chunk scored; prints PPL = exp(mean NLL) +/- its error.\n"
            "  -c N          tokens per chunk (default 128; even, >= 4)\n"
            "  --chunks K    score the first K chunks only (default: all)\n"
            "  -t T          threads (default: all cores, at most 8)\n"
            "  -b N          rows per batched pass (default 64)\n"
            "  --exit free   exit-head logits where its confidence > threshold (teacher\n"
            "                forcing): the perplexity of early exit; verify = none (lossless)\n"
            "  --threshold X confidence threshold for --exit free (default: the calibrated\n"
            "                one for --min-agreement, else 0.9)\n"
            "  --min-agreement A  the lowest calibrated threshold whose token agreement's\n"
            "                Wilson bound is >= A (default 0.99, as free-cli)\n"
            "  --calibration F  the calibration curve of file F (free-calibrate -o)\n"
            "  --exit-layer N  exit layer (default: the file's free.exit_layer)\n");
}

/* Returns 0 to run, 1 for --help, 2 on a bad command line (message printed). */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->n_ctx = 128;
    o->chunks = -1;
    o->threshold = 0.9f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (!v) {
            fprintf(stderr, "free-perplexity: %s needs a value (or is unknown)\n", a);
            return 2;
        }
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) {
            o->model = v;
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) {
            o->text = v;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--ctx-size") == 0) {
            ok = tool_parse_long(v, 4, 1 << 20, &o->n_ctx) && o->n_ctx % 2 == 0;
        } else if (strcmp(a, "--chunks") == 0) {
            ok = tool_parse_long(v, 1, 1L << 30, &o->chunks);
        } else if (strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0) {
            ok = tool_parse_long(v, 1, 256, &o->threads);
        } else if (strcmp(a, "-b") == 0 || strcmp(a, "--batch-size") == 0) {
            ok = tool_parse_long(v, 1, 4096, &o->batch);
        } else if (strcmp(a, "--exit-layer") == 0) {
            ok = tool_parse_long(v, 1, 65535, &o->exit_layer);
        } else if (strcmp(a, "--threshold") == 0) {
            char *end;
            o->threshold = strtof(v, &end);
            ok = end != v && !*end && isfinite(o->threshold);
            o->threshold_given = true;
        } else if (strcmp(a, "--min-agreement") == 0) {
            char *end;
            o->min_agreement = strtof(v, &end);
            ok = end != v && !*end && o->min_agreement > 0.0f && o->min_agreement <= 1.0f;
        } else if (strcmp(a, "--calibration") == 0) {
            o->calibration = v;
        } else if (strcmp(a, "--exit") == 0) {
            if (strcmp(v, "none") == 0)
                o->exit_mode = FREE_EXIT_NONE;
            else if (strcmp(v, "free") == 0)
                o->exit_mode = FREE_EXIT_FREE;
            else if (strcmp(v, "verify") == 0)
                o->exit_mode = FREE_EXIT_VERIFY;
            else
                ok = false;
        } else {
            fprintf(stderr, "free-perplexity: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "free-perplexity: bad value for %s: %s%s\n", a, v,
                    strcmp(a, "-c") == 0 ? " (an even number >= 4)" : "");
            return 2;
        }
        i++;
    }
    if (!o->model || !o->text) {
        fprintf(stderr, "free-perplexity: -m MODEL and -f TEXT are required\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

/* -log softmax(logits)[target], as llama.cpp computes it: exponentials in float around the
 * maximum, their sum in double. */
static double nll_of(const float *logits, int32_t nv, int32_t target)
{
    float mx = logits[0];
    for (int32_t i = 1; i < nv; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < nv; i++)
        sum += expf(logits[i] - mx);
    return -((double)(logits[target] - mx) - log(sum));
}

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *grown = realloc(buf, cap * 2);
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
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : 2;
    size_t text_len = 0;
    char *text = read_text(o.text, &text_len);
    if (!text) {
        fprintf(stderr, "free-perplexity: cannot read %s: %s\n", o.text, strerror(errno));
        return 1;
    }
    free_model *m = NULL;
    if (free_model_load(o.model, NULL, &m) != FREE_OK) {
        fprintf(stderr, "free-perplexity: %s\n", free_last_error());
        free(text);
        return 1;
    }
    const bool add_bos = fr_tokenizer_add_bos(m->tokenizer) && free_token_bos(m) >= 0;
    const int32_t bos = free_token_bos(m);
    size_t n_tok = 0;
    int32_t *tokens = NULL;
    free_status st = free_tokenize(m, text, (ptrdiff_t)text_len, add_bos, NULL, 0, &n_tok);
    if (st == FREE_ERR_BUFFER_TOO_SMALL || st == FREE_OK) {
        tokens = malloc((n_tok ? n_tok : 1) * sizeof *tokens);
        st = tokens ? free_tokenize(m, text, (ptrdiff_t)text_len, add_bos, tokens, n_tok,
                                    &n_tok)
                    : FREE_ERR_NOMEM;
    }
    free(text);
    if (st != FREE_OK) {
        fprintf(stderr, "free-perplexity: tokenizing %s: %s\n", o.text, free_last_error());
        free(tokens);
        free_model_destroy(m);
        return 1;
    }
    const int32_t c = (int32_t)o.n_ctx;
    if (n_tok < 2 * (size_t)c) {
        fprintf(stderr, "free-perplexity: %s has %zu tokens; -c %d needs at least %d\n", o.text,
                n_tok, c, 2 * c);
        free(tokens);
        free_model_destroy(m);
        return 1;
    }
    size_t n_chunks = n_tok / (size_t)c;
    if (o.chunks > 0 && (size_t)o.chunks < n_chunks)
        n_chunks = (size_t)o.chunks;

    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_ctx = c;
    p.n_threads = (int32_t)o.threads;
    p.n_batch = (int32_t)o.batch;
    p.exit_layer = (int32_t)o.exit_layer;
    p.threshold = o.threshold;
    p.exit_mode = o.exit_mode; /* explicit: the library default (auto) would pick its own */
    p.calibration_file = o.calibration;
    const bool implicit = o.exit_mode == FREE_EXIT_FREE && !o.threshold_given &&
                          o.min_agreement == 0.0f;
    if (o.exit_mode == FREE_EXIT_FREE && !o.threshold_given)
        p.min_agreement = implicit ? 0.99f : o.min_agreement;
    free_ctx *ctx = NULL;
    free_status cs = free_ctx_create(m, &p, &ctx);
    if (cs == FREE_ERR_INVALID_ARG && implicit && strstr(free_last_error(), "free.calib")) {
        fprintf(stderr, "free-perplexity: the model has no calibration curve: threshold %g\n",
                (double)p.threshold);
        p.min_agreement = 0.0f;
        cs = free_ctx_create(m, &p, &ctx);
    }
    if (cs != FREE_OK) {
        fprintf(stderr, "free-perplexity: %s\n", free_last_error());
        free(tokens);
        free_model_destroy(m);
        return 1;
    }
    const bool use_exit = o.exit_mode == FREE_EXIT_FREE;
    free_ctx_get_params(ctx, &p);
    if (p.exit_layer == 0) /* the context's default: the file's, else a quarter */
        p.exit_layer = free_model_exit_layer(m) > 0 ? free_model_exit_layer(m)
                                                    : free_model_n_layers(m) / 4;
    const size_t nv = (size_t)free_model_n_vocab(m);
    float *logits = malloc((size_t)c * nv * sizeof *logits);
    float *exit_logits = use_exit ? malloc((size_t)c * nv * sizeof *exit_logits) : NULL;
    float *conf = use_exit ? malloc((size_t)c * sizeof *conf) : NULL;
    int32_t *chunk = malloc((size_t)c * sizeof *chunk);
    if (!logits || !chunk || (use_exit && (!exit_logits || !conf))) {
        fprintf(stderr, "free-perplexity: out of memory for %d x %zu logits\n", c, nv);
        rc = 1;
        goto done;
    }
    fprintf(stderr, "free-perplexity: %s: %zu tokens, %zu chunks of %d, scoring tokens "
            "%d..%d of each; exit %s", o.model, n_tok, n_chunks, c, c / 2 + 1, c - 1,
            o.exit_mode == FREE_EXIT_FREE ? "free" : o.exit_mode == FREE_EXIT_VERIFY
                                                         ? "verify (lossless: = none)"
                                                         : "none");
    if (use_exit)
        fprintf(stderr, " (exit layer %d, threshold %g%s)", p.exit_layer, (double)p.threshold,
                p.min_agreement > 0.0f ? ", from min_agreement" : "");
    fprintf(stderr, "\n");

    const int32_t first = c / 2;
    double nll = 0.0, nll2 = 0.0;
    uint64_t count = 0, exited = 0;
    for (size_t k = 0; k < n_chunks; k++) {
        memcpy(chunk, tokens + k * (size_t)c, (size_t)c * sizeof *chunk);
        if (add_bos)
            chunk[0] = bos;
        free_ctx_reset(ctx);
        st = use_exit ? free_eval_exit(ctx, chunk, (size_t)c, logits, exit_logits, conf)
                      : free_eval(ctx, chunk, (size_t)c, logits);
        if (st != FREE_OK) {
            fprintf(stderr, "free-perplexity: chunk %zu: %s\n", k, free_ctx_last_error(ctx));
            rc = 1;
            goto done;
        }
        /* Row j predicts chunk token j + 1. */
        for (int32_t j = first; j < c - 1; j++) {
            const float *row = logits + (size_t)j * nv;
            if (use_exit && conf[j] > p.threshold) {
                row = exit_logits + (size_t)j * nv;
                exited++;
            }
            const double v = nll_of(row, (int32_t)nv, chunk[j + 1]);
            nll += v;
            nll2 += v * v;
            count++;
        }
        fprintf(stderr, "[%zu/%zu] PPL so far %.4f\n", k + 1, n_chunks, exp(nll / (double)count));
    }
    const double mean = nll / (double)count;
    const double ppl = exp(mean);
    double var = nll2 / (double)count - mean * mean;
    const double err = var > 0 && count > 1 ? ppl * sqrt(var / (double)(count - 1)) : 0.0;
    printf("chunks %zu, tokens scored %llu, mean NLL %.6f\n", n_chunks,
           (unsigned long long)count, mean);
    if (use_exit)
        printf("exited %llu of %llu scored positions (%.1f%%) at exit layer %d, threshold %g\n",
               (unsigned long long)exited, (unsigned long long)count,
               100.0 * (double)exited / (double)count, p.exit_layer, (double)p.threshold);
    printf("PPL = %.4f +/- %.4f\n", ppl, err);
done:
    free(logits);
    free(exit_logits);
    free(conf);
    free(chunk);
    free(tokens);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
    return rc;
}
