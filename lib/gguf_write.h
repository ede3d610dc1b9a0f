/* A small GGUF v3 writer for tools and tests: collect key-values and tensors in memory,
 * then write the file to a FILE*, a path or a malloc'd buffer.
 *
 *     fr_gguf_writer *w;
 *     fr_gguf_writer_create(&w, &err);
 *     fr_gguf_add_str(w, "general.architecture", "llama", &err);
 *     fr_gguf_add_tensor(w, "output_norm.weight", 1, (uint64_t[]){64}, GGUF_TENSOR_F32,
 *                        weights, 64 * sizeof(float), &err);
 *     fr_gguf_writer_write_path(w, "out.gguf", &err);
 *     fr_gguf_writer_destroy(w);
 *
 * Keys and tensor names are copied; tensor data is NOT: it must stay valid until the last
 * write call. Duplicate keys or names, bad shapes and sizes are rejected when added. The
 * data alignment is the value of the key "general.alignment" when one was added (a u32
 * power of two), else 32. Tensors are laid out in the order added. */
#ifndef FREE_GGUF_WRITE_H
#define FREE_GGUF_WRITE_H

#include "gguf.h"

#include <stdio.h>

typedef struct fr_gguf_writer fr_gguf_writer;

free_status fr_gguf_writer_create(fr_gguf_writer **out, fr_error *err);
void fr_gguf_writer_destroy(fr_gguf_writer *w);

/* Scalar and string key-values. */
free_status fr_gguf_add_u32(fr_gguf_writer *w, const char *key, uint32_t v, fr_error *err);
free_status fr_gguf_add_i32(fr_gguf_writer *w, const char *key, int32_t v, fr_error *err);
free_status fr_gguf_add_f32(fr_gguf_writer *w, const char *key, float v, fr_error *err);
free_status fr_gguf_add_bool(fr_gguf_writer *w, const char *key, bool v, fr_error *err);
free_status fr_gguf_add_str(fr_gguf_writer *w, const char *key, const char *v, fr_error *err);

/* Arrays: n elements of v (v may be NULL when n is 0). */
free_status fr_gguf_add_arr_str(fr_gguf_writer *w, const char *key, const char *const *v,
                                uint64_t n, fr_error *err);
free_status fr_gguf_add_arr_f32(fr_gguf_writer *w, const char *key, const float *v,
                                uint64_t n, fr_error *err);
free_status fr_gguf_add_arr_i32(fr_gguf_writer *w, const char *key, const int32_t *v,
                                uint64_t n, fr_error *err);
free_status fr_gguf_add_arr_u32(fr_gguf_writer *w, const char *key, const uint32_t *v,
                                uint64_t n, fr_error *err);

/* Copies a key-value read by the GGUF reader unchanged (any type, nested arrays too). */
free_status fr_gguf_add_kv_copy(fr_gguf_writer *w, const gguf_kv *kv, fr_error *err);

/* Removes key if present (so that a copied file can get a new value). */
void fr_gguf_remove_kv(fr_gguf_writer *w, const char *key);

/* A tensor: ne[0..n_dims) with ne[0] contiguous; nbytes must equal the size implied by
 * type and shape (gguf_row_bytes(type, ne[0]) * ne[1] * ...). data is borrowed. */
free_status fr_gguf_add_tensor(fr_gguf_writer *w, const char *name, uint32_t n_dims,
                               const uint64_t *ne, uint32_t type, const void *data,
                               uint64_t nbytes, fr_error *err);

/* on: zeros follow the last tensor up to the alignment, as ggml's writer (and so
 * llama-quantize) lays files out; off (the default): the file ends with the last tensor. */
void fr_gguf_writer_pad_end(fr_gguf_writer *w, bool on);

/* Total bytes the file will have. */
free_status fr_gguf_writer_size(const fr_gguf_writer *w, uint64_t *size, fr_error *err);

free_status fr_gguf_writer_write_file(const fr_gguf_writer *w, FILE *fp, fr_error *err);
/* Writes path (created or truncated); removes a partial file on failure. */
free_status fr_gguf_writer_write_path(const fr_gguf_writer *w, const char *path,
                                      fr_error *err);
/* Writes into a new malloc'd buffer *out of *size bytes; the caller frees it. */
free_status fr_gguf_writer_write_memory(const fr_gguf_writer *w, void **out, size_t *size,
                                        fr_error *err);

#endif
