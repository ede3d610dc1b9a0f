/* GGUF v3 writer: the in-memory lists are serialized in one pass, through the same code
 * for files and memory buffers, so both produce identical bytes. */
#include "gguf_write.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_ALIGNMENT 32u
#define MAX_KEY_LEN 65535u

typedef struct wkv {
    char *key;
    uint32_t type;
    uint8_t *val; /* the encoded value after the type field (arrays: element type, count, ...) */
    size_t val_size;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    const void *data;
    uint64_t nbytes;
} wtensor;

struct fr_gguf_writer {
    wkv *kvs;
    size_t n_kv, cap_kv;
    wtensor *tensors;
    size_t n_tensors, cap_tensors;
    bool pad_end; /* zeros after the last tensor up to the alignment */
};

free_status fr_gguf_writer_create(fr_gguf_writer **out, fr_error *err)
{
    if (!out)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_gguf_writer_create: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    return FREE_OK;
}

void fr_gguf_writer_destroy(fr_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val);
    }
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w);
}

static const wkv *find_kv(const fr_gguf_writer *w, const char *key)
{
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0)
            return &w->kvs[i];
    return NULL;
}

void fr_gguf_remove_kv(fr_gguf_writer *w, const char *key)
{
    const wkv *kv = w && key ? find_kv(w, key) : NULL;
    if (!kv)
        return;
    size_t i = (size_t)(kv - w->kvs);
    free(w->kvs[i].key);
    free(w->kvs[i].val);
    memmove(&w->kvs[i], &w->kvs[i + 1], (w->n_kv - i - 1) * sizeof *w->kvs);
    w->n_kv--;
}

static free_status grow(void **arr, size_t *cap, size_t n, size_t elem, fr_error *err)
{
    if (n < *cap)
        return FREE_OK;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory growing the GGUF writer");
    *arr = p;
    *cap = ncap;
    return FREE_OK;
}

/* Takes ownership of val (freed on failure too). */
static free_status add_kv(fr_gguf_writer *w, const char *key, uint32_t type, uint8_t *val,
                          size_t val_size, fr_error *err)
{
    free_status st = FREE_OK;
    char *k = NULL;
    if (!w || !key)
        st = fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: NULL writer or key");
    else if (key[0] == '\0' || strlen(key) > MAX_KEY_LEN)
        st = fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: key length %zu not in 1..%u",
                     strlen(key), MAX_KEY_LEN);
    else if (find_kv(w, key))
        st = fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: duplicate key %s", key);
    else if (strcmp(key, "general.alignment") == 0) {
        uint32_t a = 0;
        if (type == GGUF_TYPE_UINT32)
            memcpy(&a, val, 4);
        if (type != GGUF_TYPE_UINT32 || a == 0 || (a & (a - 1)) != 0)
            st = fr_fail(err, FREE_ERR_INVALID_ARG,
                         "GGUF writer: general.alignment must be a u32 power of two");
    }
    if (st == FREE_OK)
        st = grow((void **)&w->kvs, &w->cap_kv, w->n_kv, sizeof *w->kvs, err);
    if (st == FREE_OK && !(k = strdup(key)))
        st = fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    if (st != FREE_OK) {
        free(val);
        return st;
    }
    w->kvs[w->n_kv++] = (wkv){k, type, val, val_size};
    return FREE_OK;
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *out = malloc(n ? n : 1);
    if (out && n)
        memcpy(out, p, n);
    return out;
}

static free_status add_scalar(fr_gguf_writer *w, const char *key, uint32_t type,
                              const void *v, size_t n, fr_error *err)
{
    uint8_t *val = dup_bytes(v, n);
    if (!val)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    return add_kv(w, key, type, val, n, err);
}

free_status fr_gguf_add_u32(fr_gguf_writer *w, const char *key, uint32_t v, fr_error *err)
{
    return add_scalar(w, key, GGUF_TYPE_UINT32, &v, 4, err);
}

free_status fr_gguf_add_i32(fr_gguf_writer *w, const char *key, int32_t v, fr_error *err)
{
    return add_scalar(w, key, GGUF_TYPE_INT32, &v, 4, err);
}

free_status fr_gguf_add_f32(fr_gguf_writer *w, const char *key, float v, fr_error *err)
{
    return add_scalar(w, key, GGUF_TYPE_FLOAT32, &v, 4, err);
}

free_status fr_gguf_add_bool(fr_gguf_writer *w, const char *key, bool v, fr_error *err)
{
    uint8_t b = v ? 1 : 0;
    return add_scalar(w, key, GGUF_TYPE_BOOL, &b, 1, err);
}

free_status fr_gguf_add_str(fr_gguf_writer *w, const char *key, const char *v, fr_error *err)
{
    if (!v)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: NULL string for key %s",
                       key ? key : "(null)");
    uint64_t len = strlen(v);
    uint8_t *val = malloc(8 + len);
    if (!val)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    memcpy(val, &len, 8);
    memcpy(val + 8, v, len);
    return add_kv(w, key, GGUF_TYPE_STRING, val, 8 + len, err);
}

/* An array value: element type, count, then payload bytes. */
static free_status add_array(fr_gguf_writer *w, const char *key, uint32_t et, uint64_t n,
                             const void *payload, size_t payload_size, fr_error *err)
{
    if (payload_size > SIZE_MAX - 12)
        return fr_fail(err, FREE_ERR_NOMEM, "GGUF writer: array for key %s is too large",
                       key ? key : "(null)");
    uint8_t *val = malloc(12 + payload_size);
    if (!val)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for array %s",
                       key ? key : "(null)");
    memcpy(val, &et, 4);
    memcpy(val + 4, &n, 8);
    if (payload_size)
        memcpy(val + 12, payload, payload_size);
    return add_kv(w, key, GGUF_TYPE_ARRAY, val, 12 + payload_size, err);
}

static free_status add_arr_scalar(fr_gguf_writer *w, const char *key, uint32_t et,
                                  const void *v, uint64_t n, fr_error *err)
{
    size_t bytes;
    if (n && !v)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: NULL array for key %s",
                       key ? key : "(null)");
    if (__builtin_mul_overflow(n, (uint64_t)4, &bytes))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: array count %llu too large",
                       (unsigned long long)n);
    return add_array(w, key, et, n, v, bytes, err);
}

free_status fr_gguf_add_arr_f32(fr_gguf_writer *w, const char *key, const float *v,
                                uint64_t n, fr_error *err)
{
    return add_arr_scalar(w, key, GGUF_TYPE_FLOAT32, v, n, err);
}

free_status fr_gguf_add_arr_i32(fr_gguf_writer *w, const char *key, const int32_t *v,
                                uint64_t n, fr_error *err)
{
    return add_arr_scalar(w, key, GGUF_TYPE_INT32, v, n, err);
}

free_status fr_gguf_add_arr_u32(fr_gguf_writer *w, const char *key, const uint32_t *v,
                                uint64_t n, fr_error *err)
{
    return add_arr_scalar(w, key, GGUF_TYPE_UINT32, v, n, err);
}

free_status fr_gguf_add_arr_str(fr_gguf_writer *w, const char *key, const char *const *v,
                                uint64_t n, fr_error *err)
{
    if (n && !v)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: NULL array for key %s",
                       key ? key : "(null)");
    size_t bytes = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i])
            return fr_fail(err, FREE_ERR_INVALID_ARG,
                           "GGUF writer: string %llu of key %s is NULL", (unsigned long long)i,
                           key ? key : "(null)");
        if (__builtin_add_overflow(bytes, 8 + strlen(v[i]), &bytes))
            return fr_fail(err, FREE_ERR_NOMEM, "GGUF writer: array %s is too large",
                           key ? key : "(null)");
    }
    uint8_t *payload = malloc(bytes ? bytes : 1);
    if (!payload)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for array %s",
                       key ? key : "(null)");
    uint8_t *p = payload;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = strlen(v[i]);
        memcpy(p, &len, 8);
        memcpy(p + 8, v[i], len);
        p += 8 + len;
    }
    free_status st = add_array(w, key, GGUF_TYPE_STRING, n, payload, bytes, err);
    free(payload);
    return st;
}

free_status fr_gguf_add_kv_copy(fr_gguf_writer *w, const gguf_kv *kv, fr_error *err)
{
    if (!kv || !kv->key.ptr || kv->key.len == 0 || kv->key.len > MAX_KEY_LEN ||
        memchr(kv->key.ptr, '\0', (size_t)kv->key.len))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: cannot copy this key");
    char *key = malloc((size_t)kv->key.len + 1);
    if (!key)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    memcpy(key, kv->key.ptr, (size_t)kv->key.len);
    key[kv->key.len] = '\0';
    free_status st;
    if (kv->type == GGUF_TYPE_ARRAY) {
        st = add_array(w, key, kv->arr_type, kv->arr_n, kv->value, (size_t)kv->value_size,
                       err);
    } else {
        uint8_t *val = dup_bytes(kv->value, (size_t)kv->value_size);
        st = val ? add_kv(w, key, kv->type, val, (size_t)kv->value_size, err)
                 : fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    }
    free(key);
    return st;
}

free_status fr_gguf_add_tensor(fr_gguf_writer *w, const char *name, uint32_t n_dims,
                               const uint64_t *ne, uint32_t type, const void *data,
                               uint64_t nbytes, fr_error *err)
{
    if (!w || !name || !ne || (!data && nbytes))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: NULL argument");
    if (name[0] == '\0' || strlen(name) > MAX_KEY_LEN)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: bad tensor name length");
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: tensor %s: n_dims %u", name,
                       n_dims);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return fr_fail(err, FREE_ERR_INVALID_ARG, "GGUF writer: duplicate tensor %s",
                           name);
    uint64_t want = gguf_row_bytes(type, ne[0]);
    if (want == 0)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "GGUF writer: tensor %s: type %u with ne[0] = %llu has no valid size",
                       name, type, (unsigned long long)ne[0]);
    for (uint32_t d = 1; d < n_dims; d++)
        if (ne[d] == 0 || __builtin_mul_overflow(want, ne[d], &want))
            return fr_fail(err, FREE_ERR_INVALID_ARG,
                           "GGUF writer: tensor %s: dimension %u = %llu is invalid", name, d,
                           (unsigned long long)ne[d]);
    if (want != nbytes)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "GGUF writer: tensor %s: %llu bytes given, shape and type need %llu",
                       name, (unsigned long long)nbytes, (unsigned long long)want);
    FR_TRY(grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors, sizeof *w->tensors, err));
    wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name)))
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->type = type;
    t->data = data;
    t->nbytes = nbytes;
    w->n_tensors++;
    return FREE_OK;
}

static uint32_t alignment_of(const fr_gguf_writer *w)
{
    const wkv *kv = find_kv(w, "general.alignment");
    uint32_t a = DEFAULT_ALIGNMENT;
    if (kv)
        memcpy(&a, kv->val, 4); /* validated as a u32 power of two when added */
    return a;
}

static uint64_t align_up(uint64_t x, uint32_t a)
{
    return (x + a - 1) / a * a;
}

/* Bytes of everything before the data section, unpadded. */
static uint64_t header_bytes(const fr_gguf_writer *w)
{
    uint64_t n = 4 + 4 + 8 + 8;
    for (size_t i = 0; i < w->n_kv; i++)
        n += 8 + strlen(w->kvs[i].key) + 4 + w->kvs[i].val_size;
    for (size_t i = 0; i < w->n_tensors; i++)
        n += 8 + strlen(w->tensors[i].name) + 4 + 8 * (uint64_t)w->tensors[i].n_dims + 4 + 8;
    return n;
}

/* Offset of tensor i in the data section, given the previous one's; each is aligned. */
static uint64_t next_offset(const fr_gguf_writer *w, size_t i, uint64_t prev, uint32_t a)
{
    return i == 0 ? 0 : align_up(prev + w->tensors[i - 1].nbytes, a);
}

/* The file size. No padding follows the last tensor unless pad_end (nor ever the header
 * without tensors). */
static uint64_t layout(const fr_gguf_writer *w)
{
    uint32_t a = alignment_of(w);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++)
        off = next_offset(w, i, off, a);
    uint64_t hdr = header_bytes(w);
    if (w->n_tensors == 0)
        return hdr;
    uint64_t end = align_up(hdr, a) + off + w->tensors[w->n_tensors - 1].nbytes;
    return w->pad_end ? align_up(end, a) : end;
}

void fr_gguf_writer_pad_end(fr_gguf_writer *w, bool on)
{
    if (w)
        w->pad_end = on;
}

free_status fr_gguf_writer_size(const fr_gguf_writer *w, uint64_t *size, fr_error *err)
{
    if (!w || !size)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_gguf_writer_size: NULL argument");
    *size = layout(w);
    return FREE_OK;
}

/* Where bytes go: a FILE* or a buffer with room for the whole file. */
typedef struct sink {
    FILE *fp;
    uint8_t *buf;
    uint64_t pos;
    bool failed;
} sink;

static void put(sink *s, const void *p, uint64_t n)
{
    if (s->failed || n == 0)
        return;
    if (s->fp)
        s->failed = fwrite(p, 1, (size_t)n, s->fp) != (size_t)n;
    else
        memcpy(s->buf + s->pos, p, (size_t)n);
    s->pos += n;
}

static void put_zeros(sink *s, uint64_t n)
{
    static const uint8_t zeros[64];
    while (n > 0) {
        uint64_t k = n < sizeof zeros ? n : sizeof zeros;
        put(s, zeros, k);
        n -= k;
    }
}

static void put_u32(sink *s, uint32_t v)
{
    put(s, &v, 4);
}

static void put_u64(sink *s, uint64_t v)
{
    put(s, &v, 8);
}

static void put_str(sink *s, const char *str)
{
    uint64_t len = strlen(str);
    put_u64(s, len);
    put(s, str, len);
}

static void serialize(const fr_gguf_writer *w, sink *s)
{
    uint32_t a = alignment_of(w);
    put(s, "GGUF", 4);
    put_u32(s, 3);
    put_u64(s, w->n_tensors);
    put_u64(s, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(s, w->kvs[i].key);
        put_u32(s, w->kvs[i].type);
        put(s, w->kvs[i].val, w->kvs[i].val_size);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        off = next_offset(w, i, off, a);
        put_str(s, t->name);
        put_u32(s, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_u64(s, t->ne[d]);
        put_u32(s, t->type);
        put_u64(s, off);
    }
    if (w->n_tensors == 0)
        return;
    uint64_t data_start = align_up(s->pos, a);
    put_zeros(s, data_start - s->pos);
    off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        off = next_offset(w, i, off, a);
        put_zeros(s, data_start + off - s->pos);
        put(s, t->data, t->nbytes);
    }
    if (w->pad_end)
        put_zeros(s, align_up(s->pos, a) - s->pos);
}

free_status fr_gguf_writer_write_file(const fr_gguf_writer *w, FILE *fp, fr_error *err)
{
    if (!w || !fp)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_gguf_writer_write_file: NULL argument");
    sink s = {fp, NULL, 0, false};
    serialize(w, &s);
    if (s.failed || fflush(fp) != 0)
        return fr_fail(err, FREE_ERR_IO, "writing GGUF failed after %llu bytes: %s",
                       (unsigned long long)s.pos, strerror(errno));
    return FREE_OK;
}

free_status fr_gguf_writer_write_path(const fr_gguf_writer *w, const char *path,
                                      fr_error *err)
{
    if (!w || !path)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_gguf_writer_write_path: NULL argument");
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return fr_fail(err, FREE_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    free_status st = fr_gguf_writer_write_file(w, fp, err);
    if (fclose(fp) != 0 && st == FREE_OK)
        st = fr_fail(err, FREE_ERR_IO, "closing %s failed: %s", path, strerror(errno));
    if (st != FREE_OK)
        remove(path);
    return st;
}

free_status fr_gguf_writer_write_memory(const fr_gguf_writer *w, void **out, size_t *size,
                                        fr_error *err)
{
    if (!w || !out || !size)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "fr_gguf_writer_write_memory: NULL argument");
    uint64_t total = layout(w);
    if (total > SIZE_MAX)
        return fr_fail(err, FREE_ERR_NOMEM, "GGUF of %llu bytes does not fit in memory",
                       (unsigned long long)total);
    uint8_t *buf = malloc(total ? (size_t)total : 1);
    if (!buf)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for a %llu-byte GGUF",
                       (unsigned long long)total);
    sink s = {NULL, buf, 0, false};
    serialize(w, &s);
    *out = buf;
    *size = (size_t)total;
    return FREE_OK;
}
