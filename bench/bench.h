/* free-bench: what its files share. The benchmark is a program on the public API; the
 * fb_ prefix keeps its own symbols apart from the library's fr_ ones. */
#ifndef FREE_BENCH_H
#define FREE_BENCH_H

#include <free/free.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- rouge.c ------------------------------------------------------------------------ */

/* ROUGE-L F-measure (beta = 1) between two token sequences: 2 * LCS / (na + nb). 1 when
 * both are empty. Returns -1 when the scratch cannot be allocated. */
double fb_rouge_l(const int32_t *a, size_t na, const int32_t *b, size_t nb);

/* ---- probe.c: machine facts and the memory-bandwidth probe --------------------------- */

typedef struct fb_probe {
    int ok;                /* non-zero when the figures below were measured */
    int threads;           /* T of the *_t figures */
    size_t stream_bytes;   /* buffer well beyond the last-level cache */
    size_t model_bytes;    /* a buffer the size of the model's weights, read repeatedly */
    double stream_gbps_1, stream_gbps_t;
    double model_gbps_1, model_gbps_t;
} fb_probe;

/* Measures streaming-read bandwidth (best of several runs) with 1 and `threads` threads,
 * over stream_bytes and over model_bytes (0 skips that part). Runs in a child process so
 * that its buffers do not count in this process's peak resident memory. */
int fb_probe_run(size_t stream_bytes, size_t model_bytes, int threads, fb_probe *out);

/* Size of the last-level cache in bytes (0 when unknown). */
size_t fb_llc_bytes(void);
/* The CPU's model name into buf ("unknown" when not found). */
void fb_cpu_name(char *buf, size_t cap);
/* The 1-minute load average (negative when unknown). */
double fb_loadavg(void);
/* Peak and current resident memory of this process in KiB from /proc/self/status
 * (VmHWM, VmRSS), -1 when unavailable; getrusage's ru_maxrss in KiB. */
long fb_vm_hwm_kb(void);
long fb_vm_rss_kb(void);
long fb_maxrss_kb(void);
/* Resets VmHWM to the current RSS (Linux clear_refs "5"); returns 0 on success. */
int fb_reset_hwm(void);
/* Monotonic time in seconds. */
double fb_now(void);

/* ---- gguf-bytes.c ------------------------------------------------------------------- */


/* ---- svg.c -------------------------------------------------------------------------- */

typedef enum fb_kind { FB_NONE, FB_FREE, FB_ADAPTIVE, FB_VERIFY } fb_kind;

typedef struct fb_point {
    const char *label;
    fb_kind kind;
    double threshold; /* FREE/VERIFY: lambda; ADAPTIVE: the learned lambda at the end */
    double speedup;   /* decode tokens/s over NONE's */
    double rouge_l;
    double agreement;
} fb_point;

/* Writes two panels, ROUGE-L and token agreement against speed-up, to path. */
int fb_svg_write(const char *path, const char *title, const char *subtitle,
                 const fb_point *pts, int n);

/* ---- report.c ----------------------------------------------------------------------- */

/* Median, spread and extremes of a sample. */
typedef struct fb_summary {
    double median, p25, p75, min, max, mean;
    int n;
} fb_summary;

/* Summarizes x[n] (sorts a copy; n may be 0). */
fb_summary fb_summarize(const double *x, int n);

/* Writes s as a JSON string literal (quotes and escapes included). */
void fb_json_string(FILE *f, const char *s);

/* One configuration's figures over all its runs. Counters are totals over the runs;
 * rates are ratios of totals (so long runs weigh more than short ones). */
typedef struct fb_result {
    char name[40];
    fb_kind kind;
    double threshold;            /* the set threshold (adaptive: its start) */
    double zeta;                 /* adaptive only */
    int runs;
    fb_summary decode_tps;       /* tokens / decode_ms per run */
    fb_summary prefill_tps;      /* prompt tokens / prefill_ms per run */
    fb_summary speedup;          /* decode_tps over NONE's on the same prompt and rep */
    fb_summary rouge_l;          /* per run, against NONE's text for the prompt */
    fb_summary threshold_end;    /* threshold in force at the end of each run */
    double threshold_final;      /* ... at the end of the last run (adaptive: learned) */
    fb_summary hwm_kb;           /* process VmHWM during each run */
    uint64_t tokens, prompt_tokens, shallow_exits, shallow_passes, deep_passes, sync_rows;
    uint64_t drafts_rejected, agreement_checked, agreement_matched;
    uint64_t nll_tokens;         /* generated tokens scored (EOS is not generated text) */
    int identical_runs;          /* runs whose tokens equal NONE's exactly */
    int bmm_fits;
    double exit_rate, mean_sync_rows, avg_layers, layers_read;
    double heads_per_token;      /* LM-head weight reads per produced token */
    double bytes_per_token;      /* weight bytes read per produced token */
    double achieved_gbps;        /* bytes_per_token * median decode tokens/s */
    double agreement;            /* agreement_matched / agreement_checked */
    double nll;                  /* mean -log p(token) under the full model, nats */
    double shallow_ms, deep_ms, head_ms, decode_ms;
    /* The guard of an automatic VERIFY (free_stats.verify_*): totals over the runs, and
     * what it had measured at the end of the last run. */
    int exit_auto, guard_timed;
    uint64_t guard_windows, guard_fallbacks, guard_probes, guard_full_tokens;
    double guard_speedup, guard_token_ms, guard_full_ms, guard_shallow_ms, guard_deep_ms,
        guard_deep_rows;
} fb_result;

/* Everything the table and the JSON file say. */
typedef struct fb_report {
    /* machine */
    char cpu[128];
    long cores;
    size_t llc_bytes;
    double load_start, load_end;
    fb_probe probe;
    /* model */
    const char *model_path;
    const char *model_desc;
    const char *weight_type;     /* free_model_weight_type */
    int32_t n_layers, exit_layer, n_vocab;
    uint64_t n_params;
    uint64_t shallow_bytes, deep_bytes, head_bytes;
    /* settings */
    const char *prompts_path;
    int n_prompts, n_tokens, threads, reps, warmup;
    const char *libfree_version;
    double wall_s;
    long maxrss_kb, hwm_kb;
    int hwm_per_run;             /* non-zero when VmHWM could be reset before each run */
    /* results; results[0] is NONE */
    const fb_result *results;
    int n_results;
} fb_report;

void fb_print_table(FILE *f, const fb_report *r);
int fb_write_json(const char *path, const fb_report *r);

/* ---- options.c: the command line, the prompts file, the list of modes ------------------ */

enum { FB_MAX_PARALLEL = 8 }; /* counts in --parallel N1,N2,.. */

typedef struct fb_options {
    const char *model, *prompts, *json, *svg, *modes;
    const char *calibration; /* --calibration: the curve agree:A modes read */
    int n_tokens, threads, reps, max_prompts, warmup, exit_layer, check;
    int parallel;    /* --parallel N: N streams through free_batch_step (parallel.c) */
    int parallel_list[FB_MAX_PARALLEL], n_parallel; /* --parallel N1,N2,..: every count (parallel[0] =
                                         parallel) */
    double probe_mb; /* < 0: automatic */
} fb_options;

/* One configuration: an exit mode with its settings and its own context. */
typedef struct fb_config {
    char name[40];
    fb_kind kind;
    double threshold, zeta;
    double min_agreement; /* free@A: free_ctx_params.min_agreement */
    int auto_mode;        /* auto: FREE_EXIT_AUTO (reported as verify) */
    free_ctx *ctx;
} fb_config;

typedef struct fb_prompt {
    char *text;    /* unescaped */
    int32_t *tok;  /* with BOS, as free_decode tokenizes it */
    size_t n_tok;
} fb_prompt;

/* Fills o from argv (o holds the defaults). Prints what is wrong and returns -1. */
int fb_parse_args(int argc, char **argv, fb_options *o);
/* Reads the first max (0: all) non-empty lines of path, undoing \n, \t and \\. */
int fb_read_prompts(const char *path, int max, fb_prompt **out, int *n_out);
/* Parses "none,free:0.5,adaptive,verify:0.5"; NONE is always out[0]. */
int fb_parse_modes(const char *list, fb_config **out, int *n_out);

/* A context for c (free-bench.c). */
int fb_make_ctx(const free_model *m, const fb_options *o, fb_config *c);

/* ---- parallel.c: --parallel N ------------------------------------------------------------ */

/* Runs the configs with each count of o->parallel_list streams at once and alone; prints
 * the tables (and a sweep table for several counts) and writes o->json. Returns 0, 3 when --check finds a stream that differs from the lone one, -1 on
 * failure. */
int fb_parallel(const fb_options *o, const free_model *m, const fb_prompt *pr, int n_pr,
                fb_config *cfg, int n_cfg, const fb_report *rep);

#endif
