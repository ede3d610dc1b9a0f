/* free-random: writes a llama-architecture GGUF model with random weights of a given shape
 * and weight type, its vocabulary copied from another GGUF. For benchmarks and smoke tests
 * that need a model far bigger than the CPU's cache without downloading one: the text it
 * writes is noise, the bytes it reads per token are those of a real model of that shape.
 *
 *     free-random OUT.gguf --vocab-from VOCAB.gguf [--dim 1280] [--layers 24] [--ff 3456]
 *                 [--heads 20] [--kv-heads 20] [--ctx 2048] [--type f16] [--exit-layer 6]
 *                 [--seed 1] [--tied]
 *
 * Weights are uniform in [-a, a] with a = sqrt(3 / cols) (unit-variance outputs for
 * unit-variance inputs), norms are 1, so activations stay finite at any depth. The same
 * seed and shape give the same file. Vocabularies: every tokenizer.* key of VOCAB.gguf
 * is copied (a vocabulary-only file is enough), so n_vocab is its token count. */
#include "gguf.h"
#include "gguf_write.h"
#include "kernels.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct options {
    const char *out, *vocab;
    long dim, layers, ff, heads, kv_heads, ctx, exit_layer;
    unsigned long long seed;
    uint32_t type; /* GGUF_TENSOR_F32 / F16 / BF16 */
    int tied;
} options;

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: free-random OUT.gguf --vocab-from VOCAB.gguf [--dim N] [--layers N]\n"
            "       [--ff N] [--heads N] [--kv-heads N] [--ctx N] [--type f32|f16|bf16]\n"
            "       [--exit-layer N] [--seed N] [--tied]\n"
            "Writes a llama model with random weights (defaults: dim 1280, 24 layers,\n"
            "ff 3456, 20 heads, kv-heads = heads, ctx 2048, f16, exit layer layers/4).\n");
}

/* Strict decimal parse of a whole argument into [lo, hi]. */
static int parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "free-random: %s must be a whole number in [%ld, %ld], got '%s'\n",
                flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){.dim = 1280, .layers = 24, .ff = 3456, .heads = 20, .kv_heads = 0,
                   .ctx = 2048, .exit_layer = -1, .seed = 1, .type = GGUF_TENSOR_F16};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--tied")) {
            o->tied = 1;
            continue;
        }
        if (a[0] != '-') {
            if (o->out) {
                fprintf(stderr, "free-random: more than one output file ('%s')\n", a);
                return -1;
            }
            o->out = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "free-random: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        long n;
        int rc = 0;
        if (!strcmp(a, "--vocab-from")) o->vocab = v;
        else if (!strcmp(a, "--dim")) rc = parse_long(a, v, 8, 1 << 16, &o->dim);
        else if (!strcmp(a, "--layers")) rc = parse_long(a, v, 1, 512, &o->layers);
        else if (!strcmp(a, "--ff")) rc = parse_long(a, v, 1, 1 << 18, &o->ff);
        else if (!strcmp(a, "--heads")) rc = parse_long(a, v, 1, 1024, &o->heads);
        else if (!strcmp(a, "--kv-heads")) rc = parse_long(a, v, 1, 1024, &o->kv_heads);
        else if (!strcmp(a, "--ctx")) rc = parse_long(a, v, 1, 1 << 20, &o->ctx);
        else if (!strcmp(a, "--exit-layer")) rc = parse_long(a, v, 0, 512, &o->exit_layer);
        else if (!strcmp(a, "--seed")) {
            rc = parse_long(a, v, 0, LONG_MAX, &n);
            o->seed = (unsigned long long)n;
        } else if (!strcmp(a, "--type")) {
            if (!strcmp(v, "f32")) o->type = GGUF_TENSOR_F32;
            else if (!strcmp(v, "f16")) o->type = GGUF_TENSOR_F16;
            else if (!strcmp(v, "bf16")) o->type = GGUF_TENSOR_BF16;
            else {
                fprintf(stderr, "free-random: --type must be f32, f16 or bf16 (quantize "
                                "the result with free-convert --type), got '%s'\n", v);
                return -1;
            }
        } else {
            fprintf(stderr, "free-random: unknown option '%s'\n", a);
            return -1;
        }
        if (rc)
            return -1;
    }
    if (!o->out || !o->vocab) {
        usage(stderr);
        return -1;
    }
    if (!o->kv_heads)
        o->kv_heads = o->heads;
    if (o->dim % o->heads || (o->dim / o->heads) % 2 || o->heads % o->kv_heads) {
        fprintf(stderr, "free-random: --dim must be a multiple of --heads with an even head "
                        "size, and --heads a multiple of --kv-heads\n");
        return -1;
    }
    if (o->exit_layer < 0)
        o->exit_layer = o->layers / 4 > 0 ? o->layers / 4 : 1;
    if (o->exit_layer >= o->layers) {
        fprintf(stderr, "free-random: --exit-layer must be below --layers (%ld)\n", o->layers);
        return -1;
    }
    return 0;
}

/* splitmix64: a small, well-mixed generator; uniform float in [-1, 1). */
static float next_uniform(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    x += 0x7fff + ((x >> 16) & 1); /* round to nearest even (values here are finite) */
    return (uint16_t)(x >> 16);
}

/* The tensors' storage, freed after the file is written. */
typedef struct arena {
    void **blocks;
    size_t n, cap;
} arena;

static void *arena_alloc(arena *a, size_t bytes)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 64;
        void **b = realloc(a->blocks, cap * sizeof *b);
        if (!b)
            return NULL;
        a->blocks = b;
        a->cap = cap;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p)
        a->blocks[a->n++] = p;
    return p;
}

static void arena_free(arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->blocks[i]);
    free(a->blocks);
}

/* Adds a random [rows][cols] matrix of type o->type, or a vector of ones when rows is 0. */
static int add_tensor(fr_gguf_writer *w, arena *ar, const options *o, uint64_t *rng,
                      const char *name, int64_t rows, int64_t cols)
{
    fr_error err = {0};
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)(rows ? rows : 1)};
    uint64_t n = ne[0] * ne[1];
    uint32_t type = rows ? o->type : GGUF_TENSOR_F32;
    size_t esize = type == GGUF_TENSOR_F32 ? 4 : 2;
    void *data = arena_alloc(ar, n * esize);
    if (!data) {
        fprintf(stderr, "free-random: out of memory for %s (%" PRIu64 " bytes)\n", name,
                n * esize);
        return -1;
    }
    float a = sqrtf(3.0f / (float)cols);
    for (uint64_t i = 0; i < n; i++) {
        float v = rows ? a * next_uniform(rng) : 1.0f;
        if (type == GGUF_TENSOR_F32)
            ((float *)data)[i] = v;
        else if (type == GGUF_TENSOR_F16)
            ((uint16_t *)data)[i] = fr_f32_to_f16(v);
        else
            ((uint16_t *)data)[i] = f32_to_bf16(v);
    }
    if (fr_gguf_add_tensor(w, name, rows ? 2 : 1, ne, type, data, n * esize, &err)) {
        fprintf(stderr, "free-random: %s: %s\n", name, err.msg);
        return -1;
    }
    return 0;
}

/* Copies every tokenizer.* key of the vocabulary file; returns the token count or -1. */
static int64_t copy_vocab(fr_gguf_writer *w, const gguf_file *v)
{
    fr_error err = {0};
    int64_t n_vocab = -1;
    for (uint64_t i = 0; i < gguf_n_kv(v); i++) {
        const gguf_kv *kv = gguf_kv_at(v, i);
        if (kv->key.len < 10 || memcmp(kv->key.ptr, "tokenizer.", 10) != 0)
            continue;
        if (fr_gguf_add_kv_copy(w, kv, &err)) {
            fprintf(stderr, "free-random: copying %.*s: %s\n", (int)kv->key.len,
                    kv->key.ptr, err.msg);
            return -1;
        }
        if (gguf_str_eq(kv->key, "tokenizer.ggml.tokens") && kv->type == GGUF_TYPE_ARRAY)
            n_vocab = (int64_t)kv->arr_n;
    }
    if (n_vocab <= 0)
        fprintf(stderr, "free-random: the vocabulary file has no tokenizer.ggml.tokens\n");
    return n_vocab;
}

static int add_keys(fr_gguf_writer *w, const options *o)
{
    fr_error err = {0};
    free_status s = FREE_OK;
    s = s ? s : fr_gguf_add_str(w, "general.architecture", "llama", &err);
    s = s ? s : fr_gguf_add_str(w, "general.name", "free-random", &err);
    s = s ? s : fr_gguf_add_u32(w, "general.file_type",
                                o->type == GGUF_TENSOR_F32 ? 0 : o->type == GGUF_TENSOR_F16 ? 1 : 32, &err);
    s = s ? s : fr_gguf_add_u32(w, "llama.embedding_length", (uint32_t)o->dim, &err);
    s = s ? s : fr_gguf_add_u32(w, "llama.block_count", (uint32_t)o->layers, &err);
    s = s ? s : fr_gguf_add_u32(w, "llama.feed_forward_length", (uint32_t)o->ff, &err);
    s = s ? s : fr_gguf_add_u32(w, "llama.attention.head_count", (uint32_t)o->heads, &err);
    s = s ? s : fr_gguf_add_u32(w, "llama.attention.head_count_kv", (uint32_t)o->kv_heads, &err);
    s = s ? s : fr_gguf_add_u32(w, "llama.context_length", (uint32_t)o->ctx, &err);
    s = s ? s : fr_gguf_add_u32(w, "llama.rope.dimension_count",
                                (uint32_t)(o->dim / o->heads), &err);
    s = s ? s : fr_gguf_add_f32(w, "llama.rope.freq_base", 10000.0f, &err);
    s = s ? s : fr_gguf_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &err);
    s = s ? s : fr_gguf_add_u32(w, "free.version", 1, &err);
    s = s ? s : fr_gguf_add_u32(w, "free.exit_layer", (uint32_t)o->exit_layer, &err);
    if (s)
        fprintf(stderr, "free-random: %s\n", err.msg);
    return s ? -1 : 0;
}

static int add_layers(fr_gguf_writer *w, arena *ar, const options *o, uint64_t *rng)
{
    int64_t hd = o->dim / o->heads, kv = hd * o->kv_heads;
    static const char *const norm_names[] = {"attn_norm", "ffn_norm"};
    for (long il = 0; il < o->layers; il++) {
        struct { const char *name; int64_t rows, cols; } m[] = {
            {"attn_q", o->dim, o->dim}, {"attn_k", kv, o->dim}, {"attn_v", kv, o->dim},
            {"attn_output", o->dim, o->dim}, {"ffn_gate", o->ff, o->dim},
            {"ffn_up", o->ff, o->dim}, {"ffn_down", o->dim, o->ff},
        };
        char name[96];
        for (size_t j = 0; j < 2; j++) {
            snprintf(name, sizeof name, "blk.%ld.%s.weight", il, norm_names[j]);
            if (add_tensor(w, ar, o, rng, name, 0, o->dim))
                return -1;
        }
        for (size_t j = 0; j < sizeof m / sizeof m[0]; j++) {
            snprintf(name, sizeof name, "blk.%ld.%s.weight", il, m[j].name);
            if (add_tensor(w, ar, o, rng, name, m[j].rows, m[j].cols))
                return -1;
        }
        fprintf(stderr, "\rfree-random: layer %ld/%ld", il + 1, o->layers);
    }
    fprintf(stderr, "\n");
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o))
        return 2;
    fr_error err = {0};
    gguf_file *vocab = NULL;
    if (gguf_open(o.vocab, &vocab, &err)) {
        fprintf(stderr, "free-random: %s: %s\n", o.vocab, err.msg);
        return 1;
    }
    fr_gguf_writer *w = NULL;
    arena ar = {0};
    int rc = 1;
    uint64_t rng = o.seed;
    if (fr_gguf_writer_create(&w, &err)) {
        fprintf(stderr, "free-random: %s\n", err.msg);
        goto done;
    }
    int64_t n_vocab = copy_vocab(w, vocab);
    if (n_vocab <= 0 || add_keys(w, &o))
        goto done;
    if (add_tensor(w, &ar, &o, &rng, "token_embd.weight", n_vocab, o.dim) ||
        add_tensor(w, &ar, &o, &rng, "output_norm.weight", 0, o.dim) ||
        (!o.tied && add_tensor(w, &ar, &o, &rng, "output.weight", n_vocab, o.dim)) ||
        add_layers(w, &ar, &o, &rng))
        goto done;
    uint64_t size = 0;
    if (fr_gguf_writer_size(w, &size, &err) || fr_gguf_writer_write_path(w, o.out, &err)) {
        fprintf(stderr, "free-random: %s: %s\n", o.out, err.msg);
        goto done;
    }
    fprintf(stderr, "free-random: wrote %s (%.1f MB): dim %ld, %ld layers, ff %ld, %ld/%ld "
                    "heads, vocab %" PRId64 ", exit layer %ld\n",
            o.out, (double)size / 1e6, o.dim, o.layers, o.ff, o.heads, o.kv_heads, n_vocab,
            o.exit_layer);
    rc = 0;
done:
    fr_gguf_writer_destroy(w);
    arena_free(&ar);
    gguf_close(vocab);
    return rc;
}
