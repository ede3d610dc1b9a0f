/* The readable table on stdout and the JSON file. */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation between order statistics (numpy's default). */
static double quantile(const double *sorted, int n, double q)
{
    double pos = q * (n - 1);
    int i = (int)floor(pos);
    if (i >= n - 1)
        return sorted[n - 1];
    return sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]);
}

fb_summary fb_summarize(const double *x, int n)
{
    fb_summary s = {0};
    s.n = n;
    if (n <= 0)
        return s;
    double *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return s;
    memcpy(v, x, (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    s.mean = sum / n;
    s.min = v[0];
    s.max = v[n - 1];
    s.median = quantile(v, n, 0.5);
    s.p25 = quantile(v, n, 0.25);
    s.p75 = quantile(v, n, 0.75);
    free(v);
    return s;
}

void fb_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static double mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static double frac(double a, double b)
{
    return b > 0 ? a / b : 0.0;
}

void fb_print_table(FILE *f, const fb_report *r)
{
    const fb_probe *p = &r->probe;
    fprintf(f, "free-bench (libfree %s): %s\n  model file: %s\n", r->libfree_version,
            r->model_desc, r->model_path);
    fprintf(f, "  machine: %s, %ld cores, last-level cache %.0f MiB; load average %.2f at "
               "start, %.2f at end\n", r->cpu, r->cores, mib(r->llc_bytes), r->load_start,
            r->load_end);
    if (p->ok)
        fprintf(f, "  bandwidth probe: stream %.0f MiB: %.1f GB/s (1 thread), %.1f GB/s (%d); "
                   "model-sized %.0f MiB, re-read: %.1f GB/s (1), %.1f GB/s (%d)\n",
                mib(p->stream_bytes), p->stream_gbps_1, p->stream_gbps_t, p->threads,
                mib(p->model_bytes), p->model_gbps_1, p->model_gbps_t, p->threads);
    else
        fprintf(f, "  bandwidth probe: not run\n");
    fprintf(f, "  weight type: %s; predicted weight bytes per token at full depth %.2f MB\n",
            r->weight_type, (double)(r->shallow_bytes + r->deep_bytes + r->head_bytes) / 1e6);
    fprintf(f, "  weights read: shallow layers [0,%d) %.2f MiB, deep layers [%d,%d) %.2f MiB, "
               "LM head %.2f MiB\n", r->exit_layer, mib(r->shallow_bytes), r->exit_layer,
            r->n_layers, mib(r->deep_bytes), mib(r->head_bytes));
    fprintf(f, "  runs: %d prompts x %d tokens x %d reps, %d threads, order rep > prompt > "
               "config, %d warm-up generation(s) per config; %.1f s\n\n", r->n_prompts,
            r->n_tokens, r->reps, r->threads, r->warmup, r->wall_s);

    fprintf(f, "%-14s %18s %6s %8s %6s %6s %6s %6s %6s %6s %5s %5s %7s %7s %6s %7s\n",
            "config", "decode tok/s (IQR)", "x NONE", "prefill", "exit%", "rows/", "layers",
            "read/", "MB/tok", "GB/s", "%strm", "%mod", "agree", "ROUGE-L", "NLL",
            "peak MB");
    fprintf(f, "%-14s %18s %6s %8s %6s %6s %6s %6s %6s %6s %5s %5s %7s %7s %6s %7s\n", "",
            "median (p25-p75)", "median", "tok/s", "", "sync", "/tok", "tok", "", "", "", "",
            "", "mean", "nats", "VmHWM");
    for (int i = 0; i < r->n_results; i++) {
        const fb_result *x = &r->results[i];
        char tps[40];
        snprintf(tps, sizeof tps, "%.1f (%.1f-%.1f)", x->decode_tps.median, x->decode_tps.p25,
                 x->decode_tps.p75);
        fprintf(f, "%-14s %18s %6.2f %8.0f %6.1f %6.2f %6.2f %6.2f %6.2f %6.2f %5.0f %5.0f "
                   "%7.4f %7.4f %6.3f %7.0f\n",
                x->name, tps, x->speedup.median, x->prefill_tps.median, 100.0 * x->exit_rate,
                x->mean_sync_rows, x->avg_layers, x->layers_read, x->bytes_per_token / 1e6,
                x->achieved_gbps, 100.0 * frac(x->achieved_gbps, p->stream_gbps_t),
                100.0 * frac(x->achieved_gbps, p->model_gbps_t), x->agreement,
                x->rouge_l.mean, x->nll, x->hwm_kb.max / 1024.0);
    }
    fputs("\n", f);
    for (int i = 0; i < r->n_results; i++) {
        const fb_result *x = &r->results[i];
        if (x->kind == FB_ADAPTIVE)
            fprintf(f, "  %s: the estimator is kept across prompts and reps (that is the "
                       "point); threshold %.3f at the end (%.3f-%.3f over runs), %d fits\n",
                    x->name, x->threshold_final, x->threshold_end.min, x->threshold_end.max,
                    x->bmm_fits);
        if (x->kind != FB_NONE)
            fprintf(f, "  %s: %d/%d runs identical to NONE; agreement checked on %llu tokens "
                       "(%llu handed out)%s\n", x->name, x->identical_runs, x->runs,
                    (unsigned long long)x->agreement_checked, (unsigned long long)x->tokens,
                    x->kind == FB_VERIFY ? " (1 by construction with greedy decoding)" : "");
        if (x->exit_auto)
            fprintf(f, "  %s: guard (%s): %llu windows judged, %llu fallbacks, %llu probes, "
                       "%llu of %llu tokens at full depth; at the end: full-depth step %.3f "
                       "ms, shallow pass %.3f ms, deep pass %.3f ms (%.2f rows), VERIFY %.3f "
                       "ms/token predicted, speed-up %.3f\n",
                    x->name, x->guard_timed ? "measured times" : "byte model",
                    (unsigned long long)x->guard_windows,
                    (unsigned long long)x->guard_fallbacks, (unsigned long long)x->guard_probes,
                    (unsigned long long)x->guard_full_tokens, (unsigned long long)x->tokens,
                    x->guard_full_ms, x->guard_shallow_ms, x->guard_deep_ms, x->guard_deep_rows,
                    x->guard_token_ms, x->guard_speedup);
    }
    fprintf(f, "  decode tok/s = produced tokens / decode time (the first token comes from the "
               "prefill logits); x NONE = median of per-run ratios to NONE on the same prompt "
               "and rep.\n"
               "  agree = produced tokens equal to the full model's greedy choice after the "
               "same prefix, as checked by the synchronizing pass; FREE tokens still queued at "
               "the end of a generation are not checked.\n"
               "  ROUGE-L = LCS F-measure on token ids against NONE's text for the same "
               "prompt. NLL = mean -log p of the generated tokens under the full model.\n"
               "  read/tok = layer weights read per token (shallow passes Ls, deep passes "
               "L-Ls); MB/tok adds the LM head once per shallow pass and once per deep pass; "
               "GB/s = MB/tok x median tok/s,\n"
               "  %%strm / %%mod = that as a share of the probe at %d threads (stream: beyond "
               "the LLC; mod: a model-sized buffer re-read from cache)%s. MB = 1e6 bytes; "
               "K/V-cache reads are not counted.\n"
               "  peak MB = VmHWM of the whole process (model mapping and every context) "
               "%s; ru_maxrss %.1f MB, VmHWM %.1f MB at the end.\n",
            p->threads, p->ok ? "" : " (probe not run: 0)",
            r->hwm_per_run ? "during the config's runs (reset before each run)"
                           : "(could not be reset per run: whole process so far)",
            r->maxrss_kb / 1024.0, r->hwm_kb / 1024.0);
}

static void json_summary(FILE *f, const char *key, const fb_summary *s, int last)
{
    fprintf(f, "      \"%s\": {\"median\": %.6g, \"p25\": %.6g, \"p75\": %.6g, \"min\": %.6g, "
               "\"max\": %.6g, \"mean\": %.6g, \"n\": %d}%s\n", key, s->median, s->p25, s->p75,
            s->min, s->max, s->mean, s->n, last ? "" : ",");
}

static const char *kind_name(fb_kind k)
{
    return k == FB_FREE ? "free" : k == FB_ADAPTIVE ? "adaptive" : k == FB_VERIFY ? "verify"
                                                                                  : "none";
}

static void json_result(FILE *f, const fb_report *r, const fb_result *x, int last)
{
    const fb_probe *p = &r->probe;
    fputs("    {\n      \"name\": ", f);
    fb_json_string(f, x->name);
    fprintf(f, ",\n      \"mode\": \"%s\", \"threshold\": %.6g, \"threshold_final\": %.6g, "
               "\"zeta\": %.6g, \"runs\": %d,\n",
            kind_name(x->kind), x->threshold, x->threshold_final, x->zeta, x->runs);
    json_summary(f, "decode_tokens_per_s", &x->decode_tps, 0);
    json_summary(f, "prefill_tokens_per_s", &x->prefill_tps, 0);
    json_summary(f, "speedup", &x->speedup, 0);
    json_summary(f, "rouge_l", &x->rouge_l, 0);
    json_summary(f, "threshold_end", &x->threshold_end, 0);
    json_summary(f, "peak_rss_kb", &x->hwm_kb, 0);
    fprintf(f, "      \"tokens\": %llu, \"prompt_tokens\": %llu, \"shallow_exits\": %llu, "
               "\"shallow_passes\": %llu, \"deep_passes\": %llu, \"sync_rows\": %llu,\n"
               "      \"drafts_rejected\": %llu, \"agreement_checked\": %llu, "
               "\"agreement_matched\": %llu, \"nll_tokens\": %llu, \"identical_runs\": %d, "
               "\"bmm_fits\": %d,\n",
            (unsigned long long)x->tokens, (unsigned long long)x->prompt_tokens,
            (unsigned long long)x->shallow_exits, (unsigned long long)x->shallow_passes,
            (unsigned long long)x->deep_passes, (unsigned long long)x->sync_rows,
            (unsigned long long)x->drafts_rejected, (unsigned long long)x->agreement_checked,
            (unsigned long long)x->agreement_matched, (unsigned long long)x->nll_tokens,
            x->identical_runs, x->bmm_fits);
    fprintf(f, "      \"exit_rate\": %.6g, \"mean_sync_rows\": %.6g, "
               "\"avg_layers_per_token\": %.6g, \"layers_read_per_token\": %.6g,\n"
               "      \"heads_per_token\": %.6g, \"weight_bytes_per_token\": %.6g, "
               "\"achieved_gbps\": %.6g, \"fraction_of_stream_probe\": %.6g, "
               "\"fraction_of_model_probe\": %.6g,\n"
               "      \"token_agreement\": %.6g, \"nll_nats\": %.6g, \"perplexity\": %.6g,\n"
               "      \"guard\": {\"exit_auto\": %s, \"timed\": %s, \"windows\": %llu, "
               "\"fallbacks\": %llu, \"probes\": %llu, \"full_tokens\": %llu, "
               "\"speedup\": %.6g, \"token_ms\": %.6g, \"full_ms\": %.6g, "
               "\"shallow_ms\": %.6g, \"deep_ms\": %.6g, \"deep_rows\": %.6g},\n"
               "      \"ms\": {\"decode\": %.3f, \"shallow\": %.3f, \"deep\": %.3f, "
               "\"head\": %.3f}\n    }%s\n",
            x->exit_rate, x->mean_sync_rows, x->avg_layers, x->layers_read, x->heads_per_token,
            x->bytes_per_token, x->achieved_gbps, frac(x->achieved_gbps, p->stream_gbps_t),
            frac(x->achieved_gbps, p->model_gbps_t), x->agreement, x->nll, exp(x->nll),
            x->exit_auto ? "true" : "false", x->guard_timed ? "true" : "false",
            (unsigned long long)x->guard_windows, (unsigned long long)x->guard_fallbacks,
            (unsigned long long)x->guard_probes, (unsigned long long)x->guard_full_tokens,
            x->guard_speedup, x->guard_token_ms, x->guard_full_ms, x->guard_shallow_ms,
            x->guard_deep_ms, x->guard_deep_rows, x->decode_ms, x->shallow_ms, x->deep_ms, x->head_ms, last ? "" : ",");
}

int fb_write_json(const char *path, const fb_report *r)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const fb_probe *p = &r->probe;
    fputs("{\n  \"tool\": \"free-bench\",\n  \"libfree_version\": ", f);
    fb_json_string(f, r->libfree_version);
    fputs(",\n  \"machine\": {\n    \"cpu\": ", f);
    fb_json_string(f, r->cpu);
    fprintf(f, ", \"cores\": %ld, \"llc_bytes\": %zu, \"loadavg_start\": %.2f, "
               "\"loadavg_end\": %.2f,\n", r->cores, r->llc_bytes, r->load_start, r->load_end);
    fprintf(f, "    \"probe\": {\"ok\": %s, \"threads\": %d, \"stream_bytes\": %zu, "
               "\"stream_gbps_1\": %.4g, \"stream_gbps_t\": %.4g, \"model_bytes\": %zu, "
               "\"model_gbps_1\": %.4g, \"model_gbps_t\": %.4g}\n  },\n",
            p->ok ? "true" : "false", p->threads, p->stream_bytes, p->stream_gbps_1,
            p->stream_gbps_t, p->model_bytes, p->model_gbps_1, p->model_gbps_t);
    fputs("  \"model\": {\n    \"path\": ", f);
    fb_json_string(f, r->model_path);
    fputs(", \"description\": ", f);
    fb_json_string(f, r->model_desc);
    fputs(", \"weight_type\": ", f);
    fb_json_string(f, r->weight_type);
    fprintf(f, ", \"full_depth_bytes_per_token\": %llu",
            (unsigned long long)(r->shallow_bytes + r->deep_bytes + r->head_bytes));
    fprintf(f, ",\n    \"n_layers\": %d, \"exit_layer\": %d, \"n_vocab\": %d, \"n_params\": %llu, "
               "\"shallow_bytes\": %llu, \"deep_bytes\": %llu, \"head_bytes\": %llu\n  },\n",
            r->n_layers, r->exit_layer, r->n_vocab, (unsigned long long)r->n_params,
            (unsigned long long)r->shallow_bytes, (unsigned long long)r->deep_bytes,
            (unsigned long long)r->head_bytes);
    fputs("  \"settings\": {\n    \"prompts_file\": ", f);
    fb_json_string(f, r->prompts_path);
    fprintf(f, ", \"prompts\": %d, \"tokens\": %d, \"threads\": %d, \"reps\": %d, "
               "\"warmup\": %d,\n    \"order\": \"rep > prompt > config\", \"rouge_unit\": "
               "\"token ids\", \"sampling\": \"greedy\"\n  },\n",
            r->n_prompts, r->n_tokens, r->threads, r->reps, r->warmup);
    fprintf(f, "  \"wall_s\": %.3f, \"ru_maxrss_kb\": %ld, \"vm_hwm_kb\": %ld, "
               "\"peak_rss_per_run\": %s,\n  \"configs\": [\n", r->wall_s, r->maxrss_kb,
            r->hwm_kb, r->hwm_per_run ? "true" : "false");
    for (int i = 0; i < r->n_results; i++)
        json_result(f, r, &r->results[i], i == r->n_results - 1);
    fputs("  ]\n}\n", f);
    return fclose(f) == 0 ? 0 : -1;
}
