/* GGUF v2/v3 reader. The file is mapped read-only; every structure the parser returns
 * points into the mapping and has been validated against the file size before use. */
#ifndef FREE_GGUF_H
#define FREE_GGUF_H

#include "status.h"
#include <stdbool.h>
#include <stdint.h>

enum gguf_value_type {
    GGUF_TYPE_UINT8 = 0, GGUF_TYPE_INT8 = 1, GGUF_TYPE_UINT16 = 2, GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4, GGUF_TYPE_INT32 = 5, GGUF_TYPE_FLOAT32 = 6, GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8, GGUF_TYPE_ARRAY = 9, GGUF_TYPE_UINT64 = 10, GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

/* ggml tensor types (the ones libfree knows by name; others are rejected by model.c). */
enum gguf_tensor_type {
    GGUF_TENSOR_F32 = 0, GGUF_TENSOR_F16 = 1, GGUF_TENSOR_Q4_0 = 2, GGUF_TENSOR_Q4_1 = 3,
    GGUF_TENSOR_Q5_0 = 6, GGUF_TENSOR_Q5_1 = 7, GGUF_TENSOR_Q8_0 = 8, GGUF_TENSOR_Q8_1 = 9,
    GGUF_TENSOR_Q2_K = 10, GGUF_TENSOR_Q3_K = 11, GGUF_TENSOR_Q4_K = 12, GGUF_TENSOR_Q5_K = 13,
    GGUF_TENSOR_Q6_K = 14, GGUF_TENSOR_Q8_K = 15, GGUF_TENSOR_BF16 = 30,
};

#define GGUF_MAX_DIMS 4

/* A string inside the mapping: NOT NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    uint32_t type;          /* enum gguf_value_type */
    uint32_t arr_type;      /* element type when type == GGUF_TYPE_ARRAY */
    uint64_t arr_n;         /* element count when type == GGUF_TYPE_ARRAY */
    const uint8_t *value;   /* raw little-endian value (for arrays: the first element) */
    uint64_t value_size;    /* bytes of the whole value in the file */
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous dimension; unused dims are 1 */
    uint32_t type;              /* enum gguf_tensor_type */
    uint64_t offset;            /* relative to the start of the data section */
    uint64_t nbytes;
    const void *data;           /* inside the mapping, validated to lie in the file */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Maps and parses path. On failure returns a status and a message in err. */
free_status gguf_open(const char *path, gguf_file **out, fr_error *err);
/* Parses a caller-owned buffer (not copied; it must outlive the gguf_file). */
free_status gguf_open_memory(const void *data, size_t size, gguf_file **out, fr_error *err);
void gguf_close(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
uint64_t gguf_n_kv(const gguf_file *f);
uint64_t gguf_n_tensors(const gguf_file *f);
const gguf_kv *gguf_kv_at(const gguf_file *f, uint64_t i);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i);
size_t gguf_file_size(const gguf_file *f);

/* Look-ups by name (NUL-terminated C strings); NULL when absent. */
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed getters. When the key is absent they return FREE_OK with *found = false and leave
 * *out untouched. When it exists with an incompatible type or a value out of range they
 * return FREE_ERR_FORMAT with a message naming the key. Integer getters accept any
 * integer type whose value fits; the float getter accepts FLOAT32 and FLOAT64. */
free_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, bool *found,
                         fr_error *err);
free_status gguf_get_f32(const gguf_file *f, const char *key, float *out, bool *found,
                         fr_error *err);
free_status gguf_get_bool(const gguf_file *f, const char *key, bool *out, bool *found,
                          fr_error *err);
free_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, bool *found,
                         fr_error *err);

/* Array access. For string arrays, gguf_array_strings fills out[0..n) with the elements
 * (n must equal kv->arr_n). For numeric arrays, gguf_array_f32 / gguf_array_i32 convert
 * every element (integer or float source types) into out[0..n). */
free_status gguf_array_strings(const gguf_kv *kv, gguf_str *out, uint64_t n, fr_error *err);
free_status gguf_array_f32(const gguf_kv *kv, float *out, uint64_t n, fr_error *err);
free_status gguf_array_i32(const gguf_kv *kv, int32_t *out, uint64_t n, fr_error *err);

/* True when s equals the NUL-terminated c. */
bool gguf_str_eq(gguf_str s, const char *c);

/* Bytes of a tensor of type with ne elements along dim 0 (rows of blocks); 0 when the
 * type is unknown or the size is not a whole number of blocks. */
uint64_t gguf_row_bytes(uint32_t type, uint64_t ne0);
const char *gguf_tensor_type_name(uint32_t type);

#endif
