/* free-bench: speed and quality of the exit modes in one run.
 *
 *   free-bench -m MODEL [-f PROMPTS] [-n TOKENS] [-t THREADS] [--modes LIST] [-r REPS] ...
 *
 * Every configuration (none, FREE at fixed thresholds, FREE adaptive, verify) decodes
 * every prompt in every rep; runs are interleaved (rep > prompt > config) so that drift of
 * a shared machine hits all configurations alike. Quality is measured outside the timed
 * region: agreement with the full model's greedy choice (from the library's counters),
 * ROUGE-L against NONE's text, and the negative log-likelihood of the generated text under
 * the full model. See bench/README.md. */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FB_DEFAULT_PROMPTS
#define FB_DEFAULT_PROMPTS "bench/prompts.txt"
#endif

/* One generation of one config on one prompt in one rep. */
typedef struct run {
    double decode_tps, prefill_tps, rouge, nll_sum;
    uint64_t nll_n;
    long hwm_kb;
    int32_t *tok;
    size_t n_tok;
    free_stats st;
} run;

typedef struct collector {
    int32_t *tok;
    size_t n, cap;
} collector;

/* ---- contexts ------------------------------------------------------------------------- */

int fb_make_ctx(const free_model *m, const fb_options *o, fb_config *c)
{
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = o->threads;
    p.exit_layer = o->exit_layer;
    p.exit_mode = c->kind == FB_NONE ? FREE_EXIT_NONE
                  : c->kind == FB_VERIFY ? FREE_EXIT_VERIFY : FREE_EXIT_FREE;
    if (c->kind == FB_FREE || c->kind == FB_VERIFY)
        p.threshold = (float)c->threshold;
    if (c->kind == FB_ADAPTIVE) {
        p.adaptive = 1;
        p.zeta = (float)c->zeta;
        c->threshold = p.threshold;
    }
    if (c->auto_mode)
        p.exit_mode = FREE_EXIT_AUTO;
    p.agreement_stats = 1; /* the agreement column covers FREE's early exits */
    if (c->min_agreement > 0) {
        p.min_agreement = (float)c->min_agreement;
        p.calibration_file = o->calibration;
    }
    free_status s = free_ctx_create(m, &p, &c->ctx);
    if (s == FREE_OK && (c->auto_mode || c->min_agreement > 0)) {
        free_stats st; /* the threshold the library chose */
        st.size = sizeof st;
        if (free_ctx_stats(c->ctx, &st) == FREE_OK)
            c->threshold = st.threshold;
    }
    if (s != FREE_OK)
        fprintf(stderr, "free-bench: %s: cannot create a context: %s: %s\n", c->name,
                free_strerror(s), free_last_error());
    return s == FREE_OK ? 0 : -1;
}

/* ---- one run -------------------------------------------------------------------------- */

static int collect(void *user, int32_t token, const char *piece, size_t len,
                   const free_step_info *info)
{
    collector *c = user;
    (void)piece, (void)len, (void)info;
    if (c->n < c->cap)
        c->tok[c->n++] = token;
    return 0;
}

static int generate(fb_config *c, const fb_prompt *pr, int n_tokens, run *r, int *hwm_ok)
{
    free_ctx_reset(c->ctx);
    free_ctx_reset_stats(c->ctx);
    *hwm_ok = fb_reset_hwm() == 0 && *hwm_ok;
    collector col = {malloc((size_t)n_tokens * sizeof(int32_t)), 0, (size_t)n_tokens};
    if (!col.tok)
        return -1;
    free_status s = free_decode(c->ctx, pr->text, -1, n_tokens, collect, &col);
    if (s != FREE_OK) {
        fprintf(stderr, "\nfree-bench: %s: %s: %s\n", c->name, free_strerror(s),
                free_ctx_last_error(c->ctx));
        free(col.tok);
        return -1;
    }
    r->hwm_kb = fb_vm_hwm_kb();
    r->st.size = sizeof r->st;
    free_ctx_stats(c->ctx, &r->st);
    r->tok = col.tok;
    r->n_tok = col.n;
    r->decode_tps = r->st.decode_ms > 0 ? (double)r->st.tokens * 1e3 / r->st.decode_ms : 0;
    r->prefill_tps = r->st.prefill_ms > 0 ? (double)r->st.prompt_tokens * 1e3 / r->st.prefill_ms
                                          : 0;
    if (r->st.prompt_tokens != pr->n_tok)
        fprintf(stderr, "\nfree-bench: warning: free_decode prefilled %llu tokens, "
                        "free_tokenize gave %zu\n", (unsigned long long)r->st.prompt_tokens,
                pr->n_tok);
    return 0;
}

/* Sum of -log p(token) over the generated tokens, under the full model: one
 * full-depth pass over prompt + generated text, row i's logits predicting token i + 1. */
static int score_nll(free_ctx *ev, int32_t n_vocab, const fb_prompt *pr, run *r)
{
    r->nll_sum = 0;
    r->nll_n = 0;
    if (r->n_tok == 0)
        return 0;
    size_t n = pr->n_tok + r->n_tok - 1;
    int32_t *seq = malloc(n * sizeof *seq);
    float *logits = malloc(n * (size_t)n_vocab * sizeof *logits);
    int rc = -1;
    if (!seq || !logits)
        goto done;
    memcpy(seq, pr->tok, pr->n_tok * sizeof *seq);
    memcpy(seq + pr->n_tok, r->tok, (r->n_tok - 1) * sizeof *seq);
    free_ctx_reset(ev);
    free_status s = free_eval(ev, seq, n, logits);
    if (s != FREE_OK) {
        fprintf(stderr, "\nfree-bench: scoring: %s: %s\n", free_strerror(s),
                free_ctx_last_error(ev));
        goto done;
    }
    for (size_t i = 0; i < r->n_tok; i++) {
        const float *row = logits + (pr->n_tok - 1 + i) * (size_t)n_vocab;
        float mx = row[0];
        for (int32_t v = 1; v < n_vocab; v++)
            mx = row[v] > mx ? row[v] : mx;
        double z = 0;
        for (int32_t v = 0; v < n_vocab; v++)
            z += exp((double)(row[v] - mx));
        r->nll_sum += log(z) + mx - row[r->tok[i]];
    }
    r->nll_n = r->n_tok;
    rc = 0;
done:
    free(seq);
    free(logits);
    return rc;
}

static int same_tokens(const run *a, const run *b)
{
    return a->n_tok == b->n_tok && !memcmp(a->tok, b->tok, a->n_tok * sizeof *a->tok);
}

/* ---- progress ------------------------------------------------------------------------- */

typedef struct progress {
    int tty, done, total;
    double t0, last;
} progress;

static void progress_update(progress *pg, int rep, int reps, int p, int n_prompts,
                            const char *cfg)
{
    double now = fb_now(), el = now - pg->t0;
    pg->done++;
    if (!pg->tty && now - pg->last < 5.0 && pg->done < pg->total)
        return;
    pg->last = now;
    double eta = pg->done ? el / pg->done * (pg->total - pg->done) : 0;
    fprintf(stderr, "%srep %d/%d  prompt %d/%d  %-14s  run %d/%d  %.0f s elapsed, ~%.0f s "
                    "left   %s", pg->tty ? "\r" : "free-bench: ", rep + 1, reps, p + 1,
            n_prompts, cfg, pg->done, pg->total, el, eta, pg->tty ? "" : "\n");
    if (pg->tty && pg->done == pg->total)
        fputc('\n', stderr);
    fflush(stderr);
}

/* ---- aggregation ---------------------------------------------------------------------- */

static void aggregate(const fb_config *c, int ci, int n_cfg, const run *runs, int n_runs,
                      const fb_report *rep, fb_result *x, double *scratch)
{
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", c->name);
    x->kind = c->kind;
    x->threshold = c->threshold;
    x->zeta = c->zeta;
    x->runs = n_runs;
    double nll = 0;
#define SUMMARY(field, expr)                                                                 \
    do {                                                                                     \
        for (int k = 0; k < n_runs; k++) {                                                   \
            const run *r = &runs[(size_t)k * n_cfg + ci];                                    \
            const run *r0 = &runs[(size_t)k * n_cfg];                                        \
            (void)r0;                                                                        \
            scratch[k] = (expr);                                                             \
        }                                                                                    \
        x->field = fb_summarize(scratch, n_runs);                                            \
    } while (0)
    SUMMARY(decode_tps, r->decode_tps);
    SUMMARY(prefill_tps, r->prefill_tps);
    SUMMARY(speedup, r0->decode_tps > 0 ? r->decode_tps / r0->decode_tps : 0);
    SUMMARY(rouge_l, r->rouge);
    SUMMARY(threshold_end, r->st.threshold);
    SUMMARY(hwm_kb, (double)r->hwm_kb);
#undef SUMMARY
    for (int k = 0; k < n_runs; k++) {
        const run *r = &runs[(size_t)k * n_cfg + ci];
        const free_stats *s = &r->st;
        x->tokens += s->tokens;
        x->prompt_tokens += s->prompt_tokens;
        x->shallow_exits += s->shallow_exits;
        x->shallow_passes += s->shallow_passes;
        x->deep_passes += s->deep_passes;
        x->sync_rows += s->sync_rows;
        x->drafts_rejected += s->drafts_rejected;
        x->avg_layers += s->avg_layers_per_token * (double)s->tokens; /* a sum until below */
        x->agreement_checked += s->agreement_checked;
        x->agreement_matched += s->agreement_matched;
        x->decode_ms += s->decode_ms;
        x->shallow_ms += s->shallow_ms;
        x->deep_ms += s->deep_ms;
        x->head_ms += s->head_ms;
        x->nll_tokens += r->nll_n;
        x->identical_runs += same_tokens(r, &runs[(size_t)k * n_cfg]);
        x->bmm_fits = s->bmm_fits;
        x->guard_windows += s->verify_windows;
        x->guard_fallbacks += s->verify_fallbacks;
        x->guard_probes += s->verify_probes;
        x->guard_full_tokens += s->verify_full_tokens;
        nll += r->nll_sum;
    }
    if (n_runs > 0) {
        const free_stats *s = &runs[(size_t)(n_runs - 1) * n_cfg + ci].st;
        x->exit_auto = s->exit_auto;
        x->guard_timed = s->verify_timed;
        x->guard_speedup = s->verify_speedup;
        x->guard_token_ms = s->verify_token_ms;
        x->guard_full_ms = s->verify_full_ms;
        x->guard_shallow_ms = s->verify_shallow_ms;
        x->guard_deep_ms = s->verify_deep_ms;
        x->guard_deep_rows = s->verify_deep_rows;
    }
    if (n_runs > 0)
        x->threshold_final = runs[(size_t)(n_runs - 1) * n_cfg + ci].st.threshold;
    const double T = x->tokens ? (double)x->tokens : 1.0;
    const double Ls = rep->exit_layer, L = rep->n_layers;
    x->exit_rate = (double)x->shallow_exits / T;
    x->mean_sync_rows = x->deep_passes ? (double)x->sync_rows / (double)x->deep_passes : 0;
    x->avg_layers /= T; /* the library's definition (free.h), weighted by tokens */
    x->layers_read = ((double)x->shallow_passes * Ls + (double)x->deep_passes * (L - Ls)) / T;
    /* NONE runs one head per full-depth pass (the library counts that pass as shallow and
     * deep); the exit modes run the head after every shallow pass and once per batched
     * deep pass. */
    double heads = (double)x->deep_passes +
                   (x->kind == FB_NONE ? 0.0 : (double)x->shallow_passes);
    x->heads_per_token = heads / T;
    x->bytes_per_token = ((double)x->shallow_passes * (double)rep->shallow_bytes +
                          (double)x->deep_passes * (double)rep->deep_bytes +
                          heads * (double)rep->head_bytes) / T;
    x->achieved_gbps = x->bytes_per_token * x->decode_tps.median * 1e-9;
    x->agreement = x->agreement_checked
                       ? (double)x->agreement_matched / (double)x->agreement_checked : 0;
    x->nll = x->nll_tokens ? nll / (double)x->nll_tokens : 0;
}

/* ---- main ----------------------------------------------------------------------------- */

static int bench(const fb_options *o, fb_report *rep, fb_prompt *pr, int n_pr, fb_config *cfg,
                 int n_cfg, run *runs, free_ctx *ev, int32_t n_vocab, int *check_failed)
{
    int hwm_ok = 1;
    /* Warm-up: fault in the mapping and the contexts' buffers before anything is timed. */
    for (int w = 0; w < o->warmup; w++)
        for (int c = 0; c < n_cfg; c++) {
            run tmp = {0};
            int rc = generate(&cfg[c], &pr[w % n_pr], o->n_tokens < 16 ? o->n_tokens : 16,
                              &tmp, &hwm_ok);
            free(tmp.tok);
            if (rc)
                return -1;
        }
    progress pg = {isatty(STDERR_FILENO), 0, o->reps * n_pr * n_cfg, fb_now(), 0};
    for (int r = 0; r < o->reps; r++)
        for (int p = 0; p < n_pr; p++)
            for (int c = 0; c < n_cfg; c++) {
                size_t k = (size_t)(r * n_pr + p) * n_cfg;
                run *x = &runs[k + c];
                if (generate(&cfg[c], &pr[p], o->n_tokens, x, &hwm_ok))
                    return -1;
                const run *none = &runs[(size_t)p * n_cfg]; /* NONE, rep 0: the reference */
                x->rouge = fb_rouge_l(x->tok, x->n_tok, none->tok, none->n_tok);
                /* Greedy runs repeat: score a text once per prompt and config. */
                const run *prev = r > 0 ? &runs[(size_t)((r - 1) * n_pr + p) * n_cfg + c] : NULL;
                if (prev && same_tokens(prev, x)) {
                    x->nll_sum = prev->nll_sum;
                    x->nll_n = prev->nll_n;
                } else if (score_nll(ev, n_vocab, &pr[p], x)) {
                    return -1;
                }
                if (o->check && (cfg[c].kind == FB_VERIFY || cfg[c].kind == FB_NONE) &&
                    !same_tokens(x, none)) {
                    fprintf(stderr, "\nfree-bench: check failed: %s on prompt %d rep %d "
                                    "differs from NONE's text\n", cfg[c].name, p + 1, r + 1);
                    *check_failed = 1;
                }
                if (o->check && x->st.agreement_checked != x->st.agreement_matched &&
                    cfg[c].kind != FB_FREE && cfg[c].kind != FB_ADAPTIVE) {
                    fprintf(stderr, "\nfree-bench: check failed: %s agreement %llu/%llu\n",
                            cfg[c].name, (unsigned long long)x->st.agreement_matched,
                            (unsigned long long)x->st.agreement_checked);
                    *check_failed = 1;
                }
                progress_update(&pg, r, o->reps, p, n_pr, cfg[c].name);
            }
    rep->hwm_per_run = hwm_ok;
    return 0;
}

static void svg_plot(const fb_options *o, const fb_report *rep)
{
    fb_point *pts = calloc((size_t)rep->n_results, sizeof *pts);
    char(*labels)[48] = calloc((size_t)rep->n_results, sizeof *labels);
    if (!pts || !labels) {
        free(pts);
        free(labels);
        return;
    }
    for (int i = 0; i < rep->n_results; i++) {
        const fb_result *x = &rep->results[i];
        fb_point *p = &pts[i];
        p->kind = x->kind;
        p->threshold = x->kind == FB_ADAPTIVE ? x->threshold_final : x->threshold;
        p->speedup = x->speedup.median;
        p->rouge_l = x->rouge_l.mean;
        p->agreement = x->agreement;
        if (x->kind == FB_FREE)
            snprintf(labels[i], sizeof labels[i], "%g", x->threshold);
        else if (x->kind == FB_ADAPTIVE)
            snprintf(labels[i], sizeof labels[i], "adaptive (%.2f)", x->threshold_final);
        else if (x->kind == FB_VERIFY)
            snprintf(labels[i], sizeof labels[i], "verify %g", x->threshold);
        else
            snprintf(labels[i], sizeof labels[i], "none");
        p->label = labels[i];
    }
    char title[256], sub[512];
    const char *base = strrchr(rep->model_path, '/');
    snprintf(title, sizeof title, "libfree %s: speed and quality of early exit, %s",
             rep->libfree_version, base ? base + 1 : rep->model_path);
    snprintf(sub, sizeof sub, "%s; %d threads, %d tokens x %d prompts x %d reps; %s",
             rep->model_desc, rep->threads, rep->n_tokens, rep->n_prompts, rep->reps, rep->cpu);
    if (fb_svg_write(o->svg, title, sub, pts, rep->n_results))
        fprintf(stderr, "free-bench: cannot write %s: %s\n", o->svg, strerror(errno));
    free(pts);
    free(labels);
}

int main(int argc, char **argv)
{
    fb_options o = {0};
    o.prompts = access("bench/prompts.txt", R_OK) == 0 ? "bench/prompts.txt"
                                                       : FB_DEFAULT_PROMPTS;
    o.modes = "none,free:0.3,free:0.5,free:0.7,free:0.9,adaptive,verify:0.5";
    o.json = "free-bench.json";
    o.svg = "free-bench.svg";
    o.n_tokens = 128;
    o.reps = 3;
    o.warmup = 1;
    o.probe_mb = -1;
    if (fb_parse_args(argc, argv, &o))
        return 1;
    free_log_set(NULL, NULL, FREE_LOG_WARN);
    const double t_start = fb_now();

    fb_report rep = {0};
    rep.libfree_version = free_version_string();
    rep.model_path = o.model;
    rep.prompts_path = o.prompts;
    rep.n_tokens = o.n_tokens;
    rep.reps = o.reps;
    rep.warmup = o.warmup;
    fb_cpu_name(rep.cpu, sizeof rep.cpu);
    rep.cores = sysconf(_SC_NPROCESSORS_ONLN);
    rep.llc_bytes = fb_llc_bytes();
    rep.load_start = fb_loadavg();

    fb_prompt *pr = NULL;
    fb_config *cfg = NULL;
    run *runs = NULL;
    free_model *model = NULL;
    free_ctx *ev = NULL;
    fb_result *res = NULL;
    double *scratch = NULL;
    int n_pr = 0, n_cfg = 0, rc = 1, check_failed = 0;
    free_status s = free_model_load(o.model, NULL, &model);
    if (s != FREE_OK) {
        fprintf(stderr, "free-bench: %s: %s\n", free_strerror(s), free_last_error());
        return 1;
    }
    if (fb_read_prompts(o.prompts, o.max_prompts, &pr, &n_pr) ||
        fb_parse_modes(o.modes, &cfg, &n_cfg))
        goto done;
    rep.n_prompts = n_pr;

    /* The probe runs first, in a child process, before any of our threads exist. */
    const int probe_threads = o.threads > 0 ? o.threads : (rep.cores < 8 ? (int)rep.cores : 8);
    double stream_mb = o.probe_mb >= 0 ? o.probe_mb : 4.0 * (double)rep.llc_bytes / 1048576.0;
    if (o.probe_mb < 0)
        stream_mb = stream_mb < 256 ? 256 : stream_mb > 2048 ? 2048 : stream_mb;
    if (stream_mb > 0) {
        fprintf(stderr, "free-bench: bandwidth probe (%.0f MiB, 1 and %d threads)...\n",
                stream_mb, probe_threads);
        uint64_t model_bytes =
            free_model_weight_bytes(model, 0, free_model_n_layers(model)) +
            free_model_head_bytes(model);
        if (fb_probe_run((size_t)(stream_mb * 1048576.0), (size_t)model_bytes, probe_threads,
                         &rep.probe))
            fprintf(stderr, "free-bench: the bandwidth probe failed; fractions will be 0\n");
    }

    rep.model_desc = free_model_describe(model);
    rep.weight_type = free_model_weight_type(model);
    rep.n_layers = free_model_n_layers(model);
    rep.n_vocab = free_model_n_vocab(model);
    rep.n_params = free_model_n_params(model);
    for (int c = 0; c < n_cfg; c++)
        if (fb_make_ctx(model, &o, &cfg[c]))
            goto done;
    fb_config ev_cfg = {.kind = FB_NONE};
    snprintf(ev_cfg.name, sizeof ev_cfg.name, "scoring");
    if (fb_make_ctx(model, &o, &ev_cfg))
        goto done;
    ev = ev_cfg.ctx;
    free_stats st0 = {.size = sizeof st0};
    free_ctx_stats(cfg[n_cfg > 1 ? 1 : 0].ctx, &st0);
    rep.exit_layer = st0.exit_layer;
    rep.threads = st0.n_threads;
    if (rep.probe.ok && rep.probe.threads != rep.threads)
        fprintf(stderr, "free-bench: note: probe used %d threads, the contexts %d\n",
                rep.probe.threads, rep.threads);
    rep.shallow_bytes = free_model_weight_bytes(model, 0, rep.exit_layer);
    rep.deep_bytes = free_model_weight_bytes(model, rep.exit_layer, rep.n_layers);
    rep.head_bytes = free_model_head_bytes(model);

    const int32_t n_ctx = free_ctx_n_ctx(ev);
    for (int p = 0; p < n_pr; p++) {
        size_t n = 0;
        free_tokenize(model, pr[p].text, -1, 1, NULL, 0, &n);
        pr[p].tok = malloc((n ? n : 1) * sizeof(int32_t));
        if (!pr[p].tok ||
            free_tokenize(model, pr[p].text, -1, 1, pr[p].tok, n, &pr[p].n_tok) != FREE_OK) {
            fprintf(stderr, "free-bench: cannot tokenize prompt %d: %s\n", p + 1,
                    free_last_error());
            goto done;
        }
        if (pr[p].n_tok + (size_t)o.n_tokens > (size_t)n_ctx) {
            fprintf(stderr, "free-bench: prompt %d (%zu tokens) + %d tokens does not fit the "
                            "context of %d\n", p + 1, pr[p].n_tok, o.n_tokens, n_ctx);
            goto done;
        }
    }

    if (o.parallel > 0) {
        int pr_rc = fb_parallel(&o, model, pr, n_pr, cfg, n_cfg, &rep);
        rc = pr_rc < 0 ? 1 : pr_rc;
        goto done;
    }
    const int n_runs = o.reps * n_pr;
    runs = calloc((size_t)n_runs * n_cfg, sizeof *runs);
    res = calloc((size_t)n_cfg, sizeof *res);
    scratch = calloc((size_t)n_runs, sizeof *scratch);
    if (!runs || !res || !scratch)
        goto done;
    if (bench(&o, &rep, pr, n_pr, cfg, n_cfg, runs, ev, rep.n_vocab, &check_failed))
        goto done;
    for (int c = 0; c < n_cfg; c++)
        aggregate(&cfg[c], c, n_cfg, runs, n_runs, &rep, &res[c], scratch);
    rep.results = res;
    rep.n_results = n_cfg;
    rep.load_end = fb_loadavg();
    rep.maxrss_kb = fb_maxrss_kb();
    rep.hwm_kb = fb_vm_hwm_kb();
    rep.wall_s = fb_now() - t_start;
    fb_print_table(stdout, &rep);
    if (fb_write_json(o.json, &rep))
        fprintf(stderr, "free-bench: cannot write %s: %s\n", o.json, strerror(errno));
    svg_plot(&o, &rep);
    fprintf(stderr, "free-bench: wrote %s and %s\n", o.json, o.svg);
    rc = check_failed ? 3 : 0;
done:
    if (runs)
        for (size_t k = 0; k < (size_t)o.reps * n_pr * n_cfg; k++)
            free(runs[k].tok);
    free(runs);
    free(res);
    free(scratch);
    for (int c = 0; c < n_cfg; c++)
        free_ctx_destroy(cfg[c].ctx);
    free_ctx_destroy(ev);
    free_model_destroy(model);
    for (int p = 0; p < n_pr; p++) {
        free(pr[p].text);
        free(pr[p].tok);
    }
    free(pr);
    free(cfg);
    return rc;
}
