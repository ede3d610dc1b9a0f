/* free-bench --parallel N: N prompts decoded at once through free_batch_step, against one
 * stream through the same call; aggregate and per-stream decode tokens/s and the latency
 * of a step. Each stream generates exactly --tokens tokens (end of sequence does not stop
 * it, so every run does the same work). Runs are interleaved (rep > config > 1 stream, N
 * streams) so that drift of a shared machine hits all alike. */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

typedef struct prun {
    double decode_s;   /* wall time of the stepping loop */
    double *step_ms;   /* [n_tokens] wall time of each free_batch_step call */
    int32_t *tok0;     /* [n_tokens] stream 0's tokens */
    int32_t *early;    /* [n_tokens] streams whose token was an early exit at each step */
    free_stats st0;    /* stream 0's statistics */
} prun;

/* Prefills pr[i % n_pr] in ctx[i] for i < n (untimed), then steps them together. */
static int run_streams(free_ctx **ctx, int n, const fb_prompt *pr, int n_pr, int n_tokens,
                       prun *out)
{
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    free_status *st = malloc((size_t)n * sizeof *st);
    free_step_info *info = malloc((size_t)n * sizeof *info);
    int rc = -1;
    if (!tok || !st || !info)
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
    double t0 = fb_now();
    for (int t = 0; t < n_tokens; t++) {
        double ts = fb_now();
        free_status s = free_batch_step(ctx, n, tok, st, info);
        out->step_ms[t] = (fb_now() - ts) * 1e3;
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
    out->decode_s = fb_now() - t0;
    out->st0.size = sizeof out->st0;
    free_ctx_stats(ctx[0], &out->st0);
    rc = 0;
done:
    free(tok);
    free(st);
    free(info);
    return rc;
}

typedef struct pres {
    fb_summary agg_tps, one_tps, step_ms, one_step_ms;
    double speedup;          /* agg_tps.median / one_tps.median */
    int identical;           /* stream 0 of N gave the lone stream's tokens in every rep */
    double weight_gbps;      /* NONE: weight bytes read per step x steps/s (one read for
                                all rows); 0 for the exit modes */
    /* N streams, steps after the first (which samples the prefill's logits): */
    double sync_steps;       /* share of steps in which some stream synchronized */
    double waiting;          /* share of stream-steps that exited early in such a step,
                                so waited for the others' deep pass */
    double step_ms_all_early;/* median latency of steps in which every stream exited */
    double step_ms_sync;     /* ... and of steps with a synchronization */
} pres;

int fb_parallel(const fb_options *o, const free_model *m, const fb_prompt *pr, int n_pr,
                fb_config *cfg, int n_cfg, const fb_report *rep)
{
    const int n = o->parallel, nt = o->n_tokens, reps = o->reps;
    free_ctx **ctx = calloc((size_t)n * n_cfg, sizeof *ctx);
    prun *runs = calloc((size_t)reps * n_cfg * 2, sizeof *runs);
    pres *res = calloc((size_t)n_cfg, sizeof *res);
    double *x = malloc((size_t)reps * nt * sizeof *x);
    int rc = -1;
    if (!ctx || !runs || !res || !x)
        goto done;
    for (int k = 0; k < reps * n_cfg * 2; k++) {
        runs[k].step_ms = malloc((size_t)nt * sizeof(double));
        runs[k].tok0 = malloc((size_t)nt * sizeof(int32_t));
        runs[k].early = malloc((size_t)nt * sizeof(int32_t));
        if (!runs[k].step_ms || !runs[k].tok0 || !runs[k].early)
            goto done;
    }
    for (int c = 0; c < n_cfg; c++)
        for (int i = 0; i < n; i++) {
            fb_config tmp = cfg[c];
            if (fb_make_ctx(m, o, &tmp))
                goto done;
            ctx[(size_t)c * n + i] = tmp.ctx;
        }
    for (int w = 0; w < o->warmup; w++)
        for (int c = 0; c < n_cfg; c++) {
            prun tmp = runs[0];
            if (run_streams(&ctx[(size_t)c * n], n, pr, n_pr, nt < 8 ? nt : 8, &tmp))
                goto done;
        }
    for (int r = 0; r < reps; r++)
        for (int c = 0; c < n_cfg; c++) {
            fprintf(stderr, "free-bench: --parallel %d: rep %d/%d %s\n", n, r + 1, reps,
                    cfg[c].name);
            prun *one = &runs[((size_t)r * n_cfg + c) * 2], *all = one + 1;
            if (run_streams(&ctx[(size_t)c * n], 1, pr, n_pr, nt, one) ||
                run_streams(&ctx[(size_t)c * n], n, pr, n_pr, nt, all))
                goto done;
        }
    const double full_bytes = (double)(rep->shallow_bytes + rep->deep_bytes + rep->head_bytes);
    for (int c = 0; c < n_cfg; c++) {
        pres *p = &res[c];
        p->identical = 1;
        for (int which = 0; which < 2; which++) {
            for (int r = 0; r < reps; r++) {
                const prun *u = &runs[((size_t)r * n_cfg + c) * 2 + which];
                x[r] = (which ? n : 1) * (double)nt / u->decode_s;
            }
            *(which ? &p->agg_tps : &p->one_tps) = fb_summarize(x, reps);
            for (int r = 0; r < reps; r++)
                memcpy(x + (size_t)r * nt, runs[((size_t)r * n_cfg + c) * 2 + which].step_ms,
                       (size_t)nt * sizeof *x);
            *(which ? &p->step_ms : &p->one_step_ms) = fb_summarize(x, reps * nt);
        }
        for (int r = 0; r < reps; r++) {
            const prun *one = &runs[((size_t)r * n_cfg + c) * 2];
            p->identical &= !memcmp(one->tok0, one[1].tok0, (size_t)nt * sizeof(int32_t));
        }
        /* Waiting: early exits in steps where another stream synchronized. */
        long steps = 0, syncs = 0, waits = 0;
        int n_early = 0, n_sync = 0;
        double *ms_sync = malloc((size_t)reps * nt * sizeof *ms_sync);
        for (int r = 0; ms_sync && r < reps; r++) {
            const prun *u = &runs[((size_t)r * n_cfg + c) * 2 + 1];
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
        p->step_ms_all_early = fb_summarize(x, n_early).median;
        p->step_ms_sync = ms_sync ? fb_summarize(ms_sync, n_sync).median : 0;
        free(ms_sync);
        p->speedup = p->one_tps.median > 0 ? p->agg_tps.median / p->one_tps.median : 0;
        /* nt steps, the first of which samples the prefill's logits without a pass. */
        if (cfg[c].kind == FB_NONE)
            p->weight_gbps = full_bytes * (p->agg_tps.median / n) * (nt - 1) / nt * 1e-9;
    }

    FILE *f = stdout;
    fprintf(f, "free-bench --parallel %d (libfree %s): %s\n  model file: %s; weight type %s\n",
            n, rep->libfree_version, rep->model_desc, rep->model_path, rep->weight_type);
    fprintf(f, "  machine: %s, %ld cores; load average %.2f at start\n", rep->cpu, rep->cores,
            rep->load_start);
    fprintf(f, "  %d streams (prompts 1..%d of %s, cycled) x %d tokens each, %d threads, %d "
               "reps; 1 stream = prompt 1 alone through the same call\n\n", n,
            n < n_pr ? n : n_pr, rep->prompts_path, nt, rep->threads, reps);
    fprintf(f, "%-14s %22s %10s %20s %10s %8s %12s %9s %6s\n", "config",
            "aggregate tok/s (IQR)", "per-stream", "1 stream tok/s (IQR)", "x 1 stream",
            "step ms", "1-stream ms", "weight", "same");
    fprintf(f, "%-14s %22s %10s %20s %10s %8s %12s %9s %6s\n", "", "median (p25-p75)", "tok/s",
            "median (p25-p75)", "", "median", "step median", "GB/s", "tokens");
    for (int c = 0; c < n_cfg; c++) {
        const pres *p = &res[c];
        char a[48], b[48], g[16];
        snprintf(a, sizeof a, "%.1f (%.1f-%.1f)", p->agg_tps.median, p->agg_tps.p25,
                 p->agg_tps.p75);
        snprintf(b, sizeof b, "%.1f (%.1f-%.1f)", p->one_tps.median, p->one_tps.p25,
                 p->one_tps.p75);
        snprintf(g, sizeof g, p->weight_gbps > 0 ? "%.2f" : "-", p->weight_gbps);
        fprintf(f, "%-14s %22s %10.1f %20s %10.2f %8.2f %12.2f %9s %6s\n", cfg[c].name, a,
                p->agg_tps.median / n, b, p->speedup, p->step_ms.median, p->one_step_ms.median,
                g, p->identical ? "yes" : "NO");
    }
    fprintf(f, "\n%-14s %12s %12s %16s %14s\n", "config", "steps with", "streams",
            "step ms, all", "step ms, with");
    fprintf(f, "%-14s %12s %12s %16s %14s\n", "", "a sync %", "waiting %", "exited early",
            "a sync");
    for (int c = 0; c < n_cfg; c++)
        fprintf(f, "%-14s %12.1f %12.1f %16.2f %14.2f\n", cfg[c].name,
                100.0 * res[c].sync_steps, 100.0 * res[c].waiting, res[c].step_ms_all_early,
                res[c].step_ms_sync);
    if (rep->probe.ok)
        fprintf(f, "\n  bandwidth probe: %.1f GB/s streaming (%d threads); weight GB/s is the "
                   "bytes of one full-depth read per step x steps/s\n", rep->probe.stream_gbps_t,
                rep->probe.threads);

    FILE *j = fopen(o->json, "w");
    if (!j) {
        fprintf(stderr, "free-bench: cannot write %s\n", o->json);
        goto done;
    }
    fputs("{\n  \"tool\": \"free-bench\",\n  \"mode\": \"parallel\",\n  \"libfree_version\": ",
          j);
    fb_json_string(j, rep->libfree_version);
    fputs(",\n  \"model\": ", j);
    fb_json_string(j, rep->model_path);
    fputs(",\n  \"cpu\": ", j);
    fb_json_string(j, rep->cpu);
    fprintf(j, ",\n  \"loadavg_start\": %.2f, \"cores\": %ld,\n  \"streams\": %d, \"tokens\": %d, "
               "\"threads\": %d, \"reps\": %d,\n  \"aggregate_tokens_per_s\": %.4g,\n"
               "  \"probe_stream_gbps\": %.4g,\n  \"configs\": [\n",
            rep->load_start, rep->cores, n, nt, rep->threads, reps, res[0].agg_tps.median,
            rep->probe.ok ? rep->probe.stream_gbps_t : 0.0);
    for (int c = 0; c < n_cfg; c++) {
        const pres *p = &res[c];
        fputs("    {\"name\": ", j);
        fb_json_string(j, cfg[c].name);
        fprintf(j, ", \"aggregate_tokens_per_s\": %.4g, \"aggregate_tokens_per_s_p25\": %.4g, "
                   "\"aggregate_tokens_per_s_p75\": %.4g, \"per_stream_tokens_per_s\": %.4g, "
                   "\"one_stream_tokens_per_s\": %.4g, \"speedup_vs_one_stream\": %.4g, "
                   "\"step_ms_median\": %.4g, \"step_ms_p25\": %.4g, \"step_ms_p75\": %.4g, "
                   "\"one_stream_step_ms_median\": %.4g, \"weight_gbps\": %.4g, "
                   "\"sync_steps\": %.4g, \"waiting_stream_steps\": %.4g, "
                   "\"step_ms_all_early\": %.4g, \"step_ms_with_sync\": %.4g, "
                   "\"identical_to_one_stream\": %s}%s\n",
                p->agg_tps.median, p->agg_tps.p25, p->agg_tps.p75, p->agg_tps.median / n,
                p->one_tps.median, p->speedup, p->step_ms.median, p->step_ms.p25,
                p->step_ms.p75, p->one_step_ms.median, p->weight_gbps, p->sync_steps,
                p->waiting, p->step_ms_all_early, p->step_ms_sync,
                p->identical ? "true" : "false", c + 1 < n_cfg ? "," : "");
    }
    fputs("  ]\n}\n", j);
    fclose(j);
    fprintf(stderr, "free-bench: wrote %s\n", o->json);
    rc = 0;
    for (int c = 0; c < n_cfg; c++)
        if (o->check && !res[c].identical) {
            fprintf(stderr, "free-bench: check failed: %s: stream 0 of %d differs from the "
                            "lone stream\n", cfg[c].name, n);
            rc = 3;
        }
done:
    if (ctx)
        for (int k = 0; k < n * n_cfg; k++)
            free_ctx_destroy(ctx[k]);
    if (runs)
        for (int k = 0; k < reps * n_cfg * 2; k++) {
            free(runs[k].step_ms);
            free(runs[k].tok0);
            free(runs[k].early);
        }
    free(ctx);
    free(runs);
    free(res);
    free(x);
    return rc;
}
