/* free-convert: rewrites a GGUF model with its weight matrices in F32 or F16.
 *
 *     free-convert IN.gguf OUT.gguf --type f32|f16
 *
 * Every tensor with two or more dimensions (the embedding, the output head and every
 * weight matrix) becomes the requested type; one-dimensional tensors (norms) become F32.
 * Sources may be F32, F16 or the legacy quantized types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0),
 * which are dequantized. Every key-value is copied unchanged except general.file_type
 * (0 = all F32, 1 = mostly F16). F16 -> F32 is exact and F32 -> F16 rounds to nearest even,
 * so converting an F16 file to F32 and back reproduces its bytes. */
#include "gguf.h"
#include "gguf_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FILE_TYPE_ALL_F32 0u
#define FILE_TYPE_MOSTLY_F16 1u

/* ---------------------------------------------------------------------------------- */
/* IEEE 754 binary16 <-> binary32                                                     */

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf, or NaN with its payload */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        /* Subnormal: shift the leading one up into the implicit bit position. */
        uint32_t e = 113;
        while (!(man & 0x400)) {
            man <<= 1;
            e--;
        }
        bits = sign | (e << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest, ties to even; overflow becomes inf; NaN stays NaN (payload kept). */
static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) {
        if (man == 0)
            return sign | 0x7c00;
        uint16_t payload = (uint16_t)(man >> 13);
        return sign | 0x7c00 | (payload ? payload : 0x200);
    }
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31)
        return sign | 0x7c00;
    if (e > 0) {
        uint32_t h = ((uint32_t)e << 10) | (man >> 13);
        uint32_t rest = man & 0x1fff;
        if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
            h++; /* a carry into the exponent is correct, up to inf */
        return sign | (uint16_t)h;
    }
    /* Subnormal half (or zero): value = m * 2^-24 with m = full mantissa >> shift. */
    uint32_t shift = (uint32_t)(14 - e);
    if (shift > 24)
        return sign;
    uint32_t full = man | 0x800000;
    uint32_t m = full >> shift;
    uint32_t rest = full & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (m & 1)))
        m++;
    return sign | (uint16_t)m;
}

/* ---------------------------------------------------------------------------------- */
/* Dequantization of the legacy ggml block formats (32 weights per block)             */

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void dequant_block(uint32_t type, const uint8_t *b, float *y)
{
    float d = f16_to_f32(le16(b));
    switch (type) {
    case GGUF_TENSOR_Q8_0:
        for (int j = 0; j < 32; j++)
            y[j] = (float)(int8_t)b[2 + j] * d;
        break;
    case GGUF_TENSOR_Q4_0:
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b[2 + j] & 0x0f) - 8) * d;
            y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
        }
        break;
    case GGUF_TENSOR_Q4_1: {
        float m = f16_to_f32(le16(b + 2));
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b[4 + j] & 0x0f) * d + m;
            y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
        }
        break;
    }
    case GGUF_TENSOR_Q5_0:
    case GGUF_TENSOR_Q5_1: {
        bool q51 = type == GGUF_TENSOR_Q5_1;
        float m = q51 ? f16_to_f32(le16(b + 2)) : 0.0f;
        const uint8_t *qhp = b + (q51 ? 4 : 2), *qs = qhp + 4;
        uint32_t qh = (uint32_t)qhp[0] | (uint32_t)qhp[1] << 8 | (uint32_t)qhp[2] << 16 |
                      (uint32_t)qhp[3] << 24;
        int bias = q51 ? 0 : 16;
        for (int j = 0; j < 16; j++) {
            int lo = (qs[j] & 0x0f) | (int)(((qh >> j) << 4) & 0x10);
            int hi = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)(lo - bias) * d + m;
            y[j + 16] = (float)(hi - bias) * d + m;
        }
        break;
    }
    default:
        break;
    }
}

/* Fills out[0..n) with the tensor's values as F32. */
static void to_f32(const gguf_tensor *t, float *out, uint64_t n)
{
    const uint8_t *src = t->data;
    if (t->type == GGUF_TENSOR_F32) {
        memcpy(out, src, (size_t)n * 4);
    } else if (t->type == GGUF_TENSOR_F16) {
        for (uint64_t i = 0; i < n; i++)
            out[i] = f16_to_f32(le16(src + 2 * i));
    } else {
        uint64_t block_bytes = gguf_row_bytes(t->type, 32);
        for (uint64_t i = 0; i < n / 32; i++)
            dequant_block(t->type, src + i * block_bytes, out + i * 32);
    }
}

/* ---------------------------------------------------------------------------------- */
/* The conversion                                                                     */

typedef struct convert_stats {
    uint64_t converted, kept, bytes_out;
} convert_stats;

/* Returns a malloc'd buffer with t in type dst (or NULL with a message on failure). */
static void *convert_tensor(const gguf_tensor *t, uint32_t dst, uint64_t *nbytes,
                            fr_error *err)
{
    uint64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; /* checked by the reader */
    float *f = malloc(n ? (size_t)n * sizeof *f : 1);
    if (!f) {
        fr_fail(err, FREE_ERR_NOMEM, "out of memory converting tensor %.*s", (int)t->name.len,
                t->name.ptr);
        return NULL;
    }
    to_f32(t, f, n);
    *nbytes = n * 4;
    if (dst == GGUF_TENSOR_F32)
        return f;
    uint16_t *h = malloc(n ? (size_t)n * sizeof *h : 1);
    if (!h) {
        free(f);
        fr_fail(err, FREE_ERR_NOMEM, "out of memory converting tensor %.*s", (int)t->name.len,
                t->name.ptr);
        return NULL;
    }
    for (uint64_t i = 0; i < n; i++)
        h[i] = f32_to_f16(f[i]);
    free(f);
    *nbytes = n * 2;
    return h;
}

static bool convertible(uint32_t type)
{
    return gguf_row_bytes(type, 32) != 0;
}

/* dst: the matrix type to write, or UINT32_MAX to keep every tensor as it is.
 * exit_layer: a free.exit_layer value to write, or 0 to copy the file's. */
static free_status convert(const gguf_file *in, uint32_t dst, uint32_t exit_layer,
                           const char *out_path, convert_stats *stats, fr_error *err)
{
    fr_gguf_writer *w = NULL;
    uint64_t nt = gguf_n_tensors(in);
    void **owned = calloc(nt ? (size_t)nt : 1, sizeof *owned);
    if (!owned)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    free_status st = fr_gguf_writer_create(&w, err);
    const bool keep = dst == UINT32_MAX;
    uint32_t file_type = dst == GGUF_TENSOR_F16 ? FILE_TYPE_MOSTLY_F16 : FILE_TYPE_ALL_F32;
    bool have_file_type = keep, have_exit = exit_layer == 0;
    /* Keys keep their order; general.file_type and free.exit_layer get new values in
     * place. */
    for (uint64_t i = 0; i < gguf_n_kv(in) && st == FREE_OK; i++) {
        const gguf_kv *kv = gguf_kv_at(in, i);
        if (!keep && gguf_str_eq(kv->key, "general.file_type")) {
            have_file_type = true;
            st = fr_gguf_add_u32(w, "general.file_type", file_type, err);
        } else if (exit_layer && gguf_str_eq(kv->key, "free.exit_layer")) {
            have_exit = true;
            st = fr_gguf_add_u32(w, "free.exit_layer", exit_layer, err);
        } else {
            st = fr_gguf_add_kv_copy(w, kv, err);
        }
    }
    if (st == FREE_OK && !have_file_type)
        st = fr_gguf_add_u32(w, "general.file_type", file_type, err);
    if (st == FREE_OK && !have_exit)
        st = fr_gguf_add_u32(w, "free.exit_layer", exit_layer, err);
    for (uint64_t i = 0; i < nt && st == FREE_OK; i++) {
        const gguf_tensor *t = gguf_tensor_at(in, i);
        char name[256];
        if (t->name.len >= sizeof name) {
            st = fr_fail(err, FREE_ERR_UNSUPPORTED, "tensor name of %llu bytes is too long",
                         (unsigned long long)t->name.len);
            break;
        }
        memcpy(name, t->name.ptr, (size_t)t->name.len);
        name[t->name.len] = '\0';
        if (!keep && !convertible(t->type)) {
            st = fr_fail(err, FREE_ERR_UNSUPPORTED, "tensor %s has type %s, which cannot be "
                         "converted", name, gguf_tensor_type_name(t->type));
            break;
        }
        uint32_t want = keep ? t->type : t->n_dims >= 2 ? dst : GGUF_TENSOR_F32;
        const void *data = t->data;
        uint64_t nbytes = t->nbytes;
        if (t->type != want) {
            data = owned[i] = convert_tensor(t, want, &nbytes, err);
            if (!data) {
                st = err->status;
                break;
            }
            stats->converted++;
        } else {
            stats->kept++;
        }
        st = fr_gguf_add_tensor(w, name, t->n_dims, t->ne, want, data, nbytes, err);
    }
    if (st == FREE_OK)
        st = fr_gguf_writer_size(w, &stats->bytes_out, err);
    if (st == FREE_OK)
        st = fr_gguf_writer_write_path(w, out_path, err);
    fr_gguf_writer_destroy(w);
    for (uint64_t i = 0; i < nt; i++)
        free(owned[i]);
    free(owned);
    return st;
}

static void usage(FILE *fp)
{
    fprintf(fp, "usage: free-convert IN.gguf OUT.gguf [--type f32|f16] [--exit-layer N]\n"
                "  --type: writes every weight matrix (2-D or more) as F32 or F16 and every\n"
                "  1-D tensor as F32; sources may be F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.\n"
                "  Without --type every tensor is copied unchanged.\n"
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
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
            type = argv[++i];
        } else if (strncmp(argv[i], "--type=", 7) == 0) {
            type = argv[i] + 7;
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
    uint32_t dst = UINT32_MAX;
    if (!type) {
        /* keep every tensor's type */
    } else if (strcmp(type, "f32") == 0 || strcmp(type, "F32") == 0) {
        dst = GGUF_TENSOR_F32;
    } else if (strcmp(type, "f16") == 0 || strcmp(type, "F16") == 0) {
        dst = GGUF_TENSOR_F16;
    } else {
        fprintf(stderr, "free-convert: --type must be f32 or f16, not %s\n", type);
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
    convert_stats stats = {0, 0, 0};
    free_status st = FREE_OK;
    uint32_t n_layer = 0;
    bool found = false;
    if (exit_layer) {
        st = gguf_get_u32(in, "llama.block_count", &n_layer, &found, &err);
        if (st == FREE_OK && found && (uint32_t)exit_layer >= n_layer)
            st = fr_fail(&err, FREE_ERR_INVALID_ARG, "--exit-layer %ld must be below the "
                         "model's %u blocks", exit_layer, n_layer);
    }
    if (st == FREE_OK)
        st = convert(in, dst, (uint32_t)exit_layer, paths[1], &stats, &err);
    size_t in_size = gguf_file_size(in);
    uint64_t n_tensors = gguf_n_tensors(in);
    gguf_close(in);
    if (st != FREE_OK) {
        fprintf(stderr, "free-convert: error: %s: %s\n", free_strerror(st), err.msg);
        return 1;
    }
    printf("free-convert: %s (%zu bytes) -> %s (%llu bytes, %s): %llu tensors, %llu "
           "converted, %llu unchanged\n",
           paths[0], in_size, paths[1], (unsigned long long)stats.bytes_out,
           dst == GGUF_TENSOR_F16 ? "F16 matrices" : "all F32", (unsigned long long)n_tensors,
           (unsigned long long)stats.converted, (unsigned long long)stats.kept);
    return 0;
}
