/* Typed access to a parsed file: gguf_get_*, gguf_array_*, gguf_str_eq and tensor type
 * facts (names, row sizes). */
#include "gguf_impl.h"

#include <string.h>

static const char *const type_names[] = {
    [0] = "F32", [1] = "F16", [2] = "Q4_0", [3] = "Q4_1", [6] = "Q5_0", [7] = "Q5_1",
    [8] = "Q8_0", [9] = "Q8_1", [10] = "Q2_K", [11] = "Q3_K", [12] = "Q4_K", [13] = "Q5_K",
    [14] = "Q6_K", [15] = "Q8_K", [16] = "IQ2_XXS", [17] = "IQ2_XS", [18] = "IQ3_XXS",
    [19] = "IQ1_S", [20] = "IQ4_NL", [21] = "IQ3_S", [22] = "IQ2_S", [23] = "IQ4_XS",
    [24] = "I8", [25] = "I16", [26] = "I32", [27] = "I64", [28] = "F64", [29] = "IQ1_M",
    [30] = "BF16", [34] = "TQ1_0", [35] = "TQ2_0", [39] = "MXFP4",
};

const char *gguf_tensor_type_name(uint32_t type)
{
    if (type < sizeof type_names / sizeof type_names[0] && type_names[type])
        return type_names[type];
    return "unknown";
}

uint64_t gguf_row_bytes(uint32_t type, uint64_t ne0)
{
    uint64_t blck, bytes, out;
    if (!block_layout(type, &blck, &bytes) || ne0 % blck != 0)
        return 0;
    if (__builtin_mul_overflow(ne0 / blck, bytes, &out))
        return 0;
    return out;
}

bool gguf_str_eq(gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

/* One numeric value widened for range checks. */
typedef enum num_kind { NUM_NONE, NUM_UNSIGNED, NUM_SIGNED, NUM_FLOAT } num_kind;
typedef struct num {
    num_kind kind;
    uint64_t u;
    int64_t i;
    double d;
} num;

static num load_num(const uint8_t *p, uint32_t type)
{
    num n = {NUM_NONE, 0, 0, 0.0};
    switch (type) {
    case GGUF_TYPE_UINT8: n.kind = NUM_UNSIGNED; n.u = p[0]; break;
    case GGUF_TYPE_INT8: n.kind = NUM_SIGNED; n.i = (int8_t)p[0]; break;
    case GGUF_TYPE_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        n.kind = NUM_UNSIGNED;
        n.u = v;
        break;
    }
    case GGUF_TYPE_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        n.kind = NUM_SIGNED;
        n.i = v;
        break;
    }
    case GGUF_TYPE_UINT32: n.kind = NUM_UNSIGNED; n.u = load_u32(p); break;
    case GGUF_TYPE_INT32: n.kind = NUM_SIGNED; n.i = (int32_t)load_u32(p); break;
    case GGUF_TYPE_UINT64: n.kind = NUM_UNSIGNED; n.u = load_u64(p); break;
    case GGUF_TYPE_INT64: n.kind = NUM_SIGNED; n.i = (int64_t)load_u64(p); break;
    case GGUF_TYPE_FLOAT32: {
        float v;
        memcpy(&v, p, 4);
        n.kind = NUM_FLOAT;
        n.d = v;
        break;
    }
    case GGUF_TYPE_FLOAT64: n.kind = NUM_FLOAT; memcpy(&n.d, p, 8); break;
    default: break;
    }
    return n;
}

static const char *value_type_name(uint32_t t)
{
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                        "bool", "string", "array", "u64", "i64", "f64"};
    return t < GGUF_TYPE_COUNT ? names[t] : "unknown";
}

/* Finds key; reports absence through *found. Returns NULL when absent. */
static const gguf_kv *lookup(const gguf_file *f, const char *key, bool *found)
{
    const gguf_kv *kv = (f && key) ? gguf_find_kv(f, key) : NULL;
    if (found)
        *found = kv != NULL;
    return kv;
}

static free_status wrong_type(const char *key, uint32_t type, const char *wanted,
                              fr_error *err)
{
    return fr_fail(err, FREE_ERR_FORMAT, "key %s: has type %s, expected %s", key,
                   value_type_name(type), wanted);
}

free_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, bool *found,
                         fr_error *err)
{
    const gguf_kv *kv = lookup(f, key, found);
    if (!kv)
        return FREE_OK;
    num n = load_num(kv->value, kv->type);
    if (n.kind != NUM_UNSIGNED && n.kind != NUM_SIGNED)
        return wrong_type(key, kv->type, "an integer", err);
    if ((n.kind == NUM_UNSIGNED && n.u > UINT32_MAX) ||
        (n.kind == NUM_SIGNED && (n.i < 0 || n.i > (int64_t)UINT32_MAX))) {
        if (n.kind == NUM_UNSIGNED)
            return fr_fail(err, FREE_ERR_FORMAT, "key %s: value %llu does not fit in 32 bits",
                           key, (unsigned long long)n.u);
        return fr_fail(err, FREE_ERR_FORMAT, "key %s: value %lld is not in 0..%u", key,
                       (long long)n.i, UINT32_MAX);
    }
    *out = n.kind == NUM_UNSIGNED ? (uint32_t)n.u : (uint32_t)n.i;
    return FREE_OK;
}

free_status gguf_get_f32(const gguf_file *f, const char *key, float *out, bool *found,
                         fr_error *err)
{
    const gguf_kv *kv = lookup(f, key, found);
    if (!kv)
        return FREE_OK;
    if (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
        return wrong_type(key, kv->type, "f32 or f64", err);
    *out = (float)load_num(kv->value, kv->type).d;
    return FREE_OK;
}

free_status gguf_get_bool(const gguf_file *f, const char *key, bool *out, bool *found,
                          fr_error *err)
{
    const gguf_kv *kv = lookup(f, key, found);
    if (!kv)
        return FREE_OK;
    if (kv->type != GGUF_TYPE_BOOL)
        return wrong_type(key, kv->type, "bool", err);
    if (kv->value[0] > 1)
        return fr_fail(err, FREE_ERR_FORMAT, "key %s: bool value %u is not 0 or 1", key,
                       kv->value[0]);
    *out = kv->value[0] == 1;
    return FREE_OK;
}

free_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, bool *found,
                         fr_error *err)
{
    const gguf_kv *kv = lookup(f, key, found);
    if (!kv)
        return FREE_OK;
    if (kv->type != GGUF_TYPE_STRING)
        return wrong_type(key, kv->type, "string", err);
    out->len = load_u64(kv->value);
    out->ptr = (const char *)kv->value + 8;
    return FREE_OK;
}

static free_status check_array(const gguf_kv *kv, uint64_t n, const char *what, fr_error *err)
{
    if (!kv)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "%s array access on a NULL key", what);
    if (kv->type != GGUF_TYPE_ARRAY)
        return fr_fail(err, FREE_ERR_FORMAT, "key %.*s: has type %s, expected an array of %s",
                       shown_len(kv->key), kv->key.ptr, value_type_name(kv->type), what);
    if (n != kv->arr_n)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "key %.*s: asked for %llu elements but the array has %llu",
                       shown_len(kv->key), kv->key.ptr, (unsigned long long)n,
                       (unsigned long long)kv->arr_n);
    return FREE_OK;
}

free_status gguf_array_strings(const gguf_kv *kv, gguf_str *out, uint64_t n, fr_error *err)
{
    FR_TRY(check_array(kv, n, "strings", err));
    if (kv->arr_type != GGUF_TYPE_STRING)
        return fr_fail(err, FREE_ERR_FORMAT, "key %.*s: array of %s, expected strings",
                       shown_len(kv->key), kv->key.ptr, value_type_name(kv->arr_type));
    /* Validated by the parser; re-checked because gguf_kv is a plain public struct. */
    const uint8_t *p = kv->value, *end = kv->value + kv->value_size;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        if (end - p < 8 || (len = load_u64(p)) > (uint64_t)(end - p - 8))
            return fr_fail(err, FREE_ERR_FORMAT, "key %.*s: string %llu runs past the array",
                           shown_len(kv->key), kv->key.ptr, (unsigned long long)i);
        out[i].len = len;
        out[i].ptr = (const char *)p + 8;
        p += 8 + len;
    }
    return FREE_OK;
}

/* Checks a numeric array's element type and count; *elem gets the element size. */
static free_status numeric_array(const gguf_kv *kv, uint64_t n, const char *what,
                                 uint64_t *elem, fr_error *err)
{
    FR_TRY(check_array(kv, n, what, err));
    *elem = scalar_size(kv->arr_type);
    uint64_t total;
    if (*elem == 0 || kv->arr_type == GGUF_TYPE_BOOL)
        return fr_fail(err, FREE_ERR_FORMAT, "key %.*s: array of %s, expected numbers",
                       shown_len(kv->key), kv->key.ptr, value_type_name(kv->arr_type));
    if (__builtin_mul_overflow(n, *elem, &total) || total > kv->value_size)
        return fr_fail(err, FREE_ERR_FORMAT, "key %.*s: array data is shorter than %llu "
                       "elements", shown_len(kv->key), kv->key.ptr, (unsigned long long)n);
    return FREE_OK;
}

free_status gguf_array_f32(const gguf_kv *kv, float *out, uint64_t n, fr_error *err)
{
    uint64_t elem;
    FR_TRY(numeric_array(kv, n, "numbers", &elem, err));
    for (uint64_t i = 0; i < n; i++) {
        num v = load_num(kv->value + i * elem, kv->arr_type);
        out[i] = v.kind == NUM_FLOAT ? (float)v.d
                 : v.kind == NUM_SIGNED ? (float)v.i
                                        : (float)v.u;
    }
    return FREE_OK;
}

free_status gguf_array_i32(const gguf_kv *kv, int32_t *out, uint64_t n, fr_error *err)
{
    uint64_t elem;
    FR_TRY(numeric_array(kv, n, "integers", &elem, err));
    for (uint64_t i = 0; i < n; i++) {
        num v = load_num(kv->value + i * elem, kv->arr_type);
        bool ok;
        int64_t x = 0;
        if (v.kind == NUM_UNSIGNED) {
            ok = v.u <= INT32_MAX;
            x = (int64_t)v.u;
        } else if (v.kind == NUM_SIGNED) {
            ok = v.i >= INT32_MIN && v.i <= INT32_MAX;
            x = v.i;
        } else {
            /* NaN fails both comparisons. */
            ok = v.d >= INT32_MIN && v.d <= INT32_MAX && v.d == (double)(int64_t)v.d;
            x = ok ? (int64_t)v.d : 0;
        }
        if (!ok)
            return fr_fail(err, FREE_ERR_FORMAT,
                           "key %.*s: element %llu is not a 32-bit signed integer",
                           shown_len(kv->key), kv->key.ptr, (unsigned long long)i);
        out[i] = (int32_t)x;
    }
    return FREE_OK;
}
