/* Writes the committed fuzzing data from a real vocabulary (stories260K.gguf, MIT):
 *   data/vocab.gguf        the vocabulary alone (tokenizer.* keys), for the token targets
 *   data/tiny.gguf         a 2-layer random-weight llama on that vocabulary (dim 8), for
 *                          the params target
 *   corpus/gguf/...        valid files shrunk to a few KB, then mutated (truncated, v2,
 *                          shapes and offsets off by one)
 * Usage: make-seeds STORIES260K.GGUF OUTDIR (OUTDIR = tests/fuzz). Run once by hand when the
 * seed format changes; the outputs are committed, the program is not part of the tests:
 *   gcc -std=c11 -D_GNU_SOURCE -Iinclude -Ibuild/include -Ilib tests/fuzz/make-seeds.c \
 *       lib/gguf.c lib/gguf_get.c lib/gguf_write.c lib/status.c -o make-seeds
 * (the output is byte-for-byte reproducible). */
#include "gguf.h"
#include "gguf_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIM 8
#define FF 16
#define LAYERS 2
#define KVD 4

static void die(const fr_error *err)
{
    fprintf(stderr, "make-seeds: %s\n", err->msg);
    exit(1);
}

static uint32_t rng_state = 12345u;

static float rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return ((float)(rng_state >> 8) / 16777216.0f - 0.5f);
}

static void write_bytes(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "make-seeds: cannot write %s\n", path);
        exit(1);
    }
}

/* Copies the vocabulary keys of src into w. */
static void add_vocab(fr_gguf_writer *w, const gguf_file *src, fr_error *err)
{
    for (uint64_t i = 0; i < gguf_n_kv(src); i++) {
        const gguf_kv *kv = gguf_kv_at(src, i);
        if (kv->key.len >= 10 && memcmp(kv->key.ptr, "tokenizer.", 10) == 0)
            if (fr_gguf_add_kv_copy(w, kv, err) != FREE_OK)
                die(err);
    }
}

static float *weights(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = rnd();
    return p;
}

static uint16_t to_f16(float f)
{
    /* Small values only (|f| < 1): enough for seeds. */
    union { float f; uint32_t u; } v = {f};
    uint32_t sign = (v.u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((v.u >> 23) & 0xff) - 127 + 15;
    if (exp <= 0)
        return (uint16_t)sign;
    return (uint16_t)(sign | ((uint32_t)exp << 10) | ((v.u >> 13) & 0x3ffu));
}

static void add_t(fr_gguf_writer *w, const char *name, uint64_t cols, uint64_t rows, bool f16,
                  void **keep, int *n_keep, fr_error *err)
{
    uint64_t ne[2] = {cols, rows};
    size_t n = (size_t)(cols * rows);
    float *f = weights(n);
    void *data = f;
    uint64_t nbytes = n * 4;
    uint32_t type = GGUF_TENSOR_F32;
    if (f16 && rows > 1) {
        uint16_t *h = malloc(n * 2);
        for (size_t i = 0; i < n; i++)
            h[i] = to_f16(f[i]);
        free(f);
        data = h;
        nbytes = n * 2;
        type = GGUF_TENSOR_F16;
    } else if (rows == 1) {
        for (size_t i = 0; i < n; i++)
            f[i] = 1.0f + 0.1f * f[i];
    }
    keep[(*n_keep)++] = data;
    if (fr_gguf_add_tensor(w, name, rows == 1 ? 1 : 2, ne, type, data, nbytes, err) != FREE_OK)
        die(err);
}

/* arch: "llama", "llama3" (llama with rope_freqs.weight and base 500000), "qwen2" (Q/K/V
 * biases) or "phi3" (fused attn_qkv and gate/up). */
static void *make_model(const gguf_file *src, bool f16, bool vocab_only, const char *arch,
                        size_t *size)
{
    const bool llama3 = strcmp(arch, "llama3") == 0;
    const bool qwen2 = strcmp(arch, "qwen2") == 0, phi3 = strcmp(arch, "phi3") == 0;
    const char *name_arch = llama3 ? "llama" : arch;
    char key[96];
    fr_error err;
    fr_gguf_writer *w;
    void *keep[128];
    int n_keep = 0;
    fr_error_clear(&err);
    if (fr_gguf_writer_create(&w, &err) != FREE_OK)
        die(&err);
    fr_gguf_add_str(w, "general.architecture", name_arch, &err);
    add_vocab(w, src, &err);
    if (!vocab_only) {
#define K(s) (snprintf(key, sizeof key, "%s.%s", name_arch, s), key)
        fr_gguf_add_u32(w, K("embedding_length"), DIM, &err);
        fr_gguf_add_u32(w, K("block_count"), LAYERS, &err);
        fr_gguf_add_u32(w, K("attention.head_count"), 2, &err);
        fr_gguf_add_u32(w, K("attention.head_count_kv"), 1, &err);
        fr_gguf_add_u32(w, K("feed_forward_length"), FF, &err);
        fr_gguf_add_u32(w, K("context_length"), 64, &err);
        fr_gguf_add_f32(w, K("attention.layer_norm_rms_epsilon"), 1e-5f, &err);
        if (llama3)
            fr_gguf_add_f32(w, K("rope.freq_base"), 500000.0f, &err);
#undef K
        fr_gguf_add_u32(w, "free.exit_layer", 1, &err);
        const gguf_kv *tok = gguf_find_kv(src, "tokenizer.ggml.tokens");
        uint64_t nv = tok->arr_n;
        add_t(w, "token_embd.weight", DIM, nv, f16, keep, &n_keep, &err);
        add_t(w, "output_norm.weight", DIM, 1, f16, keep, &n_keep, &err);
        if (llama3) /* head size 4: two factors, 1 +- 0.05 */
            add_t(w, "rope_freqs.weight", 2, 1, f16, keep, &n_keep, &err);
        for (int l = 0; l < LAYERS; l++) {
            char name[64];
#define T(s, c, r) (snprintf(name, sizeof name, "blk.%d.%s.weight", l, s), \
                    add_t(w, name, c, r, f16, keep, &n_keep, &err))
#define B(s, n) (snprintf(name, sizeof name, "blk.%d.%s.bias", l, s), \
                 add_t(w, name, n, 1, false, keep, &n_keep, &err))
            T("attn_norm", DIM, 1);
            T("ffn_norm", DIM, 1);
            if (phi3) {
                T("attn_qkv", DIM, DIM + 2 * KVD);
            } else {
                T("attn_q", DIM, DIM);
                T("attn_k", DIM, KVD);
                T("attn_v", DIM, KVD);
            }
            if (qwen2) {
                B("attn_q", DIM);
                B("attn_k", KVD);
                B("attn_v", KVD);
            }
            T("attn_output", DIM, DIM);
            if (!phi3)
                T("ffn_gate", DIM, FF);
            T("ffn_up", DIM, phi3 ? 2 * FF : FF);
            T("ffn_down", FF, DIM);
#undef T
#undef B
        }
    }
    if (err.status != FREE_OK)
        die(&err);
    void *out;
    if (fr_gguf_writer_write_memory(w, &out, size, &err) != FREE_OK)
        die(&err);
    fr_gguf_writer_destroy(w);
    for (int i = 0; i < n_keep; i++)
        free(keep[i]);
    return out;
}

int main(int argc, char **argv)
{
    fr_error err;
    gguf_file *src;
    char dir[4096];
    if (argc != 3) {
        fprintf(stderr, "usage: make-seeds STORIES260K.GGUF OUTDIR\n");
        return 2;
    }
    fr_error_clear(&err);
    if (gguf_open(argv[1], &src, &err) != FREE_OK)
        die(&err);
    size_t n_vocab, n_f32, n_f16;
    unsigned char *vocab = make_model(src, false, true, "llama", &n_vocab);
    unsigned char *f32 = make_model(src, false, false, "llama", &n_f32);
    unsigned char *f16 = make_model(src, true, false, "llama", &n_f16);

    snprintf(dir, sizeof dir, "%s/data", argv[2]);
    write_bytes(dir, "vocab.gguf", vocab, n_vocab);
    write_bytes(dir, "tiny.gguf", f32, n_f32);

    snprintf(dir, sizeof dir, "%s/corpus/gguf", argv[2]);
    write_bytes(dir, "vocab-only.gguf", vocab, n_vocab);
    write_bytes(dir, "tiny-f32.gguf", f32, n_f32);
    write_bytes(dir, "tiny-f16.gguf", f16, n_f16);
    /* Mutations of the F16 model: GGUF v2, truncated in the header / key-values / tensor
     * infos / data, the tensor count past the end, a key length past the end. */
    unsigned char *m = malloc(n_f16);
    memcpy(m, f16, n_f16);
    m[4] = 2;
    write_bytes(dir, "tiny-v2.gguf", m, n_f16);
    write_bytes(dir, "trunc-header.gguf", f16, 20);
    write_bytes(dir, "trunc-kv.gguf", f16, 200);
    write_bytes(dir, "trunc-data.gguf", f16, n_f16 - 7);
    memcpy(m, f16, n_f16);
    m[8] = 0xff;
    write_bytes(dir, "n-tensors-huge.gguf", m, n_f16);
    memcpy(m, f16, n_f16);
    m[24 + 7] = 0x7f;
    write_bytes(dir, "key-len-huge.gguf", m, n_f16);
    memcpy(m, f16, n_f16);
    m[4] = 1;
    write_bytes(dir, "v1.gguf", m, 64);
    free(m);
    /* The other architectures (made last, so the files above stay as they were). */
    static const char *const archs[] = {"llama3", "qwen2", "phi3"};
    for (int i = 0; i < 3; i++) {
        size_t n_arch;
        unsigned char *a = make_model(src, true, false, archs[i], &n_arch);
        char name[64];
        snprintf(name, sizeof name, "tiny-%s.gguf", archs[i]);
        write_bytes(dir, name, a, n_arch);
        free(a);
    }
    free(vocab);
    free(f32);
    free(f16);
    gguf_close(src);
    return 0;
}
