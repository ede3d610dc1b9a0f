/* Bytes of weights per layer, read from a GGUF file's tensor table.
 * TODO: replace with free_model_weight_bytes / free_model_head_bytes once the public API
 * has them (the library already counts the same matrices internally); until then this
 * walks the header itself, checking every length against the file size. */
#include "bench.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    FILE *f;
    uint64_t size; /* file size */
    char *err;
    size_t errcap;
    bool failed;
} reader;

static int fail(reader *r, const char *fmt, ...)
{
    if (!r->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errcap, fmt, ap);
        va_end(ap);
    }
    r->failed = true;
    return -1;
}

static int read_bytes(reader *r, void *dst, size_t n, const char *what)
{
    if (r->failed)
        return -1;
    if (fread(dst, 1, n, r->f) != n)
        return fail(r, "GGUF header: the file ends inside %s", what);
    return 0;
}

static uint32_t read_u32(reader *r, const char *what)
{
    uint32_t v = 0;
    read_bytes(r, &v, sizeof v, what);
    return v;
}

static uint64_t read_u64(reader *r, const char *what)
{
    uint64_t v = 0;
    read_bytes(r, &v, sizeof v, what);
    return v;
}

static int skip(reader *r, uint64_t n, const char *what)
{
    if (r->failed)
        return -1;
    long pos = ftell(r->f);
    if (pos < 0 || n > r->size - (uint64_t)pos)
        return fail(r, "GGUF header: %s of %llu bytes runs past the end of the file (%llu)",
                    what, (unsigned long long)n, (unsigned long long)r->size);
    if (fseek(r->f, (long)n, SEEK_CUR) != 0)
        return fail(r, "GGUF header: cannot seek past %s", what);
    return 0;
}

/* Reads a string into buf (truncated to cap - 1) or, with buf NULL, skips it. */
static int read_string(reader *r, char *buf, size_t cap, const char *what)
{
    uint64_t n = read_u64(r, what);
    if (r->failed)
        return -1;
    if (!buf)
        return skip(r, n, what);
    size_t keep = n < cap - 1 ? (size_t)n : cap - 1;
    if (read_bytes(r, buf, keep, what))
        return -1;
    buf[keep] = '\0';
    return skip(r, n - keep, what);
}

/* Size of a scalar metadata value type, 0 for string/array/unknown. */
static size_t scalar_size(uint32_t type)
{
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < sizeof sizes / sizeof sizes[0] ? sizes[type] : 0;
}

static int skip_value(reader *r, uint32_t type, const char *key)
{
    enum { STRING = 8, ARRAY = 9 };
    if (type == STRING)
        return read_string(r, NULL, 0, key);
    if (type != ARRAY) {
        size_t n = scalar_size(type);
        if (n == 0)
            return fail(r, "GGUF header: key %s has unknown value type %u", key, type);
        return skip(r, n, key);
    }
    uint32_t et = read_u32(r, key);
    uint64_t count = read_u64(r, key);
    if (r->failed)
        return -1;
    if (et == STRING) {
        for (uint64_t i = 0; i < count && !r->failed; i++)
            read_string(r, NULL, 0, key);
        return r->failed ? -1 : 0;
    }
    size_t es = scalar_size(et);
    if (es == 0)
        return fail(r, "GGUF header: array %s has element type %u", key, et);
    if (count > r->size / es)
        return fail(r, "GGUF header: array %s of %llu elements is larger than the file", key,
                    (unsigned long long)count);
    return skip(r, count * es, key);
}

/* Bytes of n elements of a ggml tensor type; 0 when the type is unknown here. */
static uint64_t type_bytes(uint32_t type, uint64_t n)
{
    switch (type) {
    case 0: return n * 4;             /* F32 */
    case 1: return n * 2;             /* F16 */
    case 30: return n * 2;            /* BF16 */
    case 2: return n / 32 * 18;       /* Q4_0 */
    case 3: return n / 32 * 20;       /* Q4_1 */
    case 6: return n / 32 * 22;       /* Q5_0 */
    case 7: return n / 32 * 24;       /* Q5_1 */
    case 8: return n / 32 * 34;       /* Q8_0 */
    default: return 0;
    }
}

/* The block index of a per-layer matrix libfree reads while decoding, or -1. */
static long layer_matrix(const char *name)
{
    static const char *const parts[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight",
                                        "attn_output.weight", "ffn_gate.weight",
                                        "ffn_up.weight", "ffn_down.weight"};
    if (strncmp(name, "blk.", 4) != 0)
        return -1;
    char *end;
    long l = strtol(name + 4, &end, 10);
    if (end == name + 4 || *end != '.' || l < 0 || l > 100000)
        return -1;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (strcmp(end + 1, parts[i]) == 0)
            return l;
    return -1;
}

static int read_table(reader *r, fb_weight_bytes *out)
{
    char magic[4];
    if (read_bytes(r, magic, 4, "the magic") || memcmp(magic, "GGUF", 4) != 0)
        return fail(r, "not a GGUF file (bad magic)");
    uint32_t version = read_u32(r, "the version");
    if (!r->failed && version != 2 && version != 3)
        return fail(r, "GGUF version %u is not supported (2 or 3)", version);
    uint64_t n_tensors = read_u64(r, "the tensor count");
    uint64_t n_kv = read_u64(r, "the key count");
    if (r->failed)
        return -1;
    /* Every entry takes at least 8 bytes, so larger counts cannot be real. */
    if (n_tensors > r->size / 8 || n_kv > r->size / 8)
        return fail(r, "GGUF header: %llu tensors / %llu keys cannot fit in %llu bytes",
                    (unsigned long long)n_tensors, (unsigned long long)n_kv,
                    (unsigned long long)r->size);
    for (uint64_t i = 0; i < n_kv && !r->failed; i++) {
        char key[256];
        read_string(r, key, sizeof key, "a key");
        uint32_t type = read_u32(r, key);
        skip_value(r, type, key);
    }
    uint64_t *layer = NULL;
    int32_t n_layer = 0;
    uint64_t head = 0, embd = 0, total = 0;
    for (uint64_t i = 0; i < n_tensors && !r->failed; i++) {
        char name[256];
        read_string(r, name, sizeof name, "a tensor name");
        uint32_t n_dims = read_u32(r, name);
        if (!r->failed && (n_dims == 0 || n_dims > 4)) {
            fail(r, "GGUF header: tensor %s has %u dimensions", name, n_dims);
            break;
        }
        uint64_t n = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            uint64_t ne = read_u64(r, name);
            n = ne && n > UINT64_MAX / ne ? UINT64_MAX : n * ne;
        }
        uint32_t type = read_u32(r, name);
        read_u64(r, name); /* offset: not needed for sizes */
        if (r->failed)
            break;
        uint64_t bytes = type_bytes(type, n);
        if (n == UINT64_MAX || (bytes == 0 && n != 0)) {
            fail(r, "tensor %s: type %u is not known to free-bench", name, type);
            break;
        }
        total += bytes;
        long l = layer_matrix(name);
        if (l >= n_layer) {
            uint64_t *grown = realloc(layer, (size_t)(l + 1) * sizeof *layer);
            if (!grown) {
                fail(r, "out of memory");
                break;
            }
            memset(grown + n_layer, 0, (size_t)(l + 1 - n_layer) * sizeof *grown);
            layer = grown;
            n_layer = (int32_t)l + 1;
        }
        if (l >= 0)
            layer[l] += bytes;
        else if (strcmp(name, "output.weight") == 0)
            head = bytes;
        else if (strcmp(name, "token_embd.weight") == 0)
            embd = bytes;
    }
    if (r->failed) {
        free(layer);
        return -1;
    }
    out->layer = layer;
    out->n_layer = n_layer;
    out->head = head ? head : embd; /* tied embeddings: the head reads token_embd */
    out->total = total;
    return 0;
}

int fb_gguf_weight_bytes(const char *path, fb_weight_bytes *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    reader r = {fopen(path, "rb"), 0, err, errcap, false};
    if (!r.f) {
        snprintf(err, errcap, "cannot open %s", path);
        return -1;
    }
    if (fseek(r.f, 0, SEEK_END) == 0) {
        long sz = ftell(r.f);
        r.size = sz > 0 ? (uint64_t)sz : 0;
    }
    rewind(r.f);
    int rc = read_table(&r, out);
    fclose(r.f);
    return rc;
}

void fb_weight_bytes_destroy(fb_weight_bytes *w)
{
    free(w->layer);
    w->layer = NULL;
    w->n_layer = 0;
}

uint64_t fb_layer_range_bytes(const fb_weight_bytes *w, int32_t l0, int32_t l1)
{
    uint64_t s = 0;
    for (int32_t l = l0 < 0 ? 0 : l0; l < l1 && l < w->n_layer; l++)
        s += w->layer[l];
    return s;
}
