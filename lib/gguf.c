/* GGUF v2/v3 reader. The input is hostile until proven otherwise: every count, length,
 * offset and size is checked against the bytes that remain before it is used, and every
 * allocation is bounded by what the file could actually hold. The typed getters and
 * array accessors are in gguf_get.c. */
#include "gguf_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32u
/* The spec allows arrays of arrays; nothing real nests deeper than one level. */
#define GGUF_MAX_ARRAY_DEPTH 8
/* Smallest possible encodings, used to reject counts the remaining bytes cannot hold. */
#define GGUF_MIN_KV_BYTES 14u     /* u64 key length, 1 key byte, u32 type, 1 value byte */
#define GGUF_MIN_TENSOR_BYTES 33u /* u64 name length, 1 byte, u32 n_dims, u64 ne, u32, u64 */

struct gguf_file {
    const uint8_t *base;
    size_t size;
    bool mapped;
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv;
    uint64_t n_tensors;
    uint64_t data_offset;
    gguf_kv *kvs;
    gguf_tensor *tensors;
};

/* A bounded cursor over the file. */
typedef struct reader {
    const uint8_t *base;
    size_t size;
    size_t pos;
    fr_error *err;
    char where[NAME_SHOWN + 16]; /* "key NAME: " or "tensor NAME: " for messages */
} reader;

static size_t remaining(const reader *r)
{
    return r->size - r->pos;
}

static void set_where(reader *r, const char *kind, gguf_str name)
{
    snprintf(r->where, sizeof r->where, "%s %.*s: ", kind, shown_len(name), name.ptr);
}

static free_status need(reader *r, uint64_t n, const char *what)
{
    if (n > remaining(r))
        return fr_fail(r->err, FREE_ERR_FORMAT,
                       "%struncated file: %s at offset %zu needs %llu bytes but only %zu "
                       "remain (file size %zu)",
                       r->where, what, r->pos, (unsigned long long)n, remaining(r), r->size);
    return FREE_OK;
}

static free_status read_u32(reader *r, uint32_t *out, const char *what)
{
    FR_TRY(need(r, 4, what));
    *out = load_u32(r->base + r->pos);
    r->pos += 4;
    return FREE_OK;
}

static free_status read_u64(reader *r, uint64_t *out, const char *what)
{
    FR_TRY(need(r, 8, what));
    *out = load_u64(r->base + r->pos);
    r->pos += 8;
    return FREE_OK;
}

static free_status read_str(reader *r, gguf_str *out, const char *what)
{
    uint64_t len;
    size_t at = r->pos;
    FR_TRY(read_u64(r, &len, what));
    if (len > remaining(r))
        return fr_fail(r->err, FREE_ERR_FORMAT,
                       "%struncated file: %s at offset %zu has length %llu, past the end of "
                       "the file (%zu bytes remain, file size %zu)",
                       r->where, what, at, (unsigned long long)len, remaining(r), r->size);
    out->ptr = (const char *)r->base + r->pos;
    out->len = len;
    r->pos += (size_t)len;
    return FREE_OK;
}

static bool valid_value_type(uint32_t t)
{
    return t < GGUF_TYPE_COUNT;
}

/* Skips one value of type t (validating it), used for kv values and array elements. */
static free_status skip_value(reader *r, uint32_t t, int depth);

static free_status skip_array(reader *r, int depth, uint32_t *et_out, uint64_t *n_out)
{
    uint32_t et;
    uint64_t n;
    size_t at = r->pos;
    if (depth >= GGUF_MAX_ARRAY_DEPTH)
        return fr_fail(r->err, FREE_ERR_FORMAT, "%sarrays nested deeper than %d levels at "
                       "offset %zu", r->where, GGUF_MAX_ARRAY_DEPTH, at);
    FR_TRY(read_u32(r, &et, "array element type"));
    FR_TRY(read_u64(r, &n, "array element count"));
    if (!valid_value_type(et))
        return fr_fail(r->err, FREE_ERR_FORMAT, "%sunknown array element type %u at offset %zu",
                       r->where, et, at);
    /* Each element needs at least this many bytes: bound n before walking. */
    uint64_t min_elem = scalar_size(et);
    if (et == GGUF_TYPE_STRING)
        min_elem = 8;
    else if (et == GGUF_TYPE_ARRAY)
        min_elem = 12;
    uint64_t total;
    if (__builtin_mul_overflow(n, min_elem, &total) || total > remaining(r))
        return fr_fail(r->err, FREE_ERR_FORMAT,
                       "%sarray count %llu of elements of at least %llu bytes runs past the end "
                       "of the file (truncated or corrupt: %zu bytes remain at offset %zu)",
                       r->where, (unsigned long long)n, (unsigned long long)min_elem,
                       remaining(r), r->pos);
    if (et == GGUF_TYPE_STRING || et == GGUF_TYPE_ARRAY) {
        for (uint64_t i = 0; i < n; i++)
            FR_TRY(skip_value(r, et, depth + 1));
    } else {
        r->pos += (size_t)total;
    }
    if (et_out)
        *et_out = et;
    if (n_out)
        *n_out = n;
    return FREE_OK;
}

static free_status skip_value(reader *r, uint32_t t, int depth)
{
    if (t == GGUF_TYPE_STRING) {
        gguf_str s;
        return read_str(r, &s, "string value");
    }
    if (t == GGUF_TYPE_ARRAY)
        return skip_array(r, depth, NULL, NULL);
    uint64_t sz = scalar_size(t);
    if (sz == 0)
        return fr_fail(r->err, FREE_ERR_FORMAT, "%sunknown value type %u", r->where, t);
    FR_TRY(need(r, sz, "scalar value"));
    r->pos += (size_t)sz;
    return FREE_OK;
}

static free_status parse_kv(reader *r, gguf_kv *kv)
{
    r->where[0] = '\0';
    FR_TRY(read_str(r, &kv->key, "key"));
    if (kv->key.len == 0)
        return fr_fail(r->err, FREE_ERR_FORMAT, "empty key at offset %zu", r->pos - 8);
    set_where(r, "key", kv->key);
    FR_TRY(read_u32(r, &kv->type, "value type"));
    if (!valid_value_type(kv->type))
        return fr_fail(r->err, FREE_ERR_FORMAT, "%sunknown value type %u at offset %zu",
                       r->where, kv->type, r->pos - 4);
    kv->arr_type = 0;
    kv->arr_n = 0;
    if (kv->type == GGUF_TYPE_ARRAY) {
        /* value points at the first element: skip the element type and count. */
        size_t hdr = r->pos;
        FR_TRY(skip_array(r, 0, &kv->arr_type, &kv->arr_n));
        kv->value = r->base + hdr + 12;
        kv->value_size = r->pos - hdr - 12;
    } else {
        size_t start = r->pos;
        FR_TRY(skip_value(r, kv->type, 0));
        kv->value = r->base + start;
        kv->value_size = r->pos - start;
    }
    return FREE_OK;
}

static free_status parse_tensor_info(reader *r, gguf_tensor *t)
{
    r->where[0] = '\0';
    FR_TRY(read_str(r, &t->name, "tensor name"));
    if (t->name.len == 0)
        return fr_fail(r->err, FREE_ERR_FORMAT, "empty tensor name at offset %zu",
                       r->pos - 8);
    set_where(r, "tensor", t->name);
    const char *w = r->where;
    FR_TRY(read_u32(r, &t->n_dims, "tensor n_dims"));
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fr_fail(r->err, FREE_ERR_FORMAT, "%sn_dims %u is not in 1..%d", w,
                       t->n_dims, GGUF_MAX_DIMS);
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        FR_TRY(read_u64(r, &t->ne[d], "tensor dimension"));
        if (t->ne[d] == 0)
            return fr_fail(r->err, FREE_ERR_FORMAT, "%sdimension %u is 0", w, d);
        if (__builtin_mul_overflow(nelem, t->ne[d], &nelem) || nelem > INT64_MAX)
            return fr_fail(r->err, FREE_ERR_FORMAT,
                           "%selement count overflows at dimension %u (ne = %llu)",
                           w, d, (unsigned long long)t->ne[d]);
    }
    FR_TRY(read_u32(r, &t->type, "tensor type"));
    FR_TRY(read_u64(r, &t->offset, "tensor offset"));
    uint64_t blck, bytes;
    if (!block_layout(t->type, &blck, &bytes)) {
        return fr_fail(r->err, FREE_ERR_UNSUPPORTED,
                       "%sunsupported tensor type %u (%s); libfree reads %s", w, t->type,
                       gguf_tensor_type_name(t->type), fr_supported_types());
    }
    if (t->ne[0] % blck != 0)
        return fr_fail(r->err, FREE_ERR_FORMAT,
                       "%sne[0] = %llu is not a multiple of the %s block size %llu",
                       w, (unsigned long long)t->ne[0], gguf_tensor_type_name(t->type),
                       (unsigned long long)blck);
    if (__builtin_mul_overflow(nelem / blck, bytes, &t->nbytes))
        return fr_fail(r->err, FREE_ERR_FORMAT, "%sbyte size overflows", w);
    return FREE_OK;
}

static int cmp_str(gguf_str a, gguf_str b)
{
    size_t n = a.len < b.len ? (size_t)a.len : (size_t)b.len;
    int c = memcmp(a.ptr, b.ptr, n);
    if (c != 0)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

static int cmp_kv_key(const void *a, const void *b)
{
    return cmp_str((*(const gguf_kv *const *)a)->key, (*(const gguf_kv *const *)b)->key);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a;
    const gguf_tensor *y = *(const gguf_tensor *const *)b;
    return cmp_str(x->name, y->name);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a;
    const gguf_tensor *y = *(const gguf_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    /* Ties keep file order so that messages are deterministic. */
    return x < y ? -1 : x > y;
}

static free_status check_duplicate_keys(gguf_file *f, fr_error *err)
{
    if (f->n_kv < 2)
        return FREE_OK;
    const gguf_kv **v = malloc((size_t)f->n_kv * sizeof *v);
    if (!v)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory sorting %llu keys",
                       (unsigned long long)f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++)
        v[i] = &f->kvs[i];
    qsort(v, (size_t)f->n_kv, sizeof *v, cmp_kv_key);
    free_status st = FREE_OK;
    for (uint64_t i = 1; i < f->n_kv && st == FREE_OK; i++)
        if (cmp_str(v[i - 1]->key, v[i]->key) == 0)
            st = fr_fail(err, FREE_ERR_FORMAT, "duplicate key %.*s", shown_len(v[i]->key),
                         v[i]->key.ptr);
    free(v);
    return st;
}

/* Duplicate names, then placement: inside the data section and pairwise disjoint. */
static free_status check_tensors(gguf_file *f, fr_error *err)
{
    uint64_t data_size = f->data_offset <= f->size ? f->size - f->data_offset : 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        uint64_t end;
        if (t->offset % f->alignment != 0)
            return fr_fail(err, FREE_ERR_FORMAT,
                           "tensor %.*s: offset %llu is not a multiple of the alignment %u",
                           shown_len(t->name), t->name.ptr, (unsigned long long)t->offset,
                           f->alignment);
        if (__builtin_add_overflow(t->offset, t->nbytes, &end) || end > data_size)
            return fr_fail(err, FREE_ERR_FORMAT,
                           "tensor %.*s: offset %llu + size %llu is past the end of the file "
                           "(data section of %llu bytes at %llu, file size %zu)",
                           shown_len(t->name), t->name.ptr, (unsigned long long)t->offset,
                           (unsigned long long)t->nbytes, (unsigned long long)data_size,
                           (unsigned long long)f->data_offset, f->size);
        f->tensors[i].data = f->base + f->data_offset + t->offset;
    }
    if (f->n_tensors < 2)
        return FREE_OK;
    const gguf_tensor **v = malloc((size_t)f->n_tensors * sizeof *v);
    if (!v)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory sorting %llu tensors",
                       (unsigned long long)f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        v[i] = &f->tensors[i];
    free_status st = FREE_OK;
    qsort(v, (size_t)f->n_tensors, sizeof *v, cmp_tensor_name);
    for (uint64_t i = 1; i < f->n_tensors && st == FREE_OK; i++)
        if (cmp_str(v[i - 1]->name, v[i]->name) == 0)
            st = fr_fail(err, FREE_ERR_FORMAT, "duplicate tensor name %.*s",
                         shown_len(v[i]->name), v[i]->name.ptr);
    qsort(v, (size_t)f->n_tensors, sizeof *v, cmp_tensor_offset);
    for (uint64_t i = 1; i < f->n_tensors && st == FREE_OK; i++) {
        const gguf_tensor *a = v[i - 1], *b = v[i];
        if (a->offset + a->nbytes > b->offset)
            st = fr_fail(err, FREE_ERR_FORMAT,
                         "tensors %.*s (offset %llu, %llu bytes) and %.*s (offset %llu) overlap",
                         shown_len(a->name), a->name.ptr, (unsigned long long)a->offset,
                         (unsigned long long)a->nbytes, shown_len(b->name), b->name.ptr,
                         (unsigned long long)b->offset);
    }
    free(v);
    return st;
}

static free_status parse_header(gguf_file *f, reader *r)
{
    if (r->size < 4 || memcmp(r->base, GGUF_MAGIC, 4) != 0) {
        if (r->size < 4)
            return fr_fail(r->err, FREE_ERR_FORMAT,
                           "truncated file: %zu bytes is too short for the GGUF magic",
                           r->size);
        return fr_fail(r->err, FREE_ERR_FORMAT,
                       "not a GGUF file: magic is %02x %02x %02x %02x, expected \"GGUF\"",
                       r->base[0], r->base[1], r->base[2], r->base[3]);
    }
    r->pos = 4;
    FR_TRY(read_u32(r, &f->version, "version"));
    if (f->version == 1)
        return fr_fail(r->err, FREE_ERR_UNSUPPORTED,
                       "GGUF version 1 is not supported (only versions 2 and 3)");
    if (f->version == 0x02000000u || f->version == 0x03000000u)
        return fr_fail(r->err, FREE_ERR_UNSUPPORTED,
                       "big-endian GGUF files are not supported (version field 0x%08x)",
                       f->version);
    if (f->version != 2 && f->version != 3)
        return fr_fail(r->err, FREE_ERR_UNSUPPORTED,
                       "GGUF version %u is not supported (only versions 2 and 3)", f->version);
    FR_TRY(read_u64(r, &f->n_tensors, "n_tensors"));
    FR_TRY(read_u64(r, &f->n_kv, "n_kv"));
    /* Bound both counts by the bytes left before allocating anything. */
    uint64_t need_kv, need_t, need_all;
    if (__builtin_mul_overflow(f->n_kv, GGUF_MIN_KV_BYTES, &need_kv) ||
        need_kv > remaining(r))
        return fr_fail(r->err, FREE_ERR_FORMAT,
                       "n_kv %llu is impossible: %llu key-values need at least %u bytes each "
                       "but only %zu bytes remain (file truncated or corrupt)",
                       (unsigned long long)f->n_kv, (unsigned long long)f->n_kv,
                       GGUF_MIN_KV_BYTES, remaining(r));
    if (__builtin_mul_overflow(f->n_tensors, GGUF_MIN_TENSOR_BYTES, &need_t) ||
        __builtin_add_overflow(need_t, need_kv, &need_all) || need_all > remaining(r))
        return fr_fail(r->err, FREE_ERR_FORMAT,
                       "n_tensors %llu is impossible: tensor infos need at least %u bytes each "
                       "but only %zu bytes remain after the key-values' minimum (file "
                       "truncated or corrupt)",
                       (unsigned long long)f->n_tensors, GGUF_MIN_TENSOR_BYTES,
                       remaining(r) - (size_t)need_kv);
    return FREE_OK;
}

static free_status read_alignment(gguf_file *f, fr_error *err)
{
    uint32_t a;
    bool found = false;
    FR_TRY(gguf_get_u32(f, "general.alignment", &a, &found, err));
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!found)
        return FREE_OK;
    if (a == 0 || (a & (a - 1)) != 0)
        return fr_fail(err, FREE_ERR_FORMAT,
                       "general.alignment %u is not a power of two", a);
    f->alignment = a;
    return FREE_OK;
}

static free_status parse(gguf_file *f, fr_error *err)
{
    reader r = {f->base, f->size, 0, err, ""};
    FR_TRY(parse_header(f, &r));
    /* The counts are bounded by the file size above, so these allocations are too. */
    if (f->n_kv) {
        f->kvs = calloc((size_t)f->n_kv, sizeof *f->kvs);
        if (!f->kvs)
            return fr_fail(err, FREE_ERR_NOMEM, "out of memory for %llu key-values",
                           (unsigned long long)f->n_kv);
    }
    for (uint64_t i = 0; i < f->n_kv; i++)
        FR_TRY(parse_kv(&r, &f->kvs[i]));
    FR_TRY(check_duplicate_keys(f, err));
    FR_TRY(read_alignment(f, err));
    if (f->n_tensors) {
        f->tensors = calloc((size_t)f->n_tensors, sizeof *f->tensors);
        if (!f->tensors)
            return fr_fail(err, FREE_ERR_NOMEM, "out of memory for %llu tensor infos",
                           (unsigned long long)f->n_tensors);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++)
        FR_TRY(parse_tensor_info(&r, &f->tensors[i]));
    uint64_t pad = (f->alignment - r.pos % f->alignment) % f->alignment;
    f->data_offset = (uint64_t)r.pos + pad;
    return check_tensors(f, err);
}

static free_status open_common(const uint8_t *base, size_t size, bool mapped, gguf_file **out,
                               fr_error *err)
{
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        if (mapped)
            munmap((void *)base, size);
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    }
    f->base = base;
    f->size = size;
    f->mapped = mapped;
    free_status st = parse(f, err);
    if (st != FREE_OK) {
        gguf_close(f);
        return st;
    }
    *out = f;
    return FREE_OK;
}

free_status gguf_open_memory(const void *data, size_t size, gguf_file **out, fr_error *err)
{
    if (!out || (!data && size))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "gguf_open_memory: NULL argument");
    *out = NULL;
    static const uint8_t empty[1];
    return open_common(data ? data : empty, size, false, out, err);
}

/* Advice for the weights' mapping (issue 19). Decoding streams every weight once per
 * token, so at model sizes far above the last-level cache the TLB misses of 4 KiB pages
 * cost bandwidth: MADV_HUGEPAGE asks the kernel to back the mapping with 2 MiB page-cache
 * folios where the file system supports large folios (the pages read after the call; pages
 * already cached keep their size) and transparent huge pages are not "never". It is advice:
 * failure changes nothing. FREE_HUGEPAGE=0 in the environment skips it (for A/B runs). */
static void map_advise(void *map, size_t size)
{
#ifdef MADV_HUGEPAGE
    const char *env = getenv("FREE_HUGEPAGE");
    if (env && !strcmp(env, "0"))
        return;
    if (size >= ((size_t)2 << 20))
        (void)madvise(map, size, MADV_HUGEPAGE);
#else
    (void)map;
    (void)size;
#endif
}

free_status gguf_open(const char *path, gguf_file **out, fr_error *err)
{
    if (!path || !out)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "gguf_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fr_fail(err, FREE_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat stt;
    if (fstat(fd, &stt) != 0) {
        int e = errno;
        close(fd);
        return fr_fail(err, FREE_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(stt.st_mode)) {
        close(fd);
        return fr_fail(err, FREE_ERR_IO, "%s is not a regular file", path);
    }
    size_t size = (size_t)stt.st_size;
    if (size == 0) {
        close(fd);
        return fr_fail(err, FREE_ERR_FORMAT, "%s: truncated file: the file is empty", path);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return fr_fail(err, FREE_ERR_IO, "cannot map %s (%zu bytes): %s", path, size,
                       strerror(e));
    map_advise(map, size);
    free_status st = open_common(map, size, true, out, err);
    if (st != FREE_OK && err) {
        /* Prefix the path so the message says which file was bad. */
        char tmp[sizeof err->msg];
        memcpy(tmp, err->msg, sizeof tmp);
        fr_fail(err, st, "%s: %s", path, tmp);
    }
    return st;
}

void gguf_close(gguf_file *f)
{
    if (!f)
        return;
    if (f->mapped)
        munmap((void *)f->base, f->size);
    free(f->kvs);
    free(f->tensors);
    free(f);
}

uint32_t gguf_version(const gguf_file *f)
{
    return f->version;
}

uint64_t gguf_n_kv(const gguf_file *f)
{
    return f->n_kv;
}

uint64_t gguf_n_tensors(const gguf_file *f)
{
    return f->n_tensors;
}

const gguf_kv *gguf_kv_at(const gguf_file *f, uint64_t i)
{
    return i < f->n_kv ? &f->kvs[i] : NULL;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

size_t gguf_file_size(const gguf_file *f)
{
    return f->size;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kvs[i].key, key))
            return &f->kvs[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (gguf_str_eq(f->tensors[i].name, name))
            return &f->tensors[i];
    return NULL;
}
