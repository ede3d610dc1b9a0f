/* free-convert: rewrites a GGUF model with its weight matrices in another type.
 *
 *     free-convert IN.gguf OUT.gguf --type TYPE [--exit-layer N]
 *
 * TYPE f32 or f16: every tensor with two or more dimensions becomes that type, 1-D tensors
 * (norms) F32, every key is copied in place except general.file_type. F16 -> F32 is exact
 * and F32 -> F16 rounds to nearest even, so F16 -> F32 -> F16 reproduces a file's bytes.
 *
 * Any other TYPE (bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m, q5_k_m)
 * quantizes the way llama.cpp's llama-quantize does without an importance matrix: its
 * per-tensor mix rules and fallbacks (lib/quantize_mix.h), its quantizers (lib/quantize.h,
 * the same bytes), its order of tensors (by block) and of keys (general.quantization_version
 * and general.file_type last); every other key is copied, free.* included. Norms stay F32.
 *
 * Sources may be of any type libfree reads (lib/quant.h: F32, F16, BF16, Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), dequantized first; a tensor already of its target type is
 * copied. Progress goes to stderr, one line per tensor. */
#include "gguf.h"
#include "gguf_write.h"
#include "kernels.h"
#include "quant.h"
#include "quantize.h"
#include "quantize_mix.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define QUANTIZATION_VERSION 2u /* ggml's GGML_QNT_VERSION */

/* ---------------------------------------------------------------------------------- */
/* Sources as F32                                                                     */

static bool readable(uint32_t type)
{
    return fr_type_traits_of(type) != NULL;
}

/* Fills out[0..n) with the tensor's values as F32 (whole rows of t->ne[0]). */
static void to_f32(const gguf_tensor *t, float *out, uint64_t n)
{
    const uint64_t cols = t->ne[0], row_bytes = gguf_row_bytes(t->type, cols);
    const uint8_t *src = t->data;
    for (uint64_t r = 0; r < n / cols; r++)
        fr_dequantize_row(t->type, src + r * row_bytes, out + r * cols, (int64_t)cols);
}

/* ---------------------------------------------------------------------------------- */
/* The conversion                                                                     */

typedef struct convert_stats {
    uint64_t converted, kept, bytes_out, fallbacks;
} convert_stats;

typedef struct job {
    const gguf_file *in;
    const fr_quant_mix *mix; /* NULL: keep every tensor's type */
    uint32_t exit_layer;     /* a free.exit_layer value to write, or 0 to copy the file's */
    bool quiet;
} job;

/* A malloc'd copy of t's data in type dst (or NULL with a message). */
static void *convert_tensor(const gguf_tensor *t, const char *name, uint32_t dst,
                            uint64_t *nbytes, fr_error *err)
{
    const uint64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; /* checked by the reader */
    const uint64_t cols = t->ne[0];
    float *f = malloc(n ? (size_t)n * sizeof *f : 1);
    uint64_t out_bytes = gguf_row_bytes(dst, cols) * (n / cols);
    uint8_t *out = malloc(out_bytes ? (size_t)out_bytes : 1);
    if (!f || !out) {
        free(f);
        free(out);
        fr_fail(err, FREE_ERR_NOMEM, "out of memory converting tensor %s", name);
        return NULL;
    }
    to_f32(t, f, n);
    if (dst != GGUF_TENSOR_F32 && dst != GGUF_TENSOR_F16)
        for (uint64_t i = 0; i < n; i++)
            if (!isfinite(f[i])) {
                fr_fail(err, FREE_ERR_FORMAT, "tensor %s: element %llu is %g; only finite "
                        "values can be quantized", name, (unsigned long long)i, (double)f[i]);
                free(f);
                free(out);
                return NULL;
            }
    uint64_t done = 0;
    for (uint64_t r = 0; r < n / cols; r++)
        done += fr_quantize_row(dst, f + r * cols, out + done, (int64_t)cols);
    free(f);
    if (done != out_bytes) {
        free(out);
        fr_fail(err, FREE_ERR_INTERNAL, "tensor %s: %llu bytes written, %llu expected", name,
                (unsigned long long)done, (unsigned long long)out_bytes);
        return NULL;
    }
    *nbytes = out_bytes;
    return out;
}

static char *name_of(const gguf_tensor *t)
{
    char *s = malloc((size_t)t->name.len + 1);
    if (s) {
        memcpy(s, t->name.ptr, (size_t)t->name.len);
        s[t->name.len] = '\0';
    }
    return s;
}

typedef struct entry {
    const gguf_tensor *t;
    char *name;
} entry;

static int cmp_entry(const void *a, const void *b)
{
    return fr_quant_tensor_order(((const entry *)a)->name, ((const entry *)b)->name);
}

/* Copies the key-values: free.exit_layer replaced when asked; for f32/f16 the file type in
 * place; for the quantized mixes general.quantization_version and general.file_type last,
 * as llama-quantize writes them. */
static free_status write_keys(const job *jb, fr_gguf_writer *w, fr_error *err)
{
    const gguf_file *in = jb->in;
    const bool quant = jb->mix && jb->mix->rule != FR_MIX_FLOAT;
    bool have_file_type = !jb->mix, have_exit = jb->exit_layer == 0;
    for (uint64_t i = 0; i < gguf_n_kv(in); i++) {
        const gguf_kv *kv = gguf_kv_at(in, i);
        if (jb->mix && gguf_str_eq(kv->key, "general.file_type")) {
            if (!quant) {
                have_file_type = true;
                FR_TRY(fr_gguf_add_u32(w, "general.file_type", jb->mix->file_type, err));
            }
        } else if (quant && gguf_str_eq(kv->key, "general.quantization_version")) {
            /* written below */
        } else if (jb->exit_layer && gguf_str_eq(kv->key, "free.exit_layer")) {
            have_exit = true;
            FR_TRY(fr_gguf_add_u32(w, "free.exit_layer", jb->exit_layer, err));
        } else {
            FR_TRY(fr_gguf_add_kv_copy(w, kv, err));
        }
    }
    if (!have_exit)
        FR_TRY(fr_gguf_add_u32(w, "free.exit_layer", jb->exit_layer, err));
    if (quant)
        FR_TRY(fr_gguf_add_u32(w, "general.quantization_version", QUANTIZATION_VERSION, err));
    if (!have_file_type)
        FR_TRY(fr_gguf_add_u32(w, "general.file_type", jb->mix->file_type, err));
    return FREE_OK;
}

/* The type tensor e gets. */
static uint32_t target_type(const job *jb, const fr_quant_plan *plan, const entry *e,
                            bool *fallback)
{
    *fallback = false;
    if (!jb->mix)
        return e->t->type;
    if (e->t->n_dims < 2)
        return GGUF_TENSOR_F32;
    if (jb->mix->rule == FR_MIX_FLOAT)
        return jb->mix->base;
    return fr_quant_plan_type(plan, e->t, e->name, fallback);
}

static free_status convert(const job *jb, const char *out_path, convert_stats *stats,
                           fr_error *err)
{
    const gguf_file *in = jb->in;
    const uint64_t nt = gguf_n_tensors(in);
    const bool quant = jb->mix && jb->mix->rule != FR_MIX_FLOAT;
    fr_gguf_writer *w = NULL;
    void **owned = calloc(nt ? (size_t)nt : 1, sizeof *owned);
    entry *order = calloc(nt ? (size_t)nt : 1, sizeof *order);
    if (!owned || !order) {
        free(owned);
        free(order);
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    }
    free_status st = FREE_OK;
    for (uint64_t i = 0; i < nt && st == FREE_OK; i++) {
        order[i].t = gguf_tensor_at(in, i);
        if (!(order[i].name = name_of(order[i].t)))
            st = fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    }
    if (st == FREE_OK && quant)
        qsort(order, (size_t)nt, sizeof *order, cmp_entry);
    fr_quant_plan plan;
    if (jb->mix)
        fr_quant_plan_init(&plan, jb->mix, in);
    if (st == FREE_OK)
        st = fr_gguf_writer_create(&w, err);
    if (st == FREE_OK && quant)
        fr_gguf_writer_pad_end(w, true); /* the layout of llama-quantize's files */
    if (st == FREE_OK)
        st = write_keys(jb, w, err);
    for (uint64_t i = 0; i < nt && st == FREE_OK; i++) {
        const entry *e = &order[i];
        const gguf_tensor *t = e->t;
        bool fallback;
        const uint32_t want = target_type(jb, &plan, e, &fallback);
        const void *data = t->data;
        uint64_t nbytes = t->nbytes;
        if (t->type != want) {
            if (!readable(t->type)) {
                st = fr_fail(err, FREE_ERR_UNSUPPORTED, "tensor %s has type %s, which "
                             "free-convert cannot read (it reads %s)", e->name,
                             gguf_tensor_type_name(t->type), fr_supported_types());
                break;
            }
            if (!(data = owned[i] = convert_tensor(t, e->name, want, &nbytes, err))) {
                st = err->status;
                break;
            }
            stats->converted++;
        } else {
            stats->kept++;
        }
        stats->fallbacks += fallback;
        if (!jb->quiet)
            fprintf(stderr, "[%4llu/%4llu] %-32s %-6s -> %-6s%s\n", (unsigned long long)i + 1,
                    (unsigned long long)nt, e->name, gguf_tensor_type_name(t->type),
                    gguf_tensor_type_name(want),
                    fallback ? " (fallback: row length does not fit the mix's type)" : "");
        st = fr_gguf_add_tensor(w, e->name, t->n_dims, t->ne, want, data, nbytes, err);
    }
    if (st == FREE_OK)
        st = fr_gguf_writer_size(w, &stats->bytes_out, err);
    if (st == FREE_OK)
        st = fr_gguf_writer_write_path(w, out_path, err);
    fr_gguf_writer_destroy(w);
    for (uint64_t i = 0; i < nt; i++) {
        free(owned[i]);
        free(order[i].name);
    }
    free(owned);
    free(order);
    return st;
}

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: free-convert IN.gguf OUT.gguf [--type TYPE] [--exit-layer N] [--quiet]\n"
            "  --type f32|f16: every weight matrix (2-D or more) in that type, 1-D tensors F32.\n"
            "  --type bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k|q4_k_m|q5_k_m: quantizes\n"
            "  as llama.cpp's llama-quantize does (same mix rules, fallbacks and bytes; q4_k\n"
            "  and q5_k are pure: every matrix that type, like llama-quantize --pure).\n"
            "  Sources may be of any type libfree reads (F32 ... Q6_K). Without --type\n"
            "  every tensor is copied unchanged. Progress on stderr (--quiet: none).\n"
            "  --exit-layer N: writes free.exit_layer = N (the early-exit layer libfree\n"
            "  uses by default; 1 <= N < the model's block count).\n");
}

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int main(int argc, char **argv)
{
    const char *paths[2] = {NULL, NULL}, *type = NULL;
    long exit_layer = 0;
    int n_paths = 0;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
            type = argv[++i];
        } else if (strncmp(argv[i], "--type=", 7) == 0) {
            type = argv[i] + 7;
        } else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            quiet = true;
        } else if (strcmp(argv[i], "--exit-layer") == 0 && i + 1 < argc) {
            char *end;
            exit_layer = strtol(argv[++i], &end, 10);
            if (*end || exit_layer < 1 || exit_layer > 65535) {
                fprintf(stderr, "free-convert: --exit-layer needs a layer number >= 1\n");
                return 2;
            }
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "free-convert: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (n_paths < 2) {
            paths[n_paths++] = argv[i];
        } else {
            fprintf(stderr, "free-convert: unexpected argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (n_paths != 2 || (!type && !exit_layer)) {
        usage(stderr);
        return 2;
    }
    const fr_quant_mix *mix = NULL;
    if (type && !(mix = fr_quant_mix_find(type))) {
        fprintf(stderr, "free-convert: --type must be one of %s, not %s\n",
                fr_quant_mix_names(), type);
        return 2;
    }
    /* Writing over the input would truncate the file while it is mapped. */
    if (same_file(paths[0], paths[1])) {
        fprintf(stderr, "free-convert: %s and %s are the same file\n", paths[0], paths[1]);
        return 2;
    }
    fr_error err;
    fr_error_clear(&err);
    gguf_file *in = NULL;
    if (gguf_open(paths[0], &in, &err) != FREE_OK) {
        fprintf(stderr, "free-convert: error: %s\n", err.msg);
        return 1;
    }
    convert_stats stats = {0, 0, 0, 0};
    free_status st = FREE_OK;
    uint32_t n_layer = 0;
    bool found = false;
    if (exit_layer) {
        st = gguf_get_u32(in, "llama.block_count", &n_layer, &found, &err);
        if (st == FREE_OK && found && (uint32_t)exit_layer >= n_layer)
            st = fr_fail(&err, FREE_ERR_INVALID_ARG, "--exit-layer %ld must be below the "
                         "model's %u blocks", exit_layer, n_layer);
    }
    job jb = {in, mix, (uint32_t)exit_layer, quiet};
    if (st == FREE_OK)
        st = convert(&jb, paths[1], &stats, &err);
    size_t in_size = gguf_file_size(in);
    uint64_t n_tensors = gguf_n_tensors(in);
    gguf_close(in);
    if (st != FREE_OK) {
        fprintf(stderr, "free-convert: error: %s: %s\n", free_strerror(st), err.msg);
        return 1;
    }
    printf("free-convert: %s (%zu bytes) -> %s (%llu bytes, %s): %llu tensors, %llu "
           "converted, %llu unchanged, %llu fallbacks\n",
           paths[0], in_size, paths[1], (unsigned long long)stats.bytes_out,
           mix ? mix->name : "types kept", (unsigned long long)n_tensors,
           (unsigned long long)stats.converted, (unsigned long long)stats.kept,
           (unsigned long long)stats.fallbacks);
    return 0;
}
