/* free-bench --parallel N: N prompts decoded at once through free_batch_step, against one
 * stream through the same call; aggregate and per-stream decode tokens/s, the latency of a
 * step, how long streams wait for one another, and the weight bytes read per second
 * against the bandwidth probe. Each stream generates exactly --tokens tokens (end of
 * sequence does not stop it, so every run does the same work). --parallel N1,N2,... runs
 * every count and adds a sweep table. Runs are interleaved (rep > count > config > 1
 * stream, N streams) so that drift of a shared machine hits all alike. */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

typedef struct prun {
    double decode_s;   /* wall time of the stepping loop */
    double *step_ms;   /* [n_tokens] wall time of each free_batch_step call */
    int32_t *tok0;     /* [n_tokens] stream 0's tokens */
    int32_t *early;    /* [n_tokens] streams whose token was an early exit at each step */
    double wait_ms;    /* over streams and steps: the call's time after the stream's token
                          was handed out (its decode_ms ends there), waiting for the others */
    double busy_ms;    /* over streams and steps: the call's time */
    free_stats st0;    /* stream 0's statistics */
} prun;

/* Prefills pr[i % n_pr] in ctx[i] for i < n (untimed), then steps them together. */
static int run_streams(free_ctx **ctx, int n, const fb_prompt *pr, int n_pr, int n_tokens,
                       prun *out)
{
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    free_status *st = malloc((size_t)n * sizeof *st);
    free_step_info *info = malloc((size_t)n * sizeof *info);
    double *dms = calloc((size_t)n, sizeof *dms);
    int rc = -1;
    if (!tok || !st || !info || !dms)
        goto done;
    for (int i = 0; i < n; i++)
        info[i].size = sizeof info[i];
    for (int i = 0; i < n; i++) {
        free_ctx_reset(ctx[i]);
        free_ctx_reset_stats(ctx[i]);
        const fb_prompt *p = &pr[i % n_pr];
        free_status s = free_prefill(ctx[i], p->tok, p->n_tok);
        if (s != FREE_OK) {
            fprintf(stderr, "free-bench: --parallel: prefill of stream %d: %s: %s\n", i,
                    free_strerror(s), free_ctx_last_error(ctx[i]));
            goto done;
        }
    }
    out->wait_ms = out->busy_ms = 0;
    double t0 = fb_now(), outside = 0;
    for (int t = 0; t < n_tokens; t++) {
        double ts = fb_now();
        free_status s = free_batch_step(ctx, n, tok, st, info);
        double te = fb_now();
        out->step_ms[t] = (te - ts) * 1e3;
        /* Each stream's decode_ms grew by the time until its token was handed out. */
        for (int i = 0; s == FREE_OK && i < n; i++) {
            free_stats x;
            x.size = sizeof x;
            free_ctx_stats(ctx[i], &x);
            const double w = out->step_ms[t] - (x.decode_ms - dms[i]);
            dms[i] = x.decode_ms;
            out->wait_ms += w > 0 ? w : 0;
            out->busy_ms += out->step_ms[t];
        }
        outside += fb_now() - te;
        for (int i = 0; s == FREE_OK && i < n; i++)
            if (st[i] != FREE_OK) {
                fprintf(stderr, "free-bench: --parallel: stream %d, token %d: %s: %s\n", i, t,
                        free_strerror(st[i]), free_ctx_last_error(ctx[i]));
                s = st[i];
            }
        if (s != FREE_OK) {
            if (s == FREE_ERR_INVALID_ARG)
                fprintf(stderr, "free-bench: --parallel: %s\n", free_last_error());
            goto done;
        }
        out->tok0[t] = tok[0];
        out->early[t] = 0;
        for (int i = 0; i < n; i++)
            out->early[t] += info[i].early_exit != 0;
    }
    out->decode_s = fb_now() - t0 - outside;
    out->st0.size = sizeof out->st0;
    free_ctx_stats(ctx[0], &out->st0);
    rc = 0;
done:
    free(tok);
    free(st);
    free(info);
    free(dms);
    return rc;
}

typedef struct pres {
    int n;                   /* streams */
    fb_summary agg_tps, one_tps, step_ms, one_step_ms;
    double speedup;          /* agg_tps.median / one_tps.median */
    int identical;           /* stream 0 of N gave the lone stream's tokens in every rep */
    /* Weight bytes per second (medians over reps), 0 when not known: */
    double read_gbps;        /* read by the batch: one read per pass (NONE; FREE: the
                                shallow layers and exit head every step, the deep layers and
                                final head in steps with a synchronization) */
    double eff_gbps;         /* the bytes the lone stream reads per token x aggregate tok/s:
                                what N separate streams would have to read */
    /* N streams, steps after the first (which samples the prefill's logits): */
    double sync_steps;       /* share of steps in which some stream synchronized */
    double waiting;          /* share of stream-steps that exited early in such a step,
                                so waited for the others' deep pass */
    double wait_share;       /* share of the streams' time in the call spent after their own
                                token was ready (all steps, every mode) */
    double wait_ms;          /* ... per stream and step */
    double step_ms_all_early;/* median latency of steps in which every stream exited */
    double step_ms_sync;     /* ... and of steps with a synchronization */
} pres;

/* Weight bytes the batch read in run u of n streams (see pres.read_gbps), or 0. */
static double read_bytes(const fb_config *c, const fb_report *rep, const prun *u, int n, int nt)
{
    const double sb = (double)rep->shallow_bytes, db = (double)rep->deep_bytes,
                 hb = (double)rep->head_bytes;
    if (c->kind == FB_NONE && !c->auto_mode && c->min_agreement <= 0)
        return (sb + db + hb) * (nt - 1);
    if ((c->kind != FB_FREE && c->kind != FB_ADAPTIVE) || c->auto_mode)
        return 0;
    double b = 0;
    for (int t = 1; t < nt; t++)
        b += sb + hb + (u->early[t] < n ? db + hb : 0);
    return b;
}

/* The weight bytes the lone stream of run u read per token it produced. */
static double alone_bytes_per_token(const fb_config *c, const fb_report *rep, const prun *u,
                                    int nt)
{
    const double sb = (double)rep->shallow_bytes, db = (double)rep->deep_bytes,
                 hb = (double)rep->head_bytes;
    if (c->kind == FB_NONE && !c->auto_mode && c->min_agreement <= 0)
        return (sb + db + hb) * (nt - 1) / nt;
    if (u->st0.tokens == 0)
        return 0;
    return ((double)u->st0.shallow_passes * (sb + hb) + (double)u->st0.deep_passes * (db + hb)) /
           (double)u->st0.tokens;
}

static void summarize(const fb_config *cfg, int c, int n_cfg, int n, int nt, int reps,
                      const prun *runs, const fb_report *rep, double *x, pres *p)
{
    /* runs[r * stride + c * 2 + which]: this count's runs of rep r */
    const size_t stride = (size_t)n_cfg * 2;
    p->n = n;
    p->identical = 1;
    for (int which = 0; which < 2; which++) {
        for (int r = 0; r < reps; r++) {
            const prun *u = &runs[r * stride + (size_t)c * 2 + which];
            x[r] = (which ? n : 1) * (double)nt / u->decode_s;
        }
        *(which ? &p->agg_tps : &p->one_tps) = fb_summarize(x, reps);
        for (int r = 0; r < reps; r++)
            memcpy(x + (size_t)r * nt, runs[r * stride + (size_t)c * 2 + which].step_ms,
                   (size_t)nt * sizeof *x);
        *(which ? &p->step_ms : &p->one_step_ms) = fb_summarize(x, reps * nt);
    }
    for (int r = 0; r < reps; r++) {
        const prun *one = &runs[r * stride + (size_t)c * 2];
        p->identical &= !memcmp(one->tok0, one[1].tok0, (size_t)nt * sizeof(int32_t));
    }
    for (int r = 0; r < reps; r++) {
        const prun *u = &runs[r * stride + (size_t)c * 2 + 1];
        x[r] = read_bytes(&cfg[c], rep, u, n, nt) / u->decode_s * 1e-9;
    }
    p->read_gbps = fb_summarize(x, reps).median;
    for (int r = 0; r < reps; r++)
        x[r] = alone_bytes_per_token(&cfg[c], rep, &runs[r * stride + (size_t)c * 2], nt);
    p->eff_gbps = fb_summarize(x, reps).median * p->agg_tps.median * 1e-9;
    /* Waiting: early exits in steps where another stream synchronized; and the time. */
    long steps = 0, syncs = 0, waits = 0;
    int n_early = 0, n_sync = 0;
    double wait = 0, busy = 0;
    double *ms_sync = malloc((size_t)reps * nt * sizeof *ms_sync);
    for (int r = 0; ms_sync && r < reps; r++) {
        const prun *u = &runs[r * stride + (size_t)c * 2 + 1];
        wait += u->wait_ms;
        busy += u->busy_ms;
        for (int t = 1; t < nt; t++) {
            steps++;
            if (u->early[t] < n) {
                syncs++;
                waits += u->early[t];
                ms_sync[n_sync++] = u->step_ms[t];
            } else {
                x[n_early++] = u->step_ms[t];
            }
        }
    }
    p->sync_steps = steps ? (double)syncs / (double)steps : 0;
    p->waiting = steps ? (double)waits / ((double)steps * n) : 0;
    p->wait_share = busy > 0 ? wait / busy : 0;
    p->wait_ms = wait / ((double)reps * nt * n);
    p->step_ms_all_early = fb_summarize(x, n_early).median;
    p->step_ms_sync = ms_sync ? fb_summarize(ms_sync, n_sync).median : 0;
    free(ms_sync);
    p->speedup = p->one_tps.median > 0 ? p->agg_tps.median / p->one_tps.median : 0;
}

static void print_count(FILE *f, const fb_options *o, const fb_report *rep, int n_pr,
                        const fb_config *cfg, int n_cfg, const pres *res)
{
    const int n = res[0].n;
    const double probe = rep->probe.ok ? rep->probe.stream_gbps_t : 0;
    fprintf(f, "free-bench --parallel %d (libfree %s): %s\n  model file: %s; weight type %s\n",
            n, rep->libfree_version, rep->model_desc, rep->model_path, rep->weight_type);
    fprintf(f, "  machine: %s, %ld cores; load average %.2f at start, %.2f now\n", rep->cpu,
            rep->cores, rep->load_start, fb_loadavg());
    fprintf(f, "  %d streams (prompts 1..%d of %s, cycled) x %d tokens each, %d threads, %d "
               "reps; 1 stream = prompt 1 alone through the same call\n\n", n,
            n < n_pr ? n : n_pr, rep->prompts_path, o->n_tokens, rep->threads, o->reps);
    fprintf(f, "%-14s %22s %10s %20s %10s %8s %12s %9s %6s\n", "config",
            "aggregate tok/s (IQR)", "per-stream", "1 stream tok/s (IQR)", "x 1 stream",
            "step ms", "1-stream ms", "read", "same");
    fprintf(f, "%-14s %22s %10s %20s %10s %8s %12s %9s %6s\n", "", "median (p25-p75)", "tok/s",
            "median (p25-p75)", "", "median", "step median", "GB/s", "tokens");
    for (int c = 0; c < n_cfg; c++) {
        const pres *p = &res[c];
        char a[48], b[48], g[16];
        snprintf(a, sizeof a, "%.1f (%.1f-%.1f)", p->agg_tps.median, p->agg_tps.p25,
                 p->agg_tps.p75);
        snprintf(b, sizeof b, "%.1f (%.1f-%.1f)", p->one_tps.median, p->one_tps.p25,
                 p->one_tps.p75);
        snprintf(g, sizeof g, p->read_gbps > 0 ? "%.2f" : "-", p->read_gbps);
        fprintf(f, "%-14s %22s %10.1f %20s %10.2f %8.2f %12.2f %9s %6s\n", cfg[c].name, a,
                p->agg_tps.median / n, b, p->speedup, p->step_ms.median, p->one_step_ms.median,
                g, p->identical ? "yes" : "NO");
    }
    fprintf(f, "\n%-14s %10s %10s %12s %12s %14s %14s %10s %10s\n", "config", "steps with",
            "streams", "stream time", "wait ms per", "step ms, all", "step ms, with",
            "read GB/s", "effective");
    fprintf(f, "%-14s %10s %10s %12s %12s %14s %14s %10s %10s\n", "", "a sync %",
            "waiting %", "waiting %", "stream-step", "exited early", "a sync", "x probe",
            "x probe");
    for (int c = 0; c < n_cfg; c++) {
        const pres *p = &res[c];
        char r[16], e[16];
        snprintf(r, sizeof r, p->read_gbps > 0 && probe > 0 ? "%.2f" : "-", p->read_gbps / probe);
        snprintf(e, sizeof e, p->eff_gbps > 0 && probe > 0 ? "%.2f" : "-", p->eff_gbps / probe);
        fprintf(f, "%-14s %10.1f %10.1f %12.1f %12.3f %14.2f %14.2f %10s %10s\n", cfg[c].name,
                100.0 * p->sync_steps, 100.0 * p->waiting, 100.0 * p->wait_share, p->wait_ms,
                p->step_ms_all_early, p->step_ms_sync, r, e);
    }
    if (probe > 0)
        fprintf(f, "\n  bandwidth probe: %.1f GB/s streaming (%d threads). read GB/s: the weight "
                   "bytes the batch read (one read per pass; '-' where the passes are not "
                   "known) per second; effective: the bytes the lone stream reads per token x "
                   "aggregate tok/s (what separate streams would need)\n\n",
                probe, rep->probe.threads);
}

static void print_sweep(FILE *f, const fb_report *rep, const fb_config *cfg, int n_cfg,
                        const pres *res, int n_counts)
{
    const double probe = rep->probe.ok ? rep->probe.stream_gbps_t : 0;
    fprintf(f, "sweep: aggregate decode tok/s by streams (median of reps); x 1: over one "
               "stream in the same reps; read/eff: GB/s x the probe (%.1f GB/s); wait: share "
               "of the streams' time waiting for others\n", probe);
    fprintf(f, "%-14s", "streams");
    for (int k = 0; k < n_counts; k++)
        fprintf(f, " %30d", res[(size_t)k * n_cfg].n);
    fprintf(f, "\n%-14s", "config");
    for (int k = 0; k < n_counts; k++)
        fprintf(f, " %30s", "tok/s  x 1  read  eff  wait%");
    fputc('\n', f);
    for (int c = 0; c < n_cfg; c++) {
        fprintf(f, "%-14s", cfg[c].name);
        for (int k = 0; k < n_counts; k++) {
            const pres *p = &res[(size_t)k * n_cfg + c];
            char r[16], e[16], cell[64];
            snprintf(r, sizeof r, p->read_gbps > 0 && probe > 0 ? "%.2f" : "-",
                     p->read_gbps / probe);
            snprintf(e, sizeof e, p->eff_gbps > 0 && probe > 0 ? "%.2f" : "-",
                     p->eff_gbps / probe);
            snprintf(cell, sizeof cell, "%.1f %5.2f %5s %5s %4.1f", p->agg_tps.median,
                     p->speedup, r, e, 100.0 * p->wait_share);
            fprintf(f, " %30s", cell);
        }
        fputc('\n', f);
    }
}

static void json_configs(FILE *j, const fb_config *cfg, int n_cfg, const pres *res,
                         const char *indent)
{
    for (int c = 0; c < n_cfg; c++) {
        const pres *p = &res[c];
        fprintf(j, "%s{\"name\": ", indent);
        fb_json_string(j, cfg[c].name);
        fprintf(j, ", \"aggregate_tokens_per_s\": %.4g, \"aggregate_tokens_per_s_p25\": %.4g, "
                   "\"aggregate_tokens_per_s_p75\": %.4g, \"per_stream_tokens_per_s\": %.4g, "
                   "\"one_stream_tokens_per_s\": %.4g, \"speedup_vs_one_stream\": %.4g, "
                   "\"step_ms_median\": %.4g, \"step_ms_p25\": %.4g, \"step_ms_p75\": %.4g, "
                   "\"one_stream_step_ms_median\": %.4g, \"weight_gbps\": %.4g, "
                   "\"effective_weight_gbps\": %.4g, "
                   "\"sync_steps\": %.4g, \"waiting_stream_steps\": %.4g, "
                   "\"wait_share\": %.4g, \"wait_ms_per_stream_step\": %.4g, "
                   "\"step_ms_all_early\": %.4g, \"step_ms_with_sync\": %.4g, "
                   "\"identical_to_one_stream\": %s}%s\n",
                p->agg_tps.median, p->agg_tps.p25, p->agg_tps.p75, p->agg_tps.median / p->n,
                p->one_tps.median, p->speedup, p->step_ms.median, p->step_ms.p25,
                p->step_ms.p75, p->one_step_ms.median, p->read_gbps, p->eff_gbps,
                p->sync_steps, p->waiting, p->wait_share, p->wait_ms, p->step_ms_all_early,
                p->step_ms_sync, p->identical ? "true" : "false", c + 1 < n_cfg ? "," : "");
    }
}

static int write_json(const fb_options *o, const fb_report *rep, const fb_config *cfg,
                      int n_cfg, const pres *res, int n_counts)
{
    FILE *j = fopen(o->json, "w");
    if (!j) {
        fprintf(stderr, "free-bench: cannot write %s\n", o->json);
        return -1;
    }
    /* The top-level figures are those of the largest count. */
    int top = 0;
    for (int k = 1; k < n_counts; k++)
        if (res[(size_t)k * n_cfg].n > res[(size_t)top * n_cfg].n)
            top = k;
    const pres *tp = &res[(size_t)top * n_cfg];
    fputs("{\n  \"tool\": \"free-bench\",\n  \"mode\": \"parallel\",\n  \"libfree_version\": ",
          j);
    fb_json_string(j, rep->libfree_version);
    fputs(",\n  \"model\": ", j);
    fb_json_string(j, rep->model_path);
    fputs(",\n  \"cpu\": ", j);
    fb_json_string(j, rep->cpu);
    fprintf(j, ",\n  \"loadavg_start\": %.2f, \"loadavg_end\": %.2f, \"cores\": %ld,\n"
               "  \"streams\": %d, \"tokens\": %d, \"threads\": %d, \"reps\": %d,\n"
               "  \"aggregate_tokens_per_s\": %.4g,\n  \"probe_stream_gbps\": %.4g,\n"
               "  \"configs\": [\n",
            rep->load_start, fb_loadavg(), rep->cores, tp->n, o->n_tokens, rep->threads,
            o->reps, tp->agg_tps.median, rep->probe.ok ? rep->probe.stream_gbps_t : 0.0);
    json_configs(j, cfg, n_cfg, tp, "    ");
    fputs("  ]", j);
    if (n_counts > 1) {
        fputs(",\n  \"sweep\": [\n", j);
        for (int k = 0; k < n_counts; k++) {
            const pres *p = &res[(size_t)k * n_cfg];
            fprintf(j, "    {\"streams\": %d, \"aggregate_tokens_per_s\": %.4g, \"configs\": [\n",
                    p->n, p->agg_tps.median);
            json_configs(j, cfg, n_cfg, p, "      ");
            fprintf(j, "    ]}%s\n", k + 1 < n_counts ? "," : "");
        }
        fputs("  ]", j);
    }
    fputs("\n}\n", j);
    fclose(j);
    fprintf(stderr, "free-bench: wrote %s\n", o->json);
    return 0;
}

int fb_parallel(const fb_options *o, const free_model *m, const fb_prompt *pr, int n_pr,
                fb_config *cfg, int n_cfg, const fb_report *rep)
{
    const int nt = o->n_tokens, reps = o->reps;
    int one = o->parallel;
    const int *counts = o->n_parallel > 0 ? o->parallel_list : &one;
    const int n_counts = o->n_parallel > 0 ? o->n_parallel : 1;
    int nmax = 0;
    for (int k = 0; k < n_counts; k++)
        nmax = counts[k] > nmax ? counts[k] : nmax;
    /* runs[((r * n_counts + k) * n_cfg + c) * 2 + which] */
    const size_t n_runs = (size_t)reps * n_counts * n_cfg * 2;
    free_ctx **ctx = calloc((size_t)nmax * n_cfg, sizeof *ctx);
    prun *runs = calloc(n_runs, sizeof *runs);
    prun *sel = calloc((size_t)reps * n_cfg * 2, sizeof *sel);
    pres *res = calloc((size_t)n_counts * n_cfg, sizeof *res);
    double *x = malloc((size_t)reps * nt * sizeof *x);
    int rc = -1;
    if (!ctx || !runs || !sel || !res || !x)
        goto done;
    for (size_t k = 0; k < n_runs; k++) {
        runs[k].step_ms = malloc((size_t)nt * sizeof(double));
        runs[k].tok0 = malloc((size_t)nt * sizeof(int32_t));
        runs[k].early = malloc((size_t)nt * sizeof(int32_t));
        if (!runs[k].step_ms || !runs[k].tok0 || !runs[k].early)
            goto done;
    }
    for (int c = 0; c < n_cfg; c++)
        for (int i = 0; i < nmax; i++) {
            fb_config tmp = cfg[c];
            if (fb_make_ctx(m, o, &tmp))
                goto done;
            ctx[(size_t)c * nmax + i] = tmp.ctx;
        }
    for (int w = 0; w < o->warmup; w++)
        for (int c = 0; c < n_cfg; c++) {
            prun tmp = runs[0];
            if (run_streams(&ctx[(size_t)c * nmax], nmax, pr, n_pr, nt < 8 ? nt : 8, &tmp))
                goto done;
        }
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < n_counts; k++)
            for (int c = 0; c < n_cfg; c++) {
                fprintf(stderr, "free-bench: --parallel %d: rep %d/%d %s\n", counts[k], r + 1,
                        reps, cfg[c].name);
                prun *u = &runs[(((size_t)r * n_counts + k) * n_cfg + c) * 2];
                if (run_streams(&ctx[(size_t)c * nmax], 1, pr, n_pr, nt, u) ||
                    run_streams(&ctx[(size_t)c * nmax], counts[k], pr, n_pr, nt, u + 1))
                    goto done;
            }
    for (int k = 0; k < n_counts; k++) {
        /* This count's runs, rep by rep. */
        for (int r = 0; r < reps; r++)
            memcpy(&sel[(size_t)r * n_cfg * 2],
                   &runs[((size_t)r * n_counts + k) * n_cfg * 2],
                   (size_t)n_cfg * 2 * sizeof *sel);
        for (int c = 0; c < n_cfg; c++)
            summarize(cfg, c, n_cfg, counts[k], nt, reps, sel, rep, x,
                      &res[(size_t)k * n_cfg + c]);
        print_count(stdout, o, rep, n_pr, cfg, n_cfg, &res[(size_t)k * n_cfg]);
    }
    if (n_counts > 1)
        print_sweep(stdout, rep, cfg, n_cfg, res, n_counts);
    if (write_json(o, rep, cfg, n_cfg, res, n_counts))
        goto done;
    rc = 0;
    for (int k = 0; k < n_counts; k++)
        for (int c = 0; c < n_cfg; c++)
            if (o->check && !res[(size_t)k * n_cfg + c].identical) {
                fprintf(stderr, "free-bench: check failed: %s: stream 0 of %d differs from the "
                                "lone stream\n", cfg[c].name, counts[k]);
                rc = 3;
            }
done:
    if (ctx)
        for (int k = 0; k < nmax * n_cfg; k++)
            free_ctx_destroy(ctx[k]);
    if (runs)
        for (size_t k = 0; k < n_runs; k++) {
            free(runs[k].step_ms);
            free(runs[k].tok0);
            free(runs[k].early);
        }
    free(ctx);
    free(runs);
    free(sel);
    free(res);
    free(x);
    return rc;
}
