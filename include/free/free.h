/*
 * libfree — fast CPU decoding for LLaMA-style models with FREE early exit.
 *
 * A 15-line program that loads a model and streams a completion:
 *
 *     #include <free/free.h>
 *     #include <stdio.h>
 *
 *     static int on_token(void *user, int32_t token, const char *piece, size_t len,
 *                         const free_step_info *info) {
 *         (void)user; (void)token; (void)info;
 *         fwrite(piece, 1, len, stdout);
 *         return 0;                           // non-zero stops generation
 *     }
 *
 *     int main(void) {
 *         free_model *model; free_ctx *ctx;
 *         if (free_model_load("models/free-llama-22M.gguf", NULL, &model)) return 1;
 *         free_ctx_params p; free_ctx_params_init(&p, sizeof p);
 *         p.exit_mode = FREE_EXIT_FREE;        // early exit; FREE_EXIT_NONE = full depth
 *         if (free_ctx_create(model, &p, &ctx)) return 1;
 *         free_decode(ctx, "In the beginning", -1, 64, on_token, NULL);
 *         free_ctx_destroy(ctx); free_model_destroy(model);
 *     }
 *
 * Threading: a free_model is immutable after loading and may be shared by any number of
 * threads and contexts at once. A free_ctx is one decoding stream: use it from one thread
 * at a time. Logging settings are process-wide.
 *
 * Ownership: every *_create / *_load has exactly one *_destroy; destroying NULL does
 * nothing. A context must be destroyed before the model it was created from.
 *
 * Errors: every function that can fail returns a free_status (FREE_OK == 0, errors are
 * negative and pinned forever). The detailed message of the last failure is available from
 * free_ctx_last_error(ctx) for context calls and from free_last_error() (per thread) for
 * every call.
 *
 * ABI: params and result structs begin with a `size` field that the caller sets (the
 * *_init functions do it); fields are only ever appended, so a program built against an
 * older header keeps working with a newer library.
 */
#ifndef FREE_FREE_H
#define FREE_FREE_H

#include <stddef.h>
#include <stdint.h>

#include "free/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FREE_API __declspec(dllimport)
#elif defined(__GNUC__)
#define FREE_API __attribute__((visibility("default")))
#else
#define FREE_API
#endif

/* ---------------------------------------------------------------------------------- */
/* Status                                                                             */

/* Status values are pinned: a value, once released, never changes meaning. */
typedef enum free_status {
    FREE_OK = 0,
    FREE_ERR_INVALID_ARG = -1,      /* a NULL pointer, a bad size, an out-of-range value */
    FREE_ERR_NOMEM = -2,            /* an allocation failed */
    FREE_ERR_IO = -3,               /* the file could not be opened, read or mapped */
    FREE_ERR_FORMAT = -4,           /* the file is malformed, truncated or inconsistent */
    FREE_ERR_UNSUPPORTED = -5,      /* valid but not supported: version, type, architecture,
                                       or a params struct with unknown non-zero fields */
    FREE_ERR_MODEL = -6,            /* a tensor is missing or has the wrong shape */
    FREE_ERR_CONTEXT_FULL = -7,     /* the context has no room for more tokens */
    FREE_ERR_TOKEN = -8,            /* a token id outside the vocabulary */
    FREE_ERR_BUFFER_TOO_SMALL = -9, /* the output buffer is too small; the needed size is
                                       reported */
    FREE_ERR_STATE = -10,           /* the call is not valid in the context's state */
    FREE_ERR_ABORTED = -11,         /* the abort callback asked to stop */
    FREE_ERR_INTERNAL = -12,        /* a bug in libfree: please report it */
    FREE_ERR_NUMERIC = -13          /* NaN or infinity in the model's weights or in values
                                       computed from them (logits, exit confidence) */
} free_status;

/* A static, English description of a status ("invalid argument", ...). Never NULL. */
FREE_API const char *free_strerror(free_status status);

/* The message of the last failure of a libfree call on the calling thread ("tensor
 * blk.3.attn_q.weight: shape [288,300] does not match embedding_length 288"); "" when
 * none. Valid until the next failing call on this thread. */
FREE_API const char *free_last_error(void);

/* ---------------------------------------------------------------------------------- */
/* Version                                                                            */

/* "MAJOR.MINOR.PATCH", equal to FREE_VERSION_STRING of the header the library was built
 * with. */
FREE_API const char *free_version_string(void);
/* FREE_VERSION_NUMBER of the library: MAJOR * 10000 + MINOR * 100 + PATCH. */
FREE_API uint32_t free_version_number(void);

/* ---------------------------------------------------------------------------------- */
/* Logging                                                                            */

typedef enum free_log_level {
    FREE_LOG_ERROR = 0,
    FREE_LOG_WARN = 1,
    FREE_LOG_INFO = 2,
    FREE_LOG_DEBUG = 3
} free_log_level;

/* Receives one formatted, NUL-terminated message without a trailing newline. */
typedef void (*free_log_fn)(void *user, free_log_level level, const char *message);

/* Installs a process-wide log callback (NULL restores the default printer, which writes
 * to stderr) and the most verbose level delivered (default FREE_LOG_WARN). Failures are
 * returned to the caller and traced at FREE_LOG_DEBUG. Thread-safe. */
FREE_API void free_log_set(free_log_fn fn, void *user, free_log_level max_level);

/* ---------------------------------------------------------------------------------- */
/* Model                                                                              */

typedef struct free_model free_model;

typedef struct free_model_params {
    size_t size;          /* sizeof(free_model_params), set by free_model_params_init */
    int32_t vocab_only;   /* non-zero: load the tokenizer only (no tensors needed) */
    int32_t check_tensors;/* non-zero: read every weight at load and fail with
                             FREE_ERR_NUMERIC at the first NaN or infinity (F32 and F16
                             tensors; quantized ones are skipped with a warning) */
} free_model_params;

/* Fills p with defaults. size is the caller's sizeof(*p). Returns FREE_ERR_INVALID_ARG
 * when p is NULL or size is smaller than the first release's struct. */
FREE_API free_status free_model_params_init(free_model_params *p, size_t size);

/* Maps a GGUF file (v2 or v3, general.architecture "llama", F32/F16 weights) and checks
 * every size, offset and shape against the file. params may be NULL for defaults. On
 * success *out owns the model; on failure *out is NULL and free_last_error() says why. */
FREE_API free_status free_model_load(const char *path, const free_model_params *params,
                                     free_model **out);
FREE_API void free_model_destroy(free_model *model);

FREE_API int32_t free_model_n_layers(const free_model *model);
/* The exit layer the file asks for (free.exit_layer), or 0 when it has none. */
FREE_API int32_t free_model_exit_layer(const free_model *model);
FREE_API int32_t free_model_n_vocab(const free_model *model);
FREE_API int32_t free_model_n_embd(const free_model *model);
FREE_API int32_t free_model_n_ctx_train(const free_model *model);
/* general.architecture ("llama"). Owned by the model. */
FREE_API const char *free_model_architecture(const free_model *model);
/* Number of weights in all tensors. */
FREE_API uint64_t free_model_n_params(const free_model *model);
/* Bytes of weight matrices read to run one row through layers [l0, l1) (0 when the range
 * is invalid), and of the LM head. For bandwidth accounting. */
FREE_API uint64_t free_model_weight_bytes(const free_model *model, int32_t l0, int32_t l1);
FREE_API uint64_t free_model_head_bytes(const free_model *model);
/* The weight matrices' type: its name when every matrix (token_embd, output and the
 * blocks') has one type ("F16", "Q8_0"), else the file's llama.cpp file type (or "mixed")
 * with the matrices per type, most first ("Q4_K_M: 67 Q5_0, 7 Q8_0, 6 Q4_K, 6 Q6_K"); ""
 * for a vocabulary-only model or NULL. Owned by the model. */
FREE_API const char *free_model_weight_type(const free_model *model);
/* A one-line description ("llama, 12 layers, dim 384, 6 heads (2 kv), ffn 1024, vocab
 * 4096, F16, 22.0M params"). Owned by the model. */
FREE_API const char *free_model_describe(const free_model *model);

/* ---------------------------------------------------------------------------------- */
/* Tokens                                                                             */

/* Beginning- and end-of-sequence ids; -1 when model is NULL. */
FREE_API int32_t free_token_bos(const free_model *model);
FREE_API int32_t free_token_eos(const free_model *model);

/* Converts len bytes of text (len < 0: NUL-terminated) into token ids, with a leading BOS
 * when add_bos is non-zero. Invalid UTF-8 is encoded through byte tokens. Writes at most
 * cap ids to out and the count to *n_out; when cap is too small returns
 * FREE_ERR_BUFFER_TOO_SMALL with the needed count in *n_out (out may be NULL then). */
FREE_API free_status free_tokenize(const free_model *model, const char *text, ptrdiff_t len,
                                   int add_bos, int32_t *out, size_t cap, size_t *n_out);

/* Flags of free_tokenize_ex. */
#define FREE_TOKENIZE_ADD_SPECIAL 1u   /* BOS and EOS as the vocabulary says
                                          (tokenizer.ggml.add_bos_token / add_eos_token) */
#define FREE_TOKENIZE_PARSE_SPECIAL 2u /* control tokens written in the text ("<|im_end|>",
                                          "<s>") become those tokens; otherwise they are
                                          plain text. User-defined tokens are always
                                          matched whole. */

/* free_tokenize with llama.cpp's options: flags is 0 or FREE_TOKENIZE_* (other bits are
 * FREE_ERR_INVALID_ARG). With 0 it gives what llama_tokenize(add_special = false,
 * parse_special = false) gives. Same buffer rule as free_tokenize. */
FREE_API free_status free_tokenize_ex(const free_model *model, const char *text,
                                      ptrdiff_t len, uint32_t flags, int32_t *out, size_t cap,
                                      size_t *n_out);

/* Non-zero when token ends generation: EOS and every end-of-turn token the vocabulary has
 * (Llama 3: <|eot_id|> and <|end_of_text|>; Qwen: <|im_end|> and <|endoftext|>; found by
 * their text as llama.cpp does). 0 for ids outside the vocabulary or a NULL model. */
FREE_API int free_token_is_eog(const free_model *model, int32_t token);

/* The raw bytes token contributes to text (byte tokens give their byte, "▁" becomes a
 * space, control tokens give nothing). Not NUL-terminated. Same buffer rule as above. */
FREE_API free_status free_token_to_piece(const free_model *model, int32_t token, char *buf,
                                         size_t cap, size_t *n_out);

/* Decodes n tokens into text as SentencePiece does (byte tokens assembled, the leading
 * space of the first piece removed, control tokens skipped, invalid UTF-8 replaced by
 * U+FFFD). Writes the text and a NUL terminator: cap must exceed the text's length, else
 * FREE_ERR_BUFFER_TOO_SMALL with the length (without the NUL) in *n_out. */
FREE_API free_status free_detokenize(const free_model *model, const int32_t *tokens,
                                     size_t n, char *buf, size_t cap, size_t *n_out);

/* ---------------------------------------------------------------------------------- */
/* Chat                                                                               */

/* One message of a conversation. Both strings are NUL-terminated UTF-8 and only read
 * during the call. role is usually "system", "user" or "assistant"; other roles are
 * written as each format writes them (most write the role's name). This struct is
 * indexed as an array and never grows. */
typedef struct free_chat_message {
    const char *role;
    const char *content;
} free_chat_message;

/* Writes the conversation msgs[0..n) as prompt text in a fixed chat format, byte for byte
 * as llama.cpp's llama_chat_apply_template writes it, and when add_assistant is non-zero
 * the text that opens the assistant's reply (formats without one add nothing). The text
 * has no BOS: tokenize it with the model's BOS and with special-token parsing so that
 * markers such as "<|im_start|>" become their tokens.
 * tmpl selects the format: a name ("chatml", "llama3", "llama2", "mistral-v7", "phi3",
 * "zephyr", "gemma", "deepseek3", ...; docs/api.md lists them), or a Jinja template text
 * recognised as llama.cpp recognises it, or NULL for the model's tokenizer.chat_template
 * (model may be NULL when tmpl is given). A template that is none of the formats, or a
 * model without a template, is FREE_ERR_UNSUPPORTED with the reason and the names.
 * Roles and contents must be valid UTF-8 (else FREE_ERR_INVALID_ARG naming the message).
 * Writes the text and a NUL terminator: cap must exceed the text's length, else
 * FREE_ERR_BUFFER_TOO_SMALL with the length (without the NUL) in *n_out (buf may be NULL
 * when cap is 0). msgs may be NULL when n is 0. */
FREE_API free_status free_chat_format(const free_model *model, const char *tmpl,
                                      const free_chat_message *msgs, size_t n,
                                      int add_assistant, char *buf, size_t cap,
                                      size_t *n_out);

/* The format name ("chatml", "llama3", ...) the model's tokenizer.chat_template is
 * recognised as, or NULL when the model has no template or free_chat_format cannot use
 * it (free_chat_format with tmpl NULL then says why). A static string. */
FREE_API const char *free_model_chat_template(const free_model *model);

/* ---------------------------------------------------------------------------------- */
/* Context                                                                            */

typedef struct free_ctx free_ctx;

typedef enum free_exit_mode {
    FREE_EXIT_NONE = 0,   /* every token through all layers (the baseline) */
    FREE_EXIT_FREE = 1,   /* FREE early exit with synchronized parallel decoding */
    FREE_EXIT_VERIFY = 2, /* lossless: shallow drafts checked by the deep pass */
    /* The default (0.2): resolved when the context is created (and by free_ctx_set_params)
     * from the model. A model with a trained exit (free.exit_layer) gets FREE_EXIT_VERIFY
     * with the draft threshold of its calibration curve (free.calib.*) whose predicted
     * speed-up under the byte model (weights read per token) is the largest; a curve on
     * which no threshold predicts a gain gives FREE_EXIT_NONE; a model with an exit but no
     * curve drafts at free_ctx_params.threshold. A model without free.exit_layer gets
     * FREE_EXIT_NONE. An automatic VERIFY watches its acceptance while decoding and runs at
     * full depth while the measured acceptance, priced at this context's measured pass
     * times, predicts no gain, trying VERIFY again periodically (free_stats.verify_*); an
     * explicit FREE_EXIT_VERIFY always drafts at its threshold.
     * free_ctx_get_params and free_stats report the resolved mode and threshold. */
    FREE_EXIT_AUTO = 3
} free_exit_mode;

typedef enum free_bmm_rule {
    FREE_BMM_RULE_GRID = 0,       /* the reference rule: a 10-point grid on [0.3, 0.9] */
    FREE_BMM_RULE_CONTINUOUS = 1  /* bisection for where the posterior crosses zeta */
} free_bmm_rule;

/* Returns non-zero to abort a long computation (checked between batches). */
typedef int (*free_abort_fn)(void *user);

typedef struct free_ctx_params {
    size_t size;               /* sizeof(free_ctx_params), set by free_ctx_params_init */
    int32_t n_ctx;             /* tokens of context; 0 = the model's training context, at
                                  most 4096 (a longer context than the trained one is
                                  allowed and logs a warning) */
    int32_t n_threads;         /* compute threads; 0 = all cores (at most 8) */
    int32_t n_batch;           /* rows per batched pass (prefill, synchronization); 0 = 64 */
    /* sampling */
    float temperature;         /* 0 = greedy (default) */
    int32_t top_k;             /* 0 = off */
    float top_p;               /* 1 = off */
    uint64_t seed;             /* the same seed gives the same text */
    /* early exit */
    int32_t exit_mode;         /* free_exit_mode; default FREE_EXIT_AUTO (0.1: NONE) */
    int32_t exit_layer;        /* Ls; 0 = the file's free.exit_layer, else n_layers / 4 */
    float threshold;           /* confidence threshold lambda; default 0.9 */
    int32_t max_queue;         /* early-exit queue bound; 0 = up to the context (FREE),
                                  8 drafts per verification (VERIFY) */
    /* adaptive threshold (Beta mixture) */
    /* The fields below are checked only when adaptive is on: then threshold must lie in
     * [threshold_min, threshold_max] within [0, 1], bmm_min_per_class >= 2 and
     * bmm_capacity >= 2 * bmm_min_per_class. */
    int32_t adaptive;          /* non-zero: learn the threshold while decoding */
    float zeta;                /* posterior level; default 0.4 */
    float threshold_min;       /* bounds for the learned threshold; default 0.05 .. 0.99 */
    float threshold_max;
    int32_t bmm_rule;          /* free_bmm_rule; default FREE_BMM_RULE_GRID */
    int32_t bmm_min_per_class; /* samples needed in each class before a fit; default 8 */
    int32_t bmm_max_updates;   /* fits before the threshold freezes; default 300 */
    int32_t bmm_refit_every;   /* also refit every N new samples, inside a generation;
                                  default 64 (0.1: 0); 0 = per generation only */
    int32_t bmm_capacity;      /* samples kept (a ring); default 4096 */
    const char *calibration;   /* text from free_ctx_export_calibration, or NULL; read
                                  during the call (adaptive only) */
    /* cancellation */
    free_abort_fn abort_fn;    /* may be NULL */
    void *abort_user;
    /* sampling controls (0.2; llama.cpp's names). They apply to the tokens actually
     * emitted, in every exit mode: the shallow head's choice and confidence in FREE mode,
     * drafts and their check in VERIFY mode (which stays exactly the full model's output
     * under the same controls). */
    float min_p;               /* keep tokens whose probability is at least min_p times the
                                  top token's (after temperature, top_k, top_p); 0 = off */
    float repeat_penalty;      /* logits of the tokens in the window: divided by it when
                                  positive, multiplied when not; 1 = off (default) */
    int32_t repeat_last_n;     /* the window: the last N tokens of the context (prompt and
                                  generated); default 64, 0 = no penalties, -1 = all */
    float frequency_penalty;   /* minus this times the token's count in the window; 0 = off */
    float presence_penalty;    /* minus this once for a token in the window; 0 = off */
    const char *const *stop;   /* n_stop stop strings (1 to 1024 bytes of UTF-8 each, at most
                                  64), copied during the call. free_decode never streams a
                                  stop string or anything after it: text that may begin one
                                  is held back until it is known not to */
    int32_t n_stop;
    /* context shift (0.2; llama.cpp's --context-shift and --keep) */
    int32_t context_shift;     /* non-zero: when free_step finds the context full, keep the
                                  first n_keep tokens, drop half of the rest, move the
                                  others down and rotate their keys back (RoPE), and go on;
                                  0 (default): FREE_ERR_CONTEXT_FULL */
    int32_t n_keep;            /* tokens a shift keeps at the start (a leading BOS is always
                                  kept); default 0, >= 0 */
    /* Lossy early exit with a stated quality (0.2). In (0, 1]: the threshold becomes the
     * lowest point of the calibration curve (the model's free.calib.* keys, or those of
     * calibration_file) whose token
     * agreement with the final head, as a one-sided 95% Wilson lower bound on the curve's
     * sample counts (free.calib.samples; without counts the measured agreement itself), is
     * at least min_agreement; when no point reaches it, threshold 1 (no early exits) and a
     * warning. Needs FREE_EXIT_FREE or FREE_EXIT_VERIFY and a curve (else
     * FREE_ERR_INVALID_ARG); it replaces `threshold` (and the adaptive estimator's start).
     * With `adaptive`, the third source: the estimator's rule becomes this one, applied
     * to the samples decoding gathers (each synchronized row's confidence and whether the
     * exit head agreed; at the estimator's refit points, within its bounds; the threshold
     * stays while no point qualifies), and no curve is needed (the start is then
     * `threshold`). 0 = off (default). */
    float min_agreement;
    /* FREE mode runs the final head only on the last row of a synchronizing pass (the
     * row the next token comes from; 0.2), so the agreement_* stats then count only the
     * tokens the final head chose. Non-zero: run it on every synchronized row, so that
     * early exits are checked against the final head's greedy choice at their position
     * too (what free-bench's agreement column needs); the adaptive estimator does this
     * whatever the value. Costs one head row per early exit. Default 0. */
    int32_t agreement_stats;
    /* Path of a calibration file (0.2): a GGUF holding a calibration curve in the model's
     * keys (free.calib.thresholds, .exit_rate, .agreement, .samples; free-calibrate -o
     * writes one). Its curve replaces the model's for FREE_EXIT_AUTO and min_agreement.
     * Read during the call, not kept (free_ctx_get_params gives NULL). FREE_ERR_IO when it
     * cannot be read, FREE_ERR_FORMAT when it is not a GGUF or holds no or a broken curve,
     * FREE_ERR_INVALID_ARG when its free.calib.exit_layer is not the context's exit layer.
     * NULL (default): the model's own curve. */
    const char *calibration_file;
} free_ctx_params;

/* Fills p with defaults (see the field comments). A size from an older header (down to
 * the first release's struct) fills only the fields it covers. */
FREE_API free_status free_ctx_params_init(free_ctx_params *p, size_t size);

/* Creates a decoding context on model; params may be NULL for defaults. */
FREE_API free_status free_ctx_create(const free_model *model, const free_ctx_params *params,
                                     free_ctx **out);
FREE_API void free_ctx_destroy(free_ctx *ctx);

/* Changes sampling, exit mode, threshold, exit layer, queue bound and adaptive settings
 * between generations (n_ctx, n_threads and n_batch are fixed at creation and ignored
 * here). Synchronizes a pending early-exit queue first. */
FREE_API free_status free_ctx_set_params(free_ctx *ctx, const free_ctx_params *params);

/* Copies the parameters in force into *params (set params->size first): n_ctx, n_threads
 * and n_batch as resolved at creation, calibration NULL. */
FREE_API free_status free_ctx_get_params(const free_ctx *ctx, free_ctx_params *params);

/* Forgets every token (queue, pending token, the tokens of the KV caches). Keeps the
 * learned threshold and the statistics, and the cached rows themselves: a next prompt
 * that begins with the same tokens reuses them (see free_prefill). */
FREE_API free_status free_ctx_reset(free_ctx *ctx);

/* Keeps the first n_keep tokens the context holds (free_ctx_n_past) and drops the rest:
 * early-exited rows after n_keep leave the queue unrun, those before it run through the
 * deep layers now, and VERIFY tokens not handed out yet are dropped first. The last kept
 * token becomes the pending one, so free_step continues after it and free_prefill appends
 * after it; the dropped rows stay reusable as after free_ctx_reset. n_keep 0 empties the
 * context. FREE_ERR_INVALID_ARG when n_keep is negative or more than the context holds;
 * a failing synchronization (FREE_ERR_ABORTED, FREE_ERR_NUMERIC) is returned as is. */
FREE_API free_status free_ctx_truncate(free_ctx *ctx, int32_t n_keep);

/* Saving and restoring a context (0.2): its tokens and KV caches, the early-exit queue,
 * the pending and verified-but-not-handed-out tokens, the sampler's random state, the
 * streaming text state, the adaptive estimator's fitted state and an automatic VERIFY's
 * guard (format 2; format 1 states still load), so that a restored
 * context continues exactly as the saved one would have. The parameters are not part of
 * the state: load into a context created with the same parameters (free_ctx_set_params
 * after loading reseeds the sampler). The format is versioned and checked (a checksum, the
 * model's fingerprint): a corrupted, truncated or foreign state is FREE_ERR_FORMAT and
 * changes nothing. States are for the same library version and platform.
 * free_ctx_state_size gives the bytes free_ctx_state_save writes now. */
FREE_API free_status free_ctx_state_size(const free_ctx *ctx, size_t *size);
/* Writes the state to buf (cap bytes; same buffer rule as free_tokenize). */
FREE_API free_status free_ctx_state_save(const free_ctx *ctx, void *buf, size_t cap,
                                         size_t *n_out);
/* Replaces ctx's state with a saved one. FREE_ERR_FORMAT as above; FREE_ERR_STATE when ctx
 * cannot hold it (a smaller n_ctx, another exit layer with rows queued, an adaptive state
 * into a context without the adaptive threshold, or VERIFY sampling drafts into a context
 * that does not keep them). */
FREE_API free_status free_ctx_state_load(free_ctx *ctx, const void *buf, size_t len);

/* The detailed message of this context's last failure ("" when none). Owned by ctx. */
FREE_API const char *free_ctx_last_error(const free_ctx *ctx);

/* Tokens held by the context (prompt + generated, including one not yet evaluated). */
FREE_API int32_t free_ctx_n_past(const free_ctx *ctx);
FREE_API int32_t free_ctx_n_ctx(const free_ctx *ctx);

/* ---------------------------------------------------------------------------------- */
/* Decoding                                                                           */

/* How a token was produced. */
typedef struct free_step_info {
    size_t size;          /* sizeof(free_step_info), set by the caller */
    int32_t position;     /* position of the token in the context */
    int32_t layers;       /* layers whose output decided it: the exit layer for a FREE
                             early exit, n_layers otherwise (a VERIFY draft the deep pass
                             accepted was decided at full depth) */
    int32_t early_exit;   /* non-zero when chosen by the shallow exit head */
    float confidence;     /* shallow top-1 minus top-2 probability (0 when not computed) */
    float threshold;      /* threshold in force */
    int32_t is_eos;       /* non-zero when the token ends generation (free_token_is_eog) */
} free_step_info;

/* Appends n tokens and runs them through all layers in batches (synchronizing a pending
 * early-exit queue first, and running the token last handed out, if any, before them).
 * Prompt reuse: after free_ctx_reset or free_ctx_truncate, the leading tokens that equal
 * the rows still cached there are not run again (the longest common prefix, except the
 * last token, which runs for its logits); free_stats.reused_tokens counts them. The
 * results are those of running every token (the kernels give every row the same bits
 * whatever the batch).
 * The next free_step samples from the last row. Each prefill starts a new generation:
 * the adaptive threshold refits here when its schedule says so. In VERIFY mode, verified
 * tokens free_step has not handed out yet are dropped (the last token handed out is run
 * again, as in FREE mode). n may be 0 when a token was handed out since the last prefill
 * (it alone is run). A call that fails its checks (FREE_ERR_TOKEN, FREE_ERR_CONTEXT_FULL,
 * FREE_ERR_INVALID_ARG) leaves the context as it was. */
FREE_API free_status free_prefill(free_ctx *ctx, const int32_t *tokens, size_t n);

/* Like free_prefill, and writes the full-depth logits of every appended row to
 * logits[n][n_vocab] (logits may be NULL). */
FREE_API free_status free_eval(free_ctx *ctx, const int32_t *tokens, size_t n, float *logits);

/* Like free_eval, and also runs the shallow exit head on every appended row: teacher
 * forcing, every row still goes through all layers and the caches end exactly as
 * free_eval leaves them (logits too are free_eval's). exit_logits[n][n_vocab] gets the exit
 * head's logits on the residual after the context's exit layer (free_ctx_params.exit_layer)
 * and exit_confidence[n] their confidence, the value free_step compares with the threshold
 * (softmax top-1 minus top-2 probability). Row i's exit outputs equal what a FREE step
 * computes for tokens[i] at that position. Any of logits, exit_logits and exit_confidence
 * may be NULL. For measuring early exit itself (free-perplexity --exit free). */
FREE_API free_status free_eval_exit(free_ctx *ctx, const int32_t *tokens, size_t n,
                                    float *logits, float *exit_logits, float *exit_confidence);

/* Produces the next final token into *token, and into *info (may be NULL; set its size)
 * how it was produced. Returns FREE_ERR_STATE when nothing was prefilled,
 * FREE_ERR_CONTEXT_FULL when the context has no room, FREE_ERR_NUMERIC (with the position
 * in the message) when the logits or the exit confidence are not finite, and
 * FREE_ERR_ABORTED when the abort callback stops a synchronization (the rows not yet run
 * stay queued; the step is undone). */
FREE_API free_status free_step(free_ctx *ctx, int32_t *token, free_step_info *info);

/* One free_step for each of n contexts of the same model, batched, each weight read once
 * for all streams: a shallow pass runs every stream's pending token (FREE and VERIFY
 * streams through layers [0, Ls) and the exit head; full-depth streams, FREE_EXIT_NONE,
 * through the layers up to the lowest exit layer in the batch), further shallow passes
 * the drafts of the VERIFY streams that draft on, and a deep pass the rows that need the
 * deep layers (full-depth rows, the queues of the FREE streams that synchronize, the
 * drafts the VERIFY streams check) through the remaining layers and the final head.
 * Streams of different exit layers share the layers they both run. Each context keeps its
 * own cache, sampler, exit queue and estimator, and gets exactly the token, info and
 * counters free_step would give it alone (attention per stream over its own cache; the
 * kernels give a row the same bits in any batch). Streams may join and leave between
 * calls (any subset of contexts of the model, in any order). tokens[n] and statuses[n]
 * receive each stream's token and free_step status (one failing stream does not disturb
 * the others; its message is in free_ctx_last_error). infos may be NULL, or n
 * free_step_info laid out with stride infos[0].size (set every element's size). Threads:
 * the batch runs on ctxs[0]'s thread pool and scratch (ctxs[0] must not be used from
 * another thread meanwhile). Returns FREE_OK when the call was valid (see statuses),
 * FREE_ERR_INVALID_ARG (no context stepped) when an argument is NULL, n < 1, a context
 * appears twice, or the contexts are not all of ctxs[0]'s model. Since 0.2. */
FREE_API free_status free_batch_step(free_ctx *const *ctxs, int32_t n, int32_t *tokens,
                                     free_status *statuses, free_step_info *infos);

/* For hosts that call free_step themselves: the text token adds to this context's stream
 * (complete UTF-8 only, exactly what free_decode would stream; a token ending mid-character
 * gives 0 bytes and its bytes come later). buf needs at least 64 bytes plus the longest
 * piece; when cap is too small returns FREE_ERR_BUFFER_TOO_SMALL with the size needed in
 * *n_out. Not NUL-terminated. */
FREE_API free_status free_ctx_token_text(free_ctx *ctx, int32_t token, char *buf, size_t cap,
                                         size_t *n_out);

/* Receives each final token with the text it completes (complete UTF-8 only: a token that
 * ends mid-character gives len 0 and its bytes come with a later token). Return non-zero
 * to stop. */
typedef int (*free_token_fn)(void *user, int32_t token, const char *piece, size_t len,
                             const free_step_info *info);

/* Tokenizes prompt (len < 0: NUL-terminated; control tokens written in it, such as a
 * chat template's "<|im_start|>", become those tokens; a BOS is added when the context is
 * empty and the vocabulary adds one; NULL or "" continues from the current state, or
 * starts from BOS), prefills it, and generates up to
 * max_tokens tokens (< 0: no limit), streaming them to fn (may be NULL; it must not call
 * back into ctx). Stops at end of generation (any free_token_is_eog token; not
 * streamed), after max_tokens, when fn returns non-zero, or with FREE_ERR_CONTEXT_FULL
 * when the context is full.
 * With stop strings (free_ctx_params.stop), generation also stops at the token that
 * completes one; neither it nor any text after it is streamed. Text that may begin a stop
 * string is held back and comes with a later token (a call may then give len 0, or more
 * text than its token's); at max_tokens it comes with the last token, and at
 * end-of-sequence in one call for the end-of-sequence token (info->is_eos set). After a
 * failure or a non-zero return of fn, held text is not streamed. */
FREE_API free_status free_decode(free_ctx *ctx, const char *prompt, ptrdiff_t len,
                                 int32_t max_tokens, free_token_fn fn, void *user);

/* Why the last free_decode on ctx stopped. */
typedef enum free_finish {
    FREE_FINISH_NONE = 0,     /* no free_decode yet, or it failed */
    FREE_FINISH_EOS = 1,      /* the model produced end-of-sequence */
    FREE_FINISH_LENGTH = 2,   /* max_tokens tokens were produced */
    FREE_FINISH_STOP = 3,     /* a stop string was produced (not streamed) */
    FREE_FINISH_CALLBACK = 4  /* the token callback returned non-zero */
} free_finish;

/* A free_finish value; FREE_FINISH_NONE when ctx is NULL. */
FREE_API int32_t free_ctx_finish_reason(const free_ctx *ctx);

/* ---------------------------------------------------------------------------------- */
/* Statistics and calibration                                                         */

typedef struct free_stats {
    size_t size;                 /* sizeof(free_stats), set by the caller */
    int32_t exit_mode;           /* free_exit_mode in force */
    int32_t exit_layer;          /* Ls in force */
    int32_t n_layers;
    int32_t n_threads;
    float threshold;             /* threshold in force now */
    uint64_t prompt_tokens;      /* tokens prefilled */
    uint64_t tokens;             /* final tokens produced by free_step */
    uint64_t shallow_exits;      /* tokens chosen by the shallow exit head */
    uint64_t deep_passes;        /* batched passes through the deep layers while decoding */
    uint64_t sync_rows;          /* rows in those passes */
    double mean_sync_rows;       /* sync_rows / deep_passes */
    uint64_t drafts_rejected;    /* VERIFY: drafts replaced by the deep token */
    double avg_layers_per_token; /* mean of free_step_info.layers over `tokens`: the
                                    layers whose output decided each token (exit_layer
                                    for a FREE early exit; n_layers for a token the final
                                    head chose or, in VERIFY, confirmed) */
    uint64_t agreement_checked;  /* tokens handed out by free_step (counted in `tokens`)
                                    whose final-head greedy choice at the same position is
                                    known: chosen or verified by the final head, or (FREE,
                                    with agreement_stats or adaptive) early exits whose
                                    row the deep pass has since run */
    uint64_t agreement_matched;  /* ... and equal to that greedy choice */
    double prefill_ms, decode_ms, shallow_ms, deep_ms, head_ms;
    /* adaptive threshold */
    int32_t adaptive;
    int32_t bmm_fits;
    int32_t bmm_frozen;
    uint64_t bmm_samples_agree;
    uint64_t bmm_samples_disagree;
    double bmm_alpha_agree, bmm_beta_agree;
    double bmm_alpha_disagree, bmm_beta_disagree;
    uint64_t shallow_passes;     /* single-row passes through the shallow layers */
    double layers_read_per_token;/* layer weights read per produced token: shallow passes
                                    read Ls layers, deep passes L - Ls (full depth: L) */
    uint64_t reused_tokens;      /* prompt tokens (counted in prompt_tokens) taken from the
                                    cache instead of being run: prompt reuse (0.2) */
    /* The guard of an automatic VERIFY (FREE_EXIT_AUTO, 0.2). Every 32 tokens drafted it
     * predicts VERIFY's speed-up over full depth: with greedy decoding from this context's
     * measured pass times (running averages of a shallow pass, a deep pass of k rows for
     * each k, a full-depth step; 4-step full-depth probes keep the last fresh) applied to
     * the passes the window ran, smoothed over windows; with a sampler that draws, from
     * the weights read per token (so that seeded runs repeat). In free_batch_step the
     * shared passes are counted but not timed. Below 1.02 (timed) or 1 (bytes) it decodes at
     * full depth for 128 tokens (doubling while VERIFY keeps failing, up to 1024) and
     * then tries VERIFY again. The text does not depend on it (greedy VERIFY is exact). */
    int32_t exit_auto;           /* non-zero: exit_mode was resolved from FREE_EXIT_AUTO */
    int32_t verify_full_depth;   /* non-zero while the guard holds decoding at full depth */
    uint64_t verify_fallbacks;   /* times the guard switched to full depth */
    uint64_t verify_full_tokens; /* tokens the guard decoded at full depth (probes too) */
    double verify_speedup;       /* the last window's predicted speed-up, 0 before one */
    /* (0.2, appended) what the guard measured; times are this context's running
     * averages in ms, 0 until measured */
    int32_t verify_timed;        /* decisions from measured times: 1 wall clock, 2 the
                                    decoding thread's CPU time (1 thread); 0: bytes */
    int32_t verify_probing;      /* non-zero while a full-depth probe measures */
    uint64_t verify_windows;     /* windows judged (kept + fallbacks) */
    uint64_t verify_probes;      /* full-depth probes run to time a full-depth step */
    double verify_token_ms;      /* VERIFY's predicted time per token, smoothed */
    double verify_full_ms;       /* a full-depth step */
    double verify_shallow_ms;    /* a shallow pass (layers [0, Ls) and the exit head) */
    double verify_deep_ms;       /* a deep pass, averaged over the last window's passes */
    double verify_deep_rows;     /* mean rows of those deep passes */
} free_stats;

/* Fills *stats (set stats->size first) with totals since the context was created or its
 * statistics were last reset. */
FREE_API free_status free_ctx_stats(const free_ctx *ctx, free_stats *stats);
FREE_API free_status free_ctx_reset_stats(free_ctx *ctx);

/* Writes the learned threshold state as a small text (NUL-terminated) to buf, for
 * free_ctx_params.calibration. Same buffer rule as free_tokenize; *n_out excludes the
 * NUL. */
FREE_API free_status free_ctx_export_calibration(const free_ctx *ctx, char *buf, size_t cap,
                                                 size_t *n_out);

#ifdef __cplusplus
}
#endif

#endif
