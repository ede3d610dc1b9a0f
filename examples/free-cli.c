/* free-cli: stream a completion from a GGUF model with libfree, optionally with FREE
 * early exit, and report statistics. Uses only the public API. */
#include <free/free.h>

#include "cli-chat.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Input size caps: a prompt file (the largest context is 2^20 tokens, a few MB of text),
 * the --calibrate prompts, and a calibration text (a few hundred bytes when valid). */
#define PROMPT_FILE_MAX (16u << 20)
#define CALIBRATION_MAX (64u << 10)

typedef struct cli {
    const char *model, *prompt, *prompt_file, *calibrate, *calibration_in, *calibration_out;
    const char *chat_template, *system; /* --chat-template, -sys */
    int n_predict, chat;
    int stats, exit_map, color, check_tensors;
    int exit_given; /* --exit was on the command line */
    int seed_given, threshold_given;
    int min_agreement_given;
    int tokenize, add_special, parse_special; /* --tokenize and its options */
    const char *stops[64];                    /* --stop, in order */
    int n_stops;
    free_ctx_params p;
} cli;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: free-cli -m MODEL [options]\n"
        "  -m, --model FILE      GGUF model (llama, qwen2 or phi3; any weight type libfree reads)\n"
        "  --check-tensors       scan every weight for NaN/Inf when loading\n"
        "  -p, --prompt TEXT     prompt (default: empty, start from BOS)\n"
        "  -f, --file FILE       read the prompt from FILE (- = standard input)\n"
        "  -n, --n-predict N     tokens to generate (default 128; -1 = until EOS or full)\n"
        "  -c, --ctx-size N      context size (default: the model's)\n"
        "  -t, --threads N       compute threads (default and 0: all cores, at most 8)\n"
        "  --temp T              temperature (default 0 = greedy)\n"
        "  --top-k K             top-k sampling (default 0 = off)\n"
        "  --top-p P             top-p sampling (default 1 = off)\n"
        "  --seed S              RNG seed (default: random, printed by --stats)\n"
        "  --min-p P             drop tokens below P x the top token's probability\n"
        "                        (default 0 = off)\n"
        "  --repeat-penalty F    penalize the last --repeat-last-n tokens (default 1 = off)\n"
        "  --repeat-last-n N     tokens the penalties look at (default 64; 0 = off,\n"
        "                        -1 = the whole context)\n"
        "  --frequency-penalty F minus F per occurrence in that window (default 0)\n"
        "  --presence-penalty F  minus F once for a token in that window (default 0)\n"
        "  --stop STR            stop before STR is printed (repeatable, at most 64)\n"
        "  --context-shift       when the context is full, drop half of it (after --keep)\n"
        "                        and go on, as llama-cli does\n"
        "  --keep N              tokens a context shift keeps at the start (default 0;\n"
        "                        the BOS is always kept)\n"
        "  --exit MODE           none | free | verify | auto (default auto: verify at the\n"
        "                        calibrated threshold for a model with a trained exit,\n"
        "                        with a guard that falls back to full depth when drafting\n"
        "                        does not pay; none without one)\n"
        "  --threshold X         confidence threshold (default 0.9); selects --exit free\n"
        "                        unless --exit is given\n"
        "  --agreement-stats     free: run the final head on every synchronized row so\n"
        "                        that --stats' token_agreement covers early exits\n"
        "  --min-agreement A     free/verify: the lowest calibrated threshold whose token\n"
        "                        agreement is >= A (95%% lower bound); --exit free without\n"
        "                        --threshold uses 0.99\n"
        "  --exit-layer N        exit after N layers (default: the file's, else L/4)\n"
        "  --max-queue K         early-exit queue bound (default: the context)\n"
        "  --adaptive            learn the threshold (Beta mixture)\n"
        "  --zeta Z              posterior level of the adaptive rule (default 0.4)\n"
        "  --bmm-rule R          grid | continuous (default grid)\n"
        "  --calibration FILE    a calibration curve (GGUF, written by free-calibrate -o)\n"
        "                        for --min-agreement and the default mode, or a text\n"
        "                        written by --calibrate to start the adaptive estimator\n"
        "  --calibrate PROMPTS   run each line of PROMPTS adaptively, print the threshold,\n"
        "                        write the calibration (see --calibration-out)\n"
        "  --calibration-out F   where --calibrate writes (default free-calibration.txt)\n"
        "  --exit-map            mark early-exited tokens (colour on a terminal, else [..])\n"
        "  --stats               print a JSON statistics line on stderr\n"
        "  --chat                interactive chat: one user message per stdin line, answers\n"
        "                        streamed, KV cache kept between turns, Ctrl-D ends\n"
        "  -sys, --system TEXT   --chat: a system message first\n"
        "  --chat-template NAME  --chat: the format (chatml, llama3, ...) instead of the\n"
        "                        model's tokenizer.chat_template\n"
        "  --tokenize            print the prompt's token ids (no BOS/EOS, no special\n"
        "                        tokens parsed) on one line and exit; loads the\n"
        "                        vocabulary only\n"
        "  --add-special         with --tokenize: add BOS/EOS as the vocabulary says\n"
        "  --parse-special       with --tokenize: control tokens in the text are tokens\n"
        "  --version             print the library version\n");
}

static int fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "free-cli: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

/* An integer in decimal digits with an optional sign: "2.5", "0x10", "1e3", " 7" and "" are
 * not. Returns NULL, or what is wrong with s. */
static const char *parse_int(const char *s, long long lo, long long hi, long long *out)
{
    const char *d = s + (*s == '-' || *s == '+');
    if (!*d || strspn(d, "0123456789") != strlen(d))
        return "not an integer";
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE || v < lo || v > hi)
        return "out of range";
    *out = v;
    return NULL;
}

/* A finite decimal number ("0.5", "1e-3", "-1"); hexadecimal, inf and nan are not. */
static const char *parse_real(const char *s, double *out)
{
    if (!*s || strspn(s, "0123456789+-.eE") != strlen(s))
        return "not a decimal number";
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end)
        return "not a decimal number";
    if (!isfinite(v))
        return "out of range";
    *out = v;
    return NULL;
}

/* Reads a whole regular file (or a pipe) of at most max bytes, NUL-terminated, into *out
 * (its length in *len). Returns NULL, or a message saying why not. */
static const char *read_file(const char *path, size_t max, char **out, size_t *len)
{
    static char msg[128];
    *out = NULL;
    const bool is_stdin = !strcmp(path, "-"); /* -f - */
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return strerror(errno);
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return "it is a directory";
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t k;
    const char *why = NULL;
    while (buf && (k = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (n > max) {
            snprintf(msg, sizeof msg, "it is larger than the limit of %zu bytes", max);
            why = msg;
            break;
        }
        if (cap - n - 1 == 0) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    if (!why && !buf)
        why = "out of memory";
    if (!why && ferror(f))
        why = strerror(errno ? errno : EIO);
    if (!is_stdin)
        fclose(f);
    if (why) {
        free(buf);
        return why;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return NULL;
}

/* A text file: read_file, and no NUL byte (it would end the text early). */
static int read_text(const char *what, const char *path, size_t max, char **out)
{
    size_t len = 0;
    const char *why = read_file(path, max, out, &len);
    if (why) {
        fprintf(stderr, "free-cli: cannot read %s %s: %s\n", what, path, why);
        return -1;
    }
    const char *nul = memchr(*out, '\0', len);
    if (nul) {
        fprintf(stderr, "free-cli: %s %s has a NUL byte at offset %zu: not a text file\n",
                what, path, (size_t)(nul - *out));
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* Whether path begins with the GGUF magic (a calibration curve file, not an estimator
 * text). */
static bool is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    bool yes = f && fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
    if (f)
        fclose(f);
    return yes;
}

/* Options that take a number: name, min, max, where to store it. */
static int parse_args(int argc, char **argv, cli *c)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        long long k;
        const char *why;
#define NEEDS_VALUE()                                                                     \
    do {                                                                                  \
        if (!v)                                                                           \
            return fail("option %s needs a value%s", a, "");                              \
        i++;                                                                              \
    } while (0)
        /* An integer option: syntax, then the range (the library's own bound where it has
         * one), said in the message. */
#define INT(lo, hi, range)                                                                \
    do {                                                                                  \
        NEEDS_VALUE();                                                                    \
        if ((why = parse_int(v, lo, hi, &k)) != NULL) {                                   \
            fprintf(stderr, "free-cli: %s '%s': %s (%s must be %s)\n", a, v, why, a, range); \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)
        /* A real option: syntax, then a condition on x (the library's reason). */
#define REAL(cond, range)                                                                 \
    do {                                                                                  \
        NEEDS_VALUE();                                                                    \
        if ((why = parse_real(v, &x)) != NULL) {                                          \
            fprintf(stderr, "free-cli: %s '%s': %s\n", a, v, why);                        \
            return 1;                                                                     \
        }                                                                                 \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "free-cli: %s '%s': %s must be %s\n", a, v, a, range);         \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--version")) {
            printf("libfree %s\n", free_version_string());
            exit(0);
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            NEEDS_VALUE(); c->model = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            NEEDS_VALUE(); c->prompt = v;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            NEEDS_VALUE(); c->prompt_file = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            INT(-1, 1 << 24, "in [-1, 16777216]"); c->n_predict = (int)k;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            INT(0, 1 << 20, "in [0, 1048576]"); c->p.n_ctx = (int32_t)k;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            INT(0, 256, "in [0, 256] (0: all cores)"); c->p.n_threads = (int32_t)k;
        } else if (!strcmp(a, "--temp")) {
            REAL(x >= 0 && x <= 100, "in [0, 100]"); c->p.temperature = (float)x;
        } else if (!strcmp(a, "--top-k")) {
            INT(0, 1 << 24, "in [0, 16777216]"); c->p.top_k = (int32_t)k;
        } else if (!strcmp(a, "--top-p")) {
            REAL(x > 0 && x <= 1 && (float)x > 0, "in (0, 1]"); c->p.top_p = (float)x;
        } else if (!strcmp(a, "--seed")) {
            NEEDS_VALUE();
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (!*v || strspn(v, "0123456789") != strlen(v) || errno == ERANGE) {
                fprintf(stderr, "free-cli: --seed '%s': not an integer in [0, 2^64)\n", v);
                return 1;
            }
            c->p.seed = (uint64_t)s;
            c->seed_given = 1;
        } else if (!strcmp(a, "--check-tensors")) {
            c->check_tensors = 1;
        } else if (!strcmp(a, "--min-p")) {
            REAL(x >= 0 && x <= 1, "in [0, 1]"); c->p.min_p = (float)x;
        } else if (!strcmp(a, "--repeat-penalty")) {
            REAL(x > 0 && x <= 1e9, "in (0, 1e9]"); c->p.repeat_penalty = (float)x;
        } else if (!strcmp(a, "--repeat-last-n")) {
            INT(-1, 1 << 24, "in [-1, 16777216]"); c->p.repeat_last_n = (int32_t)k;
        } else if (!strcmp(a, "--frequency-penalty")) {
            REAL(x >= -1e9 && x <= 1e9, "in [-1e9, 1e9]"); c->p.frequency_penalty = (float)x;
        } else if (!strcmp(a, "--presence-penalty")) {
            REAL(x >= -1e9 && x <= 1e9, "in [-1e9, 1e9]"); c->p.presence_penalty = (float)x;
        } else if (!strcmp(a, "--context-shift")) {
            c->p.context_shift = 1;
        } else if (!strcmp(a, "--keep")) {
            INT(0, 1 << 20, "in [0, 1048576]"); c->p.n_keep = (int32_t)k;
        } else if (!strcmp(a, "--stop")) {
            NEEDS_VALUE();
            if (c->n_stops == (int)(sizeof c->stops / sizeof c->stops[0]))
                return fail("too many --stop strings (at most 64)%s%s", "", "");
            if (!*v)
                return fail("--stop needs a non-empty string%s%s", "", "");
            c->stops[c->n_stops++] = v;
        } else if (!strcmp(a, "--exit")) {
            NEEDS_VALUE();
            c->exit_given = 1;
            if (!strcmp(v, "none")) c->p.exit_mode = FREE_EXIT_NONE;
            else if (!strcmp(v, "free")) c->p.exit_mode = FREE_EXIT_FREE;
            else if (!strcmp(v, "verify")) c->p.exit_mode = FREE_EXIT_VERIFY;
            else if (!strcmp(v, "auto")) c->p.exit_mode = FREE_EXIT_AUTO;
            else return fail("invalid --exit '%s' (none, free, verify or auto)%s", v, "");
        } else if (!strcmp(a, "--threshold")) {
            REAL(x >= -1e9 && x <= 1e9, "in [-1e9, 1e9]"); c->p.threshold = (float)x;
            c->threshold_given = 1;
        } else if (!strcmp(a, "--agreement-stats")) {
            c->p.agreement_stats = 1;
        } else if (!strcmp(a, "--min-agreement")) {
            REAL(x > 0 && x <= 1, "in (0, 1]"); c->p.min_agreement = (float)x;
            c->min_agreement_given = 1;
        } else if (!strcmp(a, "--exit-layer")) {
            INT(1, 1 << 16, "in [1, 65536] (and below the model's layers)");
            c->p.exit_layer = (int32_t)k;
        } else if (!strcmp(a, "--max-queue")) {
            INT(0, 1 << 24, "in [0, 16777216]"); c->p.max_queue = (int32_t)k;
        } else if (!strcmp(a, "--adaptive")) {
            c->p.adaptive = 1;
        } else if (!strcmp(a, "--zeta")) {
            REAL(x > 0 && x < 1 && (float)x > 0 && (float)x < 1, "in (0, 1)");
            c->p.zeta = (float)x;
        } else if (!strcmp(a, "--bmm-rule")) {
            NEEDS_VALUE();
            if (!strcmp(v, "grid")) c->p.bmm_rule = FREE_BMM_RULE_GRID;
            else if (!strcmp(v, "continuous")) c->p.bmm_rule = FREE_BMM_RULE_CONTINUOUS;
            else return fail("invalid --bmm-rule '%s' (grid or continuous)%s", v, "");
        } else if (!strcmp(a, "--calibration")) {
            NEEDS_VALUE(); c->calibration_in = v;
        } else if (!strcmp(a, "--calibrate")) {
            NEEDS_VALUE(); c->calibrate = v;
        } else if (!strcmp(a, "--calibration-out")) {
            NEEDS_VALUE(); c->calibration_out = v;
        } else if (!strcmp(a, "--exit-map")) {
            c->exit_map = 1;
        } else if (!strcmp(a, "--stats")) {
            c->stats = 1;
        } else if (!strcmp(a, "--chat")) {
            c->chat = 1;
        } else if (!strcmp(a, "-sys") || !strcmp(a, "--system")) {
            NEEDS_VALUE(); c->system = v;
        } else if (!strcmp(a, "--chat-template")) {
            NEEDS_VALUE(); c->chat_template = v;
        } else if (!strcmp(a, "--tokenize")) {
            c->tokenize = 1;
        } else if (!strcmp(a, "--add-special")) {
            c->add_special = 1;
        } else if (!strcmp(a, "--parse-special")) {
            c->parse_special = 1;
        } else {
            return fail("unknown option '%s' (try --help)%s", a, "");
        }
#undef REAL
#undef INT
#undef NEEDS_VALUE
    }
    if (!c->model)
        return fail("no model given: use -m MODEL.gguf%s%s", "", "");
    c->p.stop = c->stops;
    c->p.n_stop = c->n_stops;
    if (c->prompt && c->prompt_file)
        return fail("-p and -f both give the prompt: use one of them%s%s", "", "");
    /* Options of early exit select --exit free when no --exit is given; with --exit none
     * they are a contradiction (the Python binding and the examples follow the same
     * rule). */
    if (c->exit_given && c->p.exit_mode == FREE_EXIT_NONE &&
        (c->threshold_given || c->exit_map))
        return fail("--exit none contradicts %s (it applies to early exit: --exit free or "
                    "verify)%s", c->threshold_given ? "--threshold" : "--exit-map", "");
    if (!c->exit_given && (c->threshold_given || c->exit_map))
        c->p.exit_mode = FREE_EXIT_FREE;
    /* The adaptive threshold needs early exit: --exit none is a contradiction, not a
     * request to switch modes. */
    if (c->exit_given && c->p.exit_mode == FREE_EXIT_NONE &&
        (c->calibration_in || c->calibrate || c->p.adaptive))
        return fail("--exit none contradicts %s (the adaptive threshold needs --exit free "
                    "or verify)%s", c->calibration_in ? "--calibration"
                                    : c->calibrate   ? "--calibrate"
                                                     : "--adaptive", "");
    if (!c->chat && (c->system || c->chat_template))
        return fail("%s needs --chat%s", c->system ? "-sys" : "--chat-template", "");
    if (c->chat && (c->prompt || c->prompt_file || c->calibrate))
        return fail("--chat reads the conversation from stdin: drop %s%s",
                    c->calibrate ? "--calibrate" : "-p/-f", "");
    return 0;
}

/* --exit-map: early-exited text is green on a terminal, else in [brackets]. The marks
 * never enclose a line break, so lines stay whole. */
static void mark_early(const cli *c, const char *piece, size_t len)
{
    while (len > 0) {
        const char *nl = memchr(piece, '\n', len);
        size_t seg = nl ? (size_t)(nl - piece) : len;
        if (seg > 0) {
            fputs(c->color ? "\x1b[32m" : "[", stdout);
            fwrite(piece, 1, seg, stdout);
            fputs(c->color ? "\x1b[0m" : "]", stdout);
        }
        if (nl) {
            fputc('\n', stdout);
            seg++;
        }
        piece += seg;
        len -= seg;
    }
}

/* The threshold's trajectory for --stats: (token index, threshold) where it changed. */
#define TRAJECTORY_MAX 256
static struct { long tok; float thr; } trajectory[TRAJECTORY_MAX];
static int n_trajectory;
static long n_streamed;

static int on_token(void *user, int32_t token, const char *piece, size_t len,
                    const free_step_info *info)
{
    const cli *c = user;
    (void)token;
    if (n_trajectory < TRAJECTORY_MAX &&
        (n_trajectory == 0 || trajectory[n_trajectory - 1].thr != info->threshold)) {
        trajectory[n_trajectory].tok = n_streamed;
        trajectory[n_trajectory++].thr = info->threshold;
    }
    n_streamed++;
    if (c->exit_map && info->early_exit && len > 0)
        mark_early(c, piece, len);
    else
        fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* The legend of --exit-map, on stderr before the text. */
static void exit_map_legend(const cli *c, const free_ctx *ctx)
{
    free_stats s;
    s.size = sizeof s;
    if (free_ctx_stats(ctx, &s) != FREE_OK)
        return;
    fprintf(stderr, "exit map: %s = chosen by the exit head after %d of %d layers; plain text "
            "= the full model%s\n", c->color ? "\x1b[32mgreen\x1b[0m" : "[bracketed]",
            s.exit_layer, s.n_layers,
            s.exit_mode == FREE_EXIT_VERIFY ? " (verify: drafts the deep pass confirmed)" : "");
}

static const char *mode_name(int32_t m)
{
    return m == FREE_EXIT_FREE     ? "free"
           : m == FREE_EXIT_VERIFY ? "verify"
           : m == FREE_EXIT_AUTO   ? "auto"
                                   : "none";
}

static const char *finish_name(int32_t f)
{
    static const char *const names[] = {"none", "eos", "length", "stop", "callback"};
    return f >= 0 && f <= FREE_FINISH_CALLBACK ? names[f] : "none";
}

static void print_stats(const free_ctx *ctx)
{
    free_stats s;
    s.size = sizeof s;
    if (free_ctx_stats(ctx, &s) != FREE_OK)
        return;
    /* [[token index, threshold], ...] where the threshold in force changed. */
    char traj[TRAJECTORY_MAX * 32 + 8];
    size_t at = 0;
    traj[at++] = '[';
    for (int i = 0; i < n_trajectory; i++)
        at += (size_t)snprintf(traj + at, sizeof traj - at, "%s[%ld, %.6g]", i ? ", " : "",
                               trajectory[i].tok, (double)trajectory[i].thr);
    snprintf(traj + at, sizeof traj - at, "]");
    double agree = s.agreement_checked ? (double)s.agreement_matched / s.agreement_checked
                                       : 1.0;
    /* No threshold is in force at full depth. */
    char threshold[32] = "null";
    if (s.exit_mode != FREE_EXIT_NONE)
        snprintf(threshold, sizeof threshold, "%.6g", (double)s.threshold);
    free_ctx_params p;
    p.size = sizeof p;
    free_ctx_get_params(ctx, &p);
    fprintf(stderr,
            "{\"prompt_tokens\": %llu, \"tokens\": %llu, \"prefill_ms\": %.3f, "
            "\"decode_ms\": %.3f, \"tokens_per_s\": %.2f, \"prefill_tokens_per_s\": %.2f, "
            "\"threads\": %d, \"mode\": \"%s\", \"exit_layer\": %d, \"n_layers\": %d, "
            "\"threshold\": %s, \"seed\": %llu, \"shallow_exits\": %llu, \"exit_rate\": %.4f, "
            "\"deep_passes\": %llu, \"mean_sync_rows\": %.3f, \"drafts_rejected\": %llu, "
            "\"avg_layers_per_token\": %.3f, \"layers_read_per_token\": %.3f, "
            "\"token_agreement\": %.4f, \"agreement_checked\": %llu, "
            "\"shallow_ms\": %.3f, \"deep_ms\": %.3f, \"head_ms\": %.3f, "
            "\"adaptive\": %s, \"bmm_fits\": %d, \"bmm_frozen\": %s, "
            "\"bmm_samples_agree\": %llu, \"bmm_samples_disagree\": %llu, "
            "\"bmm_agree\": [%.6g, %.6g], \"bmm_disagree\": [%.6g, %.6g], "
            "\"exit_auto\": %s, \"verify_fallbacks\": %llu, \"verify_full_tokens\": %llu, "
            "\"verify_speedup\": %.4f, \"verify_full_depth\": %s, "
            "\"verify_timed\": %d, \"verify_windows\": %llu, \"verify_probes\": %llu, "
            "\"verify_token_ms\": %.4f, \"verify_full_ms\": %.4f, "
            "\"verify_shallow_ms\": %.4f, \"verify_deep_ms\": %.4f, "
            "\"verify_deep_rows\": %.3f, "
            "\"threshold_trajectory\": %s, \"finish\": \"%s\"}\n",
            (unsigned long long)s.prompt_tokens, (unsigned long long)s.tokens, s.prefill_ms,
            s.decode_ms, s.decode_ms > 0 ? s.tokens * 1e3 / s.decode_ms : 0.0,
            s.prefill_ms > 0 ? s.prompt_tokens * 1e3 / s.prefill_ms : 0.0, s.n_threads,
            mode_name(s.exit_mode), s.exit_layer, s.n_layers, threshold,
            (unsigned long long)p.seed,
            (unsigned long long)s.shallow_exits,
            s.tokens ? (double)s.shallow_exits / s.tokens : 0.0,
            (unsigned long long)s.deep_passes, s.mean_sync_rows,
            (unsigned long long)s.drafts_rejected, s.avg_layers_per_token,
            s.layers_read_per_token, agree, (unsigned long long)s.agreement_checked,
            s.shallow_ms, s.deep_ms, s.head_ms, s.adaptive ? "true" : "false", s.bmm_fits,
            s.bmm_frozen ? "true" : "false", (unsigned long long)s.bmm_samples_agree,
            (unsigned long long)s.bmm_samples_disagree, s.bmm_alpha_agree, s.bmm_beta_agree,
            s.bmm_alpha_disagree, s.bmm_beta_disagree, s.exit_auto ? "true" : "false",
            (unsigned long long)s.verify_fallbacks, (unsigned long long)s.verify_full_tokens,
            s.verify_speedup, s.verify_full_depth ? "true" : "false",
            s.verify_timed, (unsigned long long)s.verify_windows,
            (unsigned long long)s.verify_probes, s.verify_token_ms, s.verify_full_ms,
            s.verify_shallow_ms, s.verify_deep_ms, s.verify_deep_rows, traj, finish_name(free_ctx_finish_reason(ctx)));
}

/* --tokenize: the prompt's ids, decimal, separated by single spaces, on one line. */
static int tokenize_only(const cli *c)
{
    free_model_params mp;
    free_model_params_init(&mp, sizeof mp);
    mp.vocab_only = 1;
    free_model *model = NULL;
    free_status s = free_model_load(c->model, &mp, &model);
    if (s != FREE_OK) {
        fprintf(stderr, "free-cli: %s: %s\n", free_strerror(s), free_last_error());
        return 1;
    }
    const char *text = c->prompt ? c->prompt : "";
    uint32_t flags = (c->add_special ? FREE_TOKENIZE_ADD_SPECIAL : 0u) |
                     (c->parse_special ? FREE_TOKENIZE_PARSE_SPECIAL : 0u);
    size_t n = 0;
    int32_t *ids = NULL;
    s = free_tokenize_ex(model, text, -1, flags, NULL, 0, &n);
    if (s == FREE_ERR_BUFFER_TOO_SMALL) {
        ids = malloc((n ? n : 1) * sizeof *ids);
        s = ids ? free_tokenize_ex(model, text, -1, flags, ids, n, &n) : FREE_ERR_NOMEM;
    }
    int rc = 0;
    if (s != FREE_OK) {
        fprintf(stderr, "free-cli: %s: %s\n", free_strerror(s), free_last_error());
        rc = 1;
    } else {
        for (size_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", (int)ids[i]);
        putchar('\n');
    }
    free(ids);
    free_model_destroy(model);
    return rc;
}

static int ctx_error(free_ctx *ctx, free_status s)
{
    fprintf(stderr, "free-cli: %s: %s\n", free_strerror(s), free_ctx_last_error(ctx));
    return 1;
}

/* --calibrate: every line of the prompts file is one generation with the adaptive
 * threshold on; the learned state is printed and written out. */
static int calibrate(cli *c, free_ctx *ctx)
{
    char *text = NULL;
    if (read_text("prompts file", c->calibrate, PROMPT_FILE_MAX, &text))
        return 1;
    int n_prompts = 0;
    free_status s = FREE_OK;
    for (char *line = strtok(text, "\n"); line && s == FREE_OK; line = strtok(NULL, "\n")) {
        if (!*line)
            continue;
        free_ctx_reset(ctx);
        s = free_decode(ctx, line, -1, c->n_predict, NULL, NULL);
        free_stats st;
        st.size = sizeof st;
        free_ctx_stats(ctx, &st);
        fprintf(stderr, "prompt %d: threshold %.4f (fits %d, samples %llu agree / %llu "
                "disagree)\n", ++n_prompts, (double)st.threshold, st.bmm_fits,
                (unsigned long long)st.bmm_samples_agree,
                (unsigned long long)st.bmm_samples_disagree);
    }
    free(text);
    if (s != FREE_OK)
        return ctx_error(ctx, s);
    char buf[4096];
    size_t n;
    if ((s = free_ctx_export_calibration(ctx, buf, sizeof buf, &n)) != FREE_OK)
        return ctx_error(ctx, s);
    const char *out = c->calibration_out ? c->calibration_out : "free-calibration.txt";
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(buf, 1, n, f) != n || fclose(f) != 0)
        return fail("cannot write %s: %s", out, strerror(errno));
    free_stats st;
    st.size = sizeof st;
    free_ctx_stats(ctx, &st);
    printf("threshold %.6f after %d prompts (%d fits); calibration written to %s\n",
           (double)st.threshold, n_prompts, st.bmm_fits, out);
    return 0;
}

static uint64_t random_seed(void)
{
    uint64_t x = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&x, sizeof x, 1, f) != 1) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    if (f)
        fclose(f);
    return x;
}

int main(int argc, char **argv)
{
    cli c = {0};
    c.n_predict = 128;
    free_ctx_params_init(&c.p, sizeof c.p);
    if (parse_args(argc, argv, &c))
        return 1;
    if (!c.seed_given)
        c.p.seed = random_seed(); /* as llama-cli: a new text each run; --stats prints it */
    c.color = isatty(STDOUT_FILENO);
    free_log_set(NULL, NULL, FREE_LOG_WARN);

    char *prompt_buf = NULL, *calib_buf = NULL;
    if (c.prompt_file) {
        if (read_text("prompt file", c.prompt_file, PROMPT_FILE_MAX, &prompt_buf))
            return 1;
        c.prompt = prompt_buf;
    }
    if (c.tokenize) {
        int trc = tokenize_only(&c);
        free(prompt_buf);
        return trc;
    }
    if (c.calibration_in && is_gguf(c.calibration_in)) {
        /* A calibration curve (free-calibrate -o): the library reads it. */
        c.p.calibration_file = c.calibration_in;
    } else if (c.calibration_in) {
        if (read_text("calibration", c.calibration_in, CALIBRATION_MAX, &calib_buf)) {
            free(prompt_buf);
            return 1;
        }
        c.p.calibration = calib_buf;
        c.p.adaptive = 1;
    }
    if (c.calibrate)
        c.p.adaptive = 1;
    if (c.p.adaptive && c.p.exit_mode == FREE_EXIT_AUTO)
        c.p.exit_mode = FREE_EXIT_FREE;
    /* --min-agreement, like --threshold, selects --exit free unless --exit is given. */
    if (c.min_agreement_given && c.p.exit_mode == FREE_EXIT_AUTO)
        c.p.exit_mode = FREE_EXIT_FREE;
    /* Lossy FREE states its quality: a target agreement of 0.99 unless told otherwise
     * (dropped, with a note, for a model without a calibration curve). */
    const int implicit_agreement = c.p.exit_mode == FREE_EXIT_FREE && !c.threshold_given &&
                                   !c.min_agreement_given && !c.p.adaptive;
    if (implicit_agreement)
        c.p.min_agreement = 0.99f;

    free_model *model = NULL;
    free_ctx *ctx = NULL;
    int rc = 0;
    free_model_params mp;
    free_model_params_init(&mp, sizeof mp);
    mp.check_tensors = c.check_tensors;
    free_status s = free_model_load(c.model, &mp, &model);
    if (s != FREE_OK) {
        fprintf(stderr, "free-cli: %s: %s\n", free_strerror(s), free_last_error());
        rc = 1;
        goto done;
    }
    s = free_ctx_create(model, &c.p, &ctx);
    if (s == FREE_ERR_INVALID_ARG && implicit_agreement && strstr(free_last_error(), "free.calib")) {
        fprintf(stderr, "free-cli: the model has no calibration curve: --exit free at threshold "
                        "%g (give --threshold or --min-agreement to choose)\n",
                (double)c.p.threshold);
        c.p.min_agreement = 0.0f;
        s = free_ctx_create(model, &c.p, &ctx);
    }
    if (s != FREE_OK) {
        fprintf(stderr, "free-cli: %s: %s\n", free_strerror(s), free_last_error());
        rc = 1;
        goto done;
    }
    if (c.calibrate) {
        rc = calibrate(&c, ctx);
        goto done;
    }
    if (c.chat) {
        rc = cli_chat(model, ctx, c.chat_template, c.system, c.n_predict, on_token, &c);
        if (c.stats)
            print_stats(ctx);
        goto done;
    }
    if (c.exit_map)
        exit_map_legend(&c, ctx);
    const char *prompt = c.prompt ? c.prompt : "";
    fputs(prompt, stdout);
    fflush(stdout);
    s = free_decode(ctx, prompt, -1, c.n_predict, on_token, &c);
    fputc('\n', stdout);
    fflush(stdout);
    if (s == FREE_ERR_CONTEXT_FULL && free_ctx_n_past(ctx) >= free_ctx_n_ctx(ctx)) {
        /* Generating to the end of the context is a clean stop, not a failure. */
        fprintf(stderr, "free-cli: the context of %d tokens is full: stopped (-c N for a "
                "larger one, or --context-shift to go on)\n", free_ctx_n_ctx(ctx));
    } else if (s != FREE_OK) {
        rc = ctx_error(ctx, s);
    }
    if (c.stats)
        print_stats(ctx);
done:
    free_ctx_destroy(ctx);
    free_model_destroy(model);
    free(prompt_buf);
    free(calib_buf);
    return rc;
}
