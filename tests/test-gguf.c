/* GGUF reader and writer: the real model files, a writer round trip, and one test per kind
 * of hostile input (built with the writer, then byte-patched). */
#include "test-common.h"

#include "gguf.h"
#include "gguf_write.h"

#include <stdint.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------- */
/* Helpers                                                                            */

static const float small_a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint16_t small_b[8] = {0x3c00, 0x4000, 0x4200, 0x4400, 0, 0x8000, 0x7c00, 1};
static uint8_t small_q[68];

/* A small valid file: every writer kv type and three tensors (F32 2-D, F16 1-D, Q8_0). */
static void build_small(void **buf, size_t *size, bool with_alignment)
{
    fr_error err;
    fr_gguf_writer *w;
    static const char *const strs[] = {"a", "bc", ""};
    static const float fs[] = {0.5f, -1.25f};
    static const int32_t is[] = {-7, 0, 7};
    static const uint32_t us[] = {1, 4294967295u};
    for (size_t i = 0; i < sizeof small_q; i++)
        small_q[i] = (uint8_t)(i * 7 + 3);
    ck_assert_int_eq(fr_gguf_writer_create(&w, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_str(w, "general.architecture", "llama", &err), FREE_OK);
    if (with_alignment)
        ck_assert_int_eq(fr_gguf_add_u32(w, "general.alignment", 64, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_u32(w, "test.u32", 7, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_i32(w, "test.i32", -3, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_f32(w, "test.f32", 1.5f, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_bool(w, "test.bool", true, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_arr_str(w, "test.arr_str", strs, 3, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_arr_f32(w, "test.arr_f32", fs, 2, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_arr_i32(w, "test.arr_i32", is, 3, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_arr_u32(w, "test.arr_u32", us, 2, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_tensor(w, "tensor.a", 2, (uint64_t[]){4, 2}, GGUF_TENSOR_F32,
                                        small_a, sizeof small_a, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_tensor(w, "tensor.b", 1, (uint64_t[]){8}, GGUF_TENSOR_F16,
                                        small_b, sizeof small_b, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_tensor(w, "tensor.q", 2, (uint64_t[]){32, 2},
                                        GGUF_TENSOR_Q8_0, small_q, sizeof small_q, &err),
                     FREE_OK);
    ck_assert_int_eq(fr_gguf_writer_write_memory(w, buf, size, &err), FREE_OK);
    fr_gguf_writer_destroy(w);
}

/* Offset of the GGUF string s (u64 length + bytes) in buf; fails the test when absent. */
static size_t find_str(const void *buf, size_t size, const char *s)
{
    uint8_t pat[128];
    uint64_t len = strlen(s);
    memcpy(pat, &len, 8);
    memcpy(pat + 8, s, len);
    const uint8_t *p = memmem(buf, size, pat, 8 + len);
    ck_assert_msg(p != NULL, "string %s not found", s);
    return (size_t)(p - (const uint8_t *)buf);
}

static void put_u32(void *buf, size_t at, uint32_t v)
{
    memcpy((uint8_t *)buf + at, &v, 4);
}

static void put_u64(void *buf, size_t at, uint64_t v)
{
    memcpy((uint8_t *)buf + at, &v, 8);
}

/* Where the fields of tensor info `name` are. */
typedef struct tinfo_at {
    size_t n_dims, ne, type, offset;
} tinfo_at;

static tinfo_at find_tensor_info(const void *buf, size_t size, const char *name)
{
    tinfo_at t;
    t.n_dims = find_str(buf, size, name) + 8 + strlen(name);
    uint32_t nd;
    memcpy(&nd, (const uint8_t *)buf + t.n_dims, 4);
    t.ne = t.n_dims + 4;
    t.type = t.ne + 8 * nd;
    t.offset = t.type + 4;
    return t;
}

/* Parses an exact-size copy (so that any over-read is caught by ASan/valgrind) and checks
 * the status and that the message contains want (and want2 when given). */
static void expect_fail(const void *buf, size_t size, free_status status, const char *want,
                        const char *want2)
{
    void *copy = malloc(size ? size : 1);
    memcpy(copy, buf, size);
    gguf_file *f = (gguf_file *)(uintptr_t)1;
    fr_error err;
    fr_error_clear(&err);
    free_status st = gguf_open_memory(copy, size, &f, &err);
    ck_assert_msg(st == status, "status %d, expected %d (message: %s)", st, status, err.msg);
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(err.msg, want), "message \"%s\" lacks \"%s\"", err.msg, want);
    if (want2)
        ck_assert_msg(strstr(err.msg, want2), "message \"%s\" lacks \"%s\"", err.msg, want2);
    free(copy);
}

static gguf_file *open_ok(const void *buf, size_t size)
{
    gguf_file *f = NULL;
    fr_error err;
    fr_error_clear(&err);
    free_status st = gguf_open_memory(buf, size, &f, &err);
    ck_assert_msg(st == FREE_OK, "open failed: %s", err.msg);
    return f;
}

static gguf_file *open_model(const char *rel)
{
    gguf_file *f = NULL;
    fr_error err;
    fr_error_clear(&err);
    free_status st = gguf_open(fr_test_model_path(rel), &f, &err);
    ck_assert_msg(st == FREE_OK, "%s: %s", rel, err.msg);
    return f;
}

static uint32_t get_u32(const gguf_file *f, const char *key)
{
    uint32_t v = 0;
    bool found = false;
    fr_error err;
    ck_assert_int_eq(gguf_get_u32(f, key, &v, &found, &err), FREE_OK);
    ck_assert_msg(found, "key %s missing", key);
    return v;
}

static float get_f32(const gguf_file *f, const char *key)
{
    float v = 0;
    bool found = false;
    fr_error err;
    ck_assert_int_eq(gguf_get_f32(f, key, &v, &found, &err), FREE_OK);
    ck_assert_msg(found, "key %s missing", key);
    return v;
}

static bool str_is(const gguf_file *f, const char *key, const char *want)
{
    gguf_str s = {0};
    bool found = false;
    fr_error err;
    ck_assert_int_eq(gguf_get_str(f, key, &s, &found, &err), FREE_OK);
    return found && gguf_str_eq(s, want);
}

/* ---------------------------------------------------------------------------------- */
/* Real files                                                                         */

START_TEST(test_free_llama_22m)
{
    gguf_file *f = open_model("free-llama-22M/free-llama-22M.gguf");
    ck_assert_uint_eq(gguf_version(f), 3);
    ck_assert_uint_eq(gguf_n_tensors(f), 111);
    ck_assert_uint_eq(gguf_n_kv(f), 39);
    ck_assert_uint_eq(gguf_file_size(f), 44177440);
    ck_assert(str_is(f, "general.architecture", "llama"));
    ck_assert(str_is(f, "tokenizer.ggml.model", "llama"));
    ck_assert(str_is(f, "free.confidence", "softmax_top1_minus_top2"));
    ck_assert_uint_eq(get_u32(f, "llama.embedding_length"), 384);
    ck_assert_uint_eq(get_u32(f, "llama.block_count"), 12);
    ck_assert_uint_eq(get_u32(f, "llama.attention.head_count"), 6);
    ck_assert_uint_eq(get_u32(f, "llama.attention.head_count_kv"), 2);
    ck_assert_uint_eq(get_u32(f, "llama.feed_forward_length"), 1024);
    ck_assert_uint_eq(get_u32(f, "llama.context_length"), 512);
    ck_assert_uint_eq(get_u32(f, "llama.vocab_size"), 4096);
    ck_assert_uint_eq(get_u32(f, "llama.rope.dimension_count"), 64);
    ck_assert_uint_eq(get_u32(f, "tokenizer.ggml.bos_token_id"), 1);
    ck_assert_uint_eq(get_u32(f, "tokenizer.ggml.eos_token_id"), 2);
    ck_assert_uint_eq(get_u32(f, "free.version"), 1);
    ck_assert_uint_eq(get_u32(f, "free.exit_layer"), 3);
    ck_assert_uint_eq(get_u32(f, "general.file_type"), 1);
    ck_assert(get_f32(f, "llama.attention.layer_norm_rms_epsilon") == 1e-5f);
    ck_assert(get_f32(f, "llama.rope.freq_base") == 10000.0f);
    ck_assert(get_f32(f, "free.kd_alpha") == 0.5f);
    bool b = false, found = false;
    fr_error err;
    ck_assert_int_eq(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b, &found, &err),
                     FREE_OK);
    ck_assert(found && b);
    ck_assert_int_eq(gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b, &found, &err),
                     FREE_OK);
    ck_assert(found && !b);

    const gguf_kv *tok = gguf_find_kv(f, "tokenizer.ggml.tokens");
    ck_assert_ptr_nonnull(tok);
    ck_assert_uint_eq(tok->type, GGUF_TYPE_ARRAY);
    ck_assert_uint_eq(tok->arr_type, GGUF_TYPE_STRING);
    ck_assert_uint_eq(tok->arr_n, 4096);
    gguf_str *strs = malloc(4096 * sizeof *strs);
    ck_assert_int_eq(gguf_array_strings(tok, strs, 4096, &err), FREE_OK);
    ck_assert(gguf_str_eq(strs[0], "<unk>"));
    ck_assert(gguf_str_eq(strs[1], "<s>"));
    ck_assert(gguf_str_eq(strs[2], "</s>"));
    ck_assert(gguf_str_eq(strs[3], "<0x00>"));
    ck_assert(gguf_str_eq(strs[258], "<0xFF>"));
    free(strs);
    int32_t *types = malloc(4096 * sizeof *types);
    ck_assert_int_eq(gguf_array_i32(gguf_find_kv(f, "tokenizer.ggml.token_type"), types, 4096,
                                    &err), FREE_OK);
    ck_assert_int_eq(types[0], 2);
    ck_assert_int_eq(types[1], 3);
    ck_assert_int_eq(types[3], 6);
    free(types);
    float th[9];
    ck_assert_int_eq(gguf_array_f32(gguf_find_kv(f, "free.calib.thresholds"), th, 9, &err),
                     FREE_OK);
    ck_assert(th[0] == 0.3f && th[2] == 0.5f);

    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_eq(t, gguf_tensor_at(f, 0));
    ck_assert_uint_eq(t->type, GGUF_TENSOR_F16);
    ck_assert_uint_eq(t->n_dims, 2);
    ck_assert_uint_eq(t->ne[0], 384);
    ck_assert_uint_eq(t->ne[1], 4096);
    ck_assert_uint_eq(t->ne[2], 1);
    ck_assert_uint_eq(t->nbytes, 384 * 4096 * 2);
    ck_assert_uint_eq(t->offset, 0);
    t = gguf_find_tensor(f, "blk.0.attn_norm.weight");
    ck_assert_uint_eq(t->type, GGUF_TENSOR_F32);
    ck_assert_uint_eq(t->n_dims, 1);
    ck_assert_uint_eq(t->nbytes, 384 * 4);
    t = gguf_find_tensor(f, "output.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->offset, 40932864);
    ck_assert_uint_eq((uintptr_t)t->data % 32, 0);
    ck_assert_ptr_nonnull(gguf_find_tensor(f, "blk.11.ffn_down.weight"));
    ck_assert_ptr_null(gguf_find_tensor(f, "blk.12.ffn_down.weight"));
    ck_assert_ptr_null(gguf_find_kv(f, "llama.nonexistent"));
    ck_assert_ptr_null(gguf_tensor_at(f, 111));
    ck_assert_ptr_null(gguf_kv_at(f, 39));
    gguf_close(f);
}
END_TEST

START_TEST(test_free_llama_22m_q8_0)
{
    FR_TEST_NEED("free-llama-22M/free-llama-22M-q8_0.gguf");
    gguf_file *f = open_model("free-llama-22M/free-llama-22M-q8_0.gguf");
    ck_assert_uint_eq(gguf_n_tensors(f), 111);
    const gguf_tensor *t = gguf_find_tensor(f, "blk.0.attn_q.weight");
    ck_assert_uint_eq(t->type, GGUF_TENSOR_Q8_0);
    ck_assert_uint_eq(t->nbytes, 384 / 32 * 34 * 384);
    ck_assert_str_eq(gguf_tensor_type_name(t->type), "Q8_0");
    gguf_close(f);
}
END_TEST

START_TEST(test_stories260k)
{
    gguf_file *f = open_model("stories260K/stories260K.gguf");
    ck_assert_uint_eq(gguf_version(f), 3);
    ck_assert_uint_eq(gguf_n_tensors(f), 48);
    ck_assert_uint_eq(gguf_n_kv(f), 19);
    ck_assert_uint_eq(get_u32(f, "llama.embedding_length"), 64);
    ck_assert_uint_eq(get_u32(f, "llama.feed_forward_length"), 172);
    ck_assert_uint_eq(get_u32(f, "llama.block_count"), 5);
    ck_assert_uint_eq(get_u32(f, "llama.attention.head_count"), 8);
    ck_assert_uint_eq(get_u32(f, "llama.attention.head_count_kv"), 4);
    ck_assert_uint_eq(get_u32(f, "llama.context_length"), 2048);
    ck_assert_uint_eq(get_u32(f, "tokenizer.ggml.padding_token_id"), 4294967295u);
    float theta = 42.0f;
    bool found = true;
    fr_error err;
    ck_assert_int_eq(gguf_get_f32(f, "llama.rope.freq_base", &theta, &found, &err), FREE_OK);
    ck_assert(!found);
    ck_assert(theta == 42.0f);
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        ck_assert_uint_eq(gguf_tensor_at(f, i)->type, GGUF_TENSOR_F32);
    const gguf_tensor *t = gguf_find_tensor(f, "blk.0.ffn_down.weight");
    ck_assert_uint_eq(t->ne[0], 172);
    ck_assert_uint_eq(t->ne[1], 64);
    /* The first weight of the embedding is a plausible float inside the mapping. */
    float w0;
    memcpy(&w0, gguf_find_tensor(f, "token_embd.weight")->data, 4);
    ck_assert(w0 > -10.0f && w0 < 10.0f);
    gguf_close(f);

    FR_TEST_NEED("stories260K/quant/stories260K-q5_0-mix.gguf");
    f = open_model("stories260K/quant/stories260K-q5_0-mix.gguf");
    int n_q5 = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        n_q5 += gguf_tensor_at(f, i)->type == GGUF_TENSOR_Q5_0;
    ck_assert_int_eq(n_q5, 29);
    gguf_close(f);
}
END_TEST

START_TEST(test_vocab_only)
{
    FR_TEST_NEED("vocab/ggml-vocab-llama-spm.gguf");
    gguf_file *f = open_model("vocab/ggml-vocab-llama-spm.gguf");
    ck_assert_uint_eq(gguf_n_tensors(f), 0);
    ck_assert_uint_eq(gguf_n_kv(f), 22);
    ck_assert_ptr_null(gguf_tensor_at(f, 0));
    const gguf_kv *tok = gguf_find_kv(f, "tokenizer.ggml.tokens");
    ck_assert_uint_eq(tok->arr_n, 32000);
    gguf_str *strs = malloc(32000 * sizeof *strs);
    fr_error err;
    ck_assert_int_eq(gguf_array_strings(tok, strs, 32000, &err), FREE_OK);
    ck_assert(gguf_str_eq(strs[1], "<s>"));
    ck_assert(gguf_str_eq(strs[29871], "\xe2\x96\x81")); /* U+2581, the SentencePiece space */
    free(strs);
    float *scores = malloc(32000 * sizeof *scores);
    ck_assert_int_eq(gguf_array_f32(gguf_find_kv(f, "tokenizer.ggml.scores"), scores, 32000,
                                    &err), FREE_OK);
    free(scores);
    gguf_close(f);
}
END_TEST

START_TEST(test_tiny_random)
{
    FR_TEST_NEED("random/llama-2-tiny-random.gguf");
    gguf_file *f = open_model("random/llama-2-tiny-random.gguf");
    ck_assert_uint_eq(gguf_n_tensors(f), 12);
    ck_assert_uint_eq(gguf_n_kv(f), 18);
    ck_assert_uint_eq(gguf_find_tensor(f, "blk.0.attn_q.weight")->type, GGUF_TENSOR_F16);
    ck_assert_uint_eq(gguf_find_tensor(f, "output_norm.weight")->type, GGUF_TENSOR_F32);
    ck_assert_uint_eq(gguf_find_tensor(f, "output.weight")->ne[1], 32000);
    ck_assert_uint_eq(get_u32(f, "llama.embedding_length"), 8);
    gguf_close(f);
}
END_TEST

START_TEST(test_open_errors)
{
    gguf_file *f = NULL;
    fr_error err;
    ck_assert_int_eq(gguf_open("/nonexistent/x.gguf", &f, &err), FREE_ERR_IO);
    ck_assert_ptr_null(f);
    ck_assert(strstr(err.msg, "/nonexistent/x.gguf"));
    ck_assert_int_eq(gguf_open("/tmp", &f, &err), FREE_ERR_IO);
    ck_assert(strstr(err.msg, "not a regular file"));
    ck_assert_int_eq(gguf_open(NULL, &f, &err), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(gguf_open_memory(NULL, 0, &f, &err), FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "truncated"));
    gguf_close(NULL);
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* Writer                                                                             */

START_TEST(test_writer_round_trip)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    gguf_file *f = open_ok(buf, size);
    fr_error err;
    ck_assert_uint_eq(gguf_version(f), 3);
    ck_assert_uint_eq(gguf_n_kv(f), 9);
    ck_assert_uint_eq(gguf_n_tensors(f), 3);
    ck_assert(str_is(f, "general.architecture", "llama"));
    ck_assert_uint_eq(get_u32(f, "test.u32"), 7);
    ck_assert(get_f32(f, "test.f32") == 1.5f);
    bool b = false, found = false;
    ck_assert_int_eq(gguf_get_bool(f, "test.bool", &b, &found, &err), FREE_OK);
    ck_assert(b && found);
    gguf_str s[3];
    ck_assert_int_eq(gguf_array_strings(gguf_find_kv(f, "test.arr_str"), s, 3, &err), FREE_OK);
    ck_assert(gguf_str_eq(s[0], "a") && gguf_str_eq(s[1], "bc") && gguf_str_eq(s[2], ""));
    float fv[2];
    ck_assert_int_eq(gguf_array_f32(gguf_find_kv(f, "test.arr_f32"), fv, 2, &err), FREE_OK);
    ck_assert(fv[0] == 0.5f && fv[1] == -1.25f);
    int32_t iv[3];
    ck_assert_int_eq(gguf_array_i32(gguf_find_kv(f, "test.arr_i32"), iv, 3, &err), FREE_OK);
    ck_assert(iv[0] == -7 && iv[1] == 0 && iv[2] == 7);
    /* 4294967295 does not fit an int32: converting must fail, not wrap. */
    ck_assert_int_eq(gguf_array_i32(gguf_find_kv(f, "test.arr_u32"), iv, 2, &err),
                     FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "test.arr_u32") && strstr(err.msg, "element 1"));
    ck_assert_int_eq(gguf_array_f32(gguf_find_kv(f, "test.arr_u32"), fv, 2, &err), FREE_OK);
    ck_assert(fv[0] == 1.0f && fv[1] == 4294967296.0f);

    const gguf_tensor *a = gguf_find_tensor(f, "tensor.a");
    const gguf_tensor *bt = gguf_find_tensor(f, "tensor.b");
    const gguf_tensor *q = gguf_find_tensor(f, "tensor.q");
    ck_assert(a && bt && q);
    ck_assert_uint_eq(a->n_dims, 2);
    ck_assert_uint_eq(a->ne[1], 2);
    ck_assert_int_eq(memcmp(a->data, small_a, sizeof small_a), 0);
    ck_assert_int_eq(memcmp(bt->data, small_b, sizeof small_b), 0);
    ck_assert_int_eq(memcmp(q->data, small_q, sizeof small_q), 0);
    ck_assert_uint_eq(bt->offset % 32, 0);
    ck_assert_uint_eq(q->offset % 32, 0);
    ck_assert_uint_eq(q->nbytes, 68);
    gguf_close(f);

    /* The file path writes the same bytes. */
    char path[] = "/tmp/test-gguf-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    fr_gguf_writer *w;
    ck_assert_int_eq(fr_gguf_writer_create(&w, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_u32(w, "general.alignment", 64, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_tensor(w, "x", 1, (uint64_t[]){8}, GGUF_TENSOR_F32, small_a,
                                        32, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_tensor(w, "y", 1, (uint64_t[]){8}, GGUF_TENSOR_F16, small_b,
                                        16, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_writer_write_path(w, path, &err), FREE_OK);
    uint64_t want;
    ck_assert_int_eq(fr_gguf_writer_size(w, &want, &err), FREE_OK);
    fr_gguf_writer_destroy(w);
    ck_assert_int_eq(gguf_open(path, &f, &err), FREE_OK);
    ck_assert_uint_eq(gguf_file_size(f), want);
    ck_assert_uint_eq(gguf_find_tensor(f, "y")->offset, 64);
    ck_assert_uint_eq((uintptr_t)gguf_find_tensor(f, "x")->data % 64, 0);
    gguf_close(f);
    unlink(path);
    free(buf);
}
END_TEST

START_TEST(test_writer_rejects)
{
    fr_gguf_writer *w;
    fr_error err;
    ck_assert_int_eq(fr_gguf_writer_create(&w, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_u32(w, "k", 1, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_f32(w, "k", 1, &err), FREE_ERR_INVALID_ARG);
    ck_assert(strstr(err.msg, "duplicate key k"));
    ck_assert_int_eq(fr_gguf_add_u32(w, "general.alignment", 48, &err), FREE_ERR_INVALID_ARG);
    ck_assert(strstr(err.msg, "power of two"));
    ck_assert_int_eq(fr_gguf_add_str(w, "", "x", &err), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(fr_gguf_add_tensor(w, "t", 1, (uint64_t[]){8}, GGUF_TENSOR_F32, small_a,
                                        31, &err), FREE_ERR_INVALID_ARG);
    ck_assert(strstr(err.msg, "31 bytes given"));
    ck_assert_int_eq(fr_gguf_add_tensor(w, "t", 1, (uint64_t[]){33}, GGUF_TENSOR_Q8_0, small_q,
                                        34, &err), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(fr_gguf_add_tensor(w, "t", 5, (uint64_t[]){1, 1, 1, 1, 1},
                                        GGUF_TENSOR_F32, small_a, 4, &err),
                     FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(fr_gguf_add_tensor(w, "t", 1, (uint64_t[]){8}, GGUF_TENSOR_F32, small_a,
                                        32, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_add_tensor(w, "t", 1, (uint64_t[]){8}, GGUF_TENSOR_F32, small_a,
                                        32, &err), FREE_ERR_INVALID_ARG);
    ck_assert(strstr(err.msg, "duplicate tensor t"));
    fr_gguf_remove_kv(w, "k");
    ck_assert_int_eq(fr_gguf_add_f32(w, "k", 2, &err), FREE_OK);
    fr_gguf_writer_destroy(w);
    fr_gguf_writer_destroy(NULL);
}
END_TEST

/* Copying every kv and tensor of a llama.cpp-written file reproduces it byte for byte. */
START_TEST(test_writer_copies_real_file)
{
    size_t size;
    char *orig = fr_test_read_file(fr_test_model_path("stories260K/stories260K.gguf"), &size);
    ck_assert_ptr_nonnull(orig);
    gguf_file *f = open_ok(orig, size);
    fr_gguf_writer *w;
    fr_error err;
    ck_assert_int_eq(fr_gguf_writer_create(&w, &err), FREE_OK);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++)
        ck_assert_int_eq(fr_gguf_add_kv_copy(w, gguf_kv_at(f, i), &err), FREE_OK);
    char name[256];
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        ck_assert_int_eq(fr_gguf_add_tensor(w, name, t->n_dims, t->ne, t->type, t->data,
                                            t->nbytes, &err), FREE_OK);
    }
    void *copy;
    size_t copy_size;
    ck_assert_int_eq(fr_gguf_writer_write_memory(w, &copy, &copy_size, &err), FREE_OK);
    ck_assert_uint_eq(copy_size, size);
    ck_assert_int_eq(memcmp(copy, orig, size), 0);
    free(copy);
    fr_gguf_writer_destroy(w);
    gguf_close(f);
    free(orig);
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* Hostile input                                                                      */

static void expect_truncated(const void *buf, size_t n)
{
    void *copy = malloc(n ? n : 1);
    memcpy(copy, buf, n);
    gguf_file *f = NULL;
    fr_error err;
    fr_error_clear(&err);
    free_status st = gguf_open_memory(copy, n, &f, &err);
    ck_assert_msg(st == FREE_ERR_FORMAT, "truncated at %zu: status %d (%s)", n, st, err.msg);
    ck_assert_msg(strstr(err.msg, "truncated") || strstr(err.msg, "past the end"),
                  "truncated at %zu: message \"%s\"", n, err.msg);
    free(copy);
}

START_TEST(test_truncated_small_every_offset)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, true);
    for (size_t n = 0; n < size; n++)
        expect_truncated(buf, n);
    free(buf);
}
END_TEST

/* Every offset of a real header (kvs, tensor infos, padding), then a sample of the data. */
START_TEST(test_truncated_real_file)
{
    size_t size;
    char *buf = fr_test_read_file(fr_test_model_path("stories260K/stories260K.gguf"), &size);
    ck_assert_ptr_nonnull(buf);
    for (size_t n = 0; n <= 14176; n++)
        expect_truncated(buf, n);
    for (size_t n = 14177; n < size; n += 4099)
        expect_truncated(buf, n);
    expect_truncated(buf, size - 1);
    free(buf);
}
END_TEST

START_TEST(test_bad_magic)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    memcpy(buf, "GGML", 4);
    expect_fail(buf, size, FREE_ERR_FORMAT, "not a GGUF file", "47 47 4d 4c");
    free(buf);
}
END_TEST

START_TEST(test_bad_version)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    put_u32(buf, 4, 1);
    expect_fail(buf, size, FREE_ERR_UNSUPPORTED, "version 1 is not supported", NULL);
    put_u32(buf, 4, 99);
    expect_fail(buf, size, FREE_ERR_UNSUPPORTED, "version 99 is not supported", NULL);
    put_u32(buf, 4, 0x03000000u);
    expect_fail(buf, size, FREE_ERR_UNSUPPORTED, "big-endian", NULL);
    put_u32(buf, 4, 2);
    gguf_file *f = open_ok(buf, size); /* v2 has the same layout as v3 */
    ck_assert_uint_eq(gguf_version(f), 2);
    gguf_close(f);
    free(buf);
}
END_TEST

START_TEST(test_huge_counts)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    put_u64(buf, 8, 1ull << 62);
    expect_fail(buf, size, FREE_ERR_FORMAT, "n_tensors 4611686018427387904 is impossible",
                "truncated or corrupt");
    put_u64(buf, 8, UINT64_MAX);
    expect_fail(buf, size, FREE_ERR_FORMAT, "n_tensors 18446744073709551615", NULL);
    put_u64(buf, 8, 3);
    put_u64(buf, 16, 1ull << 62);
    expect_fail(buf, size, FREE_ERR_FORMAT, "n_kv 4611686018427387904 is impossible", NULL);
    put_u64(buf, 16, UINT64_MAX / 14 + 1); /* overflows when multiplied by the minimum size */
    expect_fail(buf, size, FREE_ERR_FORMAT, "is impossible", NULL);
    free(buf);
}
END_TEST

START_TEST(test_huge_string_length)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    size_t key = find_str(buf, size, "test.u32");
    put_u64(buf, key, 1ull << 62);
    expect_fail(buf, size, FREE_ERR_FORMAT, "length 4611686018427387904", "past the end");
    free(buf);

    build_small(&buf, &size, false);
    size_t v = find_str(buf, size, "general.architecture") + 8 + 20 + 4;
    put_u64(buf, v, UINT64_MAX);
    expect_fail(buf, size, FREE_ERR_FORMAT, "key general.architecture: truncated",
                "18446744073709551615");
    free(buf);

    build_small(&buf, &size, false);
    put_u64(buf, find_str(buf, size, "tensor.b"), 1ull << 40);
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor name", "past the end");
    free(buf);
}
END_TEST

START_TEST(test_array_count_past_end)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    size_t at = find_str(buf, size, "test.arr_f32") + 8 + 12 + 4 + 4;
    put_u64(buf, at, 1ull << 40);
    expect_fail(buf, size, FREE_ERR_FORMAT, "key test.arr_f32: array count 1099511627776",
                "past the end");
    put_u64(buf, at, UINT64_MAX); /* count * 4 overflows */
    expect_fail(buf, size, FREE_ERR_FORMAT, "key test.arr_f32: array count", NULL);
    free(buf);

    build_small(&buf, &size, false);
    at = find_str(buf, size, "test.arr_str") + 8 + 12 + 4 + 4;
    put_u64(buf, at, 1ull << 61);
    expect_fail(buf, size, FREE_ERR_FORMAT, "key test.arr_str: array count", NULL);
    /* As many strings as the count check allows: walking them runs off the end. */
    put_u64(buf, at, (size - at - 8) / 8);
    expect_fail(buf, size, FREE_ERR_FORMAT, "key test.arr_str: truncated file", NULL);
    free(buf);
}
END_TEST

START_TEST(test_unknown_kv_type)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    size_t at = find_str(buf, size, "test.u32") + 8 + 8;
    put_u32(buf, at, 99);
    expect_fail(buf, size, FREE_ERR_FORMAT, "key test.u32: unknown value type 99", NULL);
    free(buf);

    build_small(&buf, &size, false);
    at = find_str(buf, size, "test.arr_i32") + 8 + 12 + 4;
    put_u32(buf, at, GGUF_TYPE_COUNT);
    expect_fail(buf, size, FREE_ERR_FORMAT, "key test.arr_i32: unknown array element type 13",
                NULL);
    free(buf);
}
END_TEST

START_TEST(test_duplicate_key)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    size_t at = find_str(buf, size, "test.i32");
    memcpy((char *)buf + at + 8, "test.u32", 8);
    expect_fail(buf, size, FREE_ERR_FORMAT, "duplicate key test.u32", NULL);
    free(buf);
}
END_TEST

START_TEST(test_bad_n_dims)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    tinfo_at t = find_tensor_info(buf, size, "tensor.b");
    put_u32(buf, t.n_dims, 0);
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor tensor.b: n_dims 0 is not in 1..4", NULL);
    put_u32(buf, t.n_dims, 5);
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor tensor.b: n_dims 5 is not in 1..4", NULL);
    free(buf);
}
END_TEST

START_TEST(test_bad_ne)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    tinfo_at t = find_tensor_info(buf, size, "tensor.a");
    put_u64(buf, t.ne + 8, 0);
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor tensor.a: dimension 1 is 0", NULL);
    put_u64(buf, t.ne, 1ull << 32);
    put_u64(buf, t.ne + 8, 1ull << 32);
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor tensor.a: element count overflows", NULL);
    put_u64(buf, t.ne, 1ull << 62); /* the element count fits; its F32 byte size does not */
    put_u64(buf, t.ne + 8, 1);
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor tensor.a: byte size overflows", NULL);
    put_u64(buf, t.ne, 1ull << 40); /* fits, but is far past the end of the file */
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor tensor.a: offset 0 + size 4398046511104",
                "past the end");
    free(buf);

    build_small(&buf, &size, false);
    t = find_tensor_info(buf, size, "tensor.q");
    put_u64(buf, t.ne, 48);
    expect_fail(buf, size, FREE_ERR_FORMAT,
                "tensor tensor.q: ne[0] = 48 is not a multiple of the Q8_0 block size 32", NULL);
    free(buf);
}
END_TEST

START_TEST(test_unknown_tensor_type)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    tinfo_at t = find_tensor_info(buf, size, "tensor.a");
    put_u32(buf, t.type, 1234);
    expect_fail(buf, size, FREE_ERR_UNSUPPORTED,
                "tensor tensor.a: unsupported tensor type 1234 (unknown); libfree reads F32, "
                "F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K", NULL);
    put_u32(buf, t.type, 10);
    expect_fail(buf, size, FREE_ERR_UNSUPPORTED, "unsupported tensor type 10 (Q2_K)", NULL);
    free(buf);
}
END_TEST

START_TEST(test_offset_past_end)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    tinfo_at t = find_tensor_info(buf, size, "tensor.q");
    uint64_t orig;
    memcpy(&orig, (char *)buf + t.offset, 8);
    put_u64(buf, t.offset, orig + 32);
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor tensor.q: offset", "past the end of the file");
    put_u64(buf, t.offset, UINT64_MAX - 31); /* offset + size overflows */
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor tensor.q: offset 18446744073709551584",
                "past the end");
    free(buf);
}
END_TEST

START_TEST(test_misaligned_offset)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    tinfo_at t = find_tensor_info(buf, size, "tensor.b");
    uint64_t orig;
    memcpy(&orig, (char *)buf + t.offset, 8);
    put_u64(buf, t.offset, orig + 4);
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensor tensor.b: offset",
                "is not a multiple of the alignment 32");
    free(buf);
}
END_TEST

START_TEST(test_overlapping_tensors)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    tinfo_at t = find_tensor_info(buf, size, "tensor.q");
    put_u64(buf, t.offset, 32); /* tensor.b occupies [32, 48) */
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensors tensor.b (offset 32, 16 bytes) and "
                "tensor.q (offset 32) overlap", NULL);
    free(buf);

    build_small(&buf, &size, false);
    t = find_tensor_info(buf, size, "tensor.a");
    put_u64(buf, t.ne + 8, 3); /* tensor.a now spans [0, 48) and runs into tensor.b */
    expect_fail(buf, size, FREE_ERR_FORMAT, "tensors tensor.a", "overlap");
    free(buf);
}
END_TEST

START_TEST(test_duplicate_tensor_name)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    size_t at = find_str(buf, size, "tensor.q");
    memcpy((char *)buf + at + 8, "tensor.a", 8);
    expect_fail(buf, size, FREE_ERR_FORMAT, "duplicate tensor name tensor.a", NULL);
    free(buf);
}
END_TEST

START_TEST(test_bad_alignment)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, true);
    size_t at = find_str(buf, size, "general.alignment") + 8 + 17 + 4;
    gguf_file *f = open_ok(buf, size);
    ck_assert_uint_eq(gguf_find_tensor(f, "tensor.b")->offset, 64);
    gguf_close(f);
    put_u32(buf, at, 48);
    expect_fail(buf, size, FREE_ERR_FORMAT, "general.alignment 48 is not a power of two",
                NULL);
    put_u32(buf, at, 0);
    expect_fail(buf, size, FREE_ERR_FORMAT, "general.alignment 0 is not a power of two", NULL);
    put_u32(buf, at - 4, GGUF_TYPE_FLOAT32);
    expect_fail(buf, size, FREE_ERR_FORMAT, "key general.alignment: has type f32", NULL);
    free(buf);
}
END_TEST

/* A hand-made file with nested arrays: accepted to a bounded depth. */
typedef struct bytes {
    uint8_t b[1024];
    size_t n;
} bytes;

static void b_u32(bytes *b, uint32_t v)
{
    memcpy(b->b + b->n, &v, 4);
    b->n += 4;
}

static void b_u64(bytes *b, uint64_t v)
{
    memcpy(b->b + b->n, &v, 8);
    b->n += 8;
}

static void b_str(bytes *b, const char *s)
{
    b_u64(b, strlen(s));
    memcpy(b->b + b->n, s, strlen(s));
    b->n += strlen(s);
}

static void nested_file(bytes *b, int depth)
{
    b->n = 0;
    memcpy(b->b, "GGUF", 4);
    b->n = 4;
    b_u32(b, 3);
    b_u64(b, 0);
    b_u64(b, 1);
    b_str(b, "nest");
    b_u32(b, GGUF_TYPE_ARRAY);
    for (int i = 0; i < depth; i++) {
        b_u32(b, GGUF_TYPE_ARRAY);
        b_u64(b, 1);
    }
    b_u32(b, GGUF_TYPE_STRING);
    b_u64(b, 2);
    b_str(b, "x");
    b_str(b, "yz");
}

START_TEST(test_nested_arrays)
{
    bytes b;
    nested_file(&b, 2);
    gguf_file *f = open_ok(b.b, b.n);
    const gguf_kv *kv = gguf_find_kv(f, "nest");
    ck_assert_uint_eq(kv->arr_type, GGUF_TYPE_ARRAY);
    ck_assert_uint_eq(kv->arr_n, 1);
    ck_assert_uint_eq(kv->value_size, b.n - (size_t)(kv->value - b.b));
    gguf_str s;
    fr_error err;
    ck_assert_int_eq(gguf_array_strings(kv, &s, 1, &err), FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "key nest: array of array, expected strings"));
    gguf_close(f);
    nested_file(&b, 50);
    expect_fail(b.b, b.n, FREE_ERR_FORMAT, "key nest: arrays nested deeper than 8", NULL);
}
END_TEST

START_TEST(test_wrong_typed_getters)
{
    void *buf;
    size_t size;
    build_small(&buf, &size, false);
    gguf_file *f = open_ok(buf, size);
    fr_error err;
    uint32_t u = 5;
    float x = 0;
    bool b, found = false;
    gguf_str s;
    ck_assert_int_eq(gguf_get_u32(f, "general.architecture", &u, &found, &err),
                     FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "key general.architecture: has type string, expected an integer"));
    ck_assert_uint_eq(u, 5);
    ck_assert_int_eq(gguf_get_u32(f, "test.i32", &u, &found, &err), FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "key test.i32: value -3 is not in 0..4294967295"));
    ck_assert_int_eq(gguf_get_f32(f, "test.u32", &x, &found, &err), FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "key test.u32: has type u32, expected f32 or f64"));
    ck_assert_int_eq(gguf_get_bool(f, "test.f32", &b, &found, &err), FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "key test.f32: has type f32, expected bool"));
    ck_assert_int_eq(gguf_get_str(f, "test.arr_str", &s, &found, &err), FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "key test.arr_str: has type array, expected string"));
    gguf_str strs[3];
    ck_assert_int_eq(gguf_array_strings(gguf_find_kv(f, "test.arr_f32"), strs, 2, &err),
                     FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "key test.arr_f32: array of f32, expected strings"));
    ck_assert_int_eq(gguf_array_strings(gguf_find_kv(f, "test.arr_str"), strs, 2, &err),
                     FREE_ERR_INVALID_ARG);
    ck_assert(strstr(err.msg, "asked for 2 elements but the array has 3"));
    int32_t iv[2];
    ck_assert_int_eq(gguf_array_i32(gguf_find_kv(f, "test.arr_f32"), iv, 2, &err),
                     FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "key test.arr_f32: element 0 is not a 32-bit signed integer"));
    ck_assert_int_eq(gguf_array_f32(gguf_find_kv(f, "test.u32"), &x, 1, &err),
                     FREE_ERR_FORMAT);
    ck_assert(strstr(err.msg, "key test.u32: has type u32, expected an array"));
    ck_assert_int_eq(gguf_array_f32(NULL, &x, 1, &err), FREE_ERR_INVALID_ARG);
    /* Absent keys: FREE_OK, found = false, output untouched. */
    found = true;
    ck_assert_int_eq(gguf_get_u32(f, "no.such.key", &u, &found, &err), FREE_OK);
    ck_assert(!found);
    ck_assert_uint_eq(u, 5);
    gguf_close(f);
    free(buf);
}
END_TEST

START_TEST(test_row_bytes)
{
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_F32, 7), 28);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_F16, 7), 14);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q8_0, 64), 68);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q4_0, 64), 36);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q4_1, 32), 20);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q5_0, 32), 22);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q5_1, 32), 24);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q8_0, 33), 0);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q4_K, 512), 288);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q5_K, 256), 176);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q6_K, 256), 210);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q6_K, 384), 0);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_BF16, 3), 6);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q2_K, 256), 0);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_F32, UINT64_MAX), 0);
    ck_assert_str_eq(gguf_tensor_type_name(GGUF_TENSOR_F16), "F16");
    ck_assert_str_eq(gguf_tensor_type_name(5), "unknown");
    ck_assert_str_eq(gguf_tensor_type_name(1000), "unknown");
}
END_TEST

static Suite *gguf_suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("real_files");
    tcase_add_test(tc, test_free_llama_22m);
    tcase_add_test(tc, test_free_llama_22m_q8_0);
    tcase_add_test(tc, test_stories260k);
    tcase_add_test(tc, test_vocab_only);
    tcase_add_test(tc, test_tiny_random);
    tcase_add_test(tc, test_open_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer");
    tcase_add_test(tc, test_writer_round_trip);
    tcase_add_test(tc, test_writer_rejects);
    tcase_add_test(tc, test_writer_copies_real_file);
    tcase_add_test(tc, test_row_bytes);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile");
    tcase_add_test(tc, test_truncated_small_every_offset);
    tcase_add_test(tc, test_truncated_real_file);
    tcase_add_test(tc, test_bad_magic);
    tcase_add_test(tc, test_bad_version);
    tcase_add_test(tc, test_huge_counts);
    tcase_add_test(tc, test_huge_string_length);
    tcase_add_test(tc, test_array_count_past_end);
    tcase_add_test(tc, test_unknown_kv_type);
    tcase_add_test(tc, test_duplicate_key);
    tcase_add_test(tc, test_bad_n_dims);
    tcase_add_test(tc, test_bad_ne);
    tcase_add_test(tc, test_unknown_tensor_type);
    tcase_add_test(tc, test_offset_past_end);
    tcase_add_test(tc, test_misaligned_offset);
    tcase_add_test(tc, test_overlapping_tensors);
    tcase_add_test(tc, test_duplicate_tensor_name);
    tcase_add_test(tc, test_bad_alignment);
    tcase_add_test(tc, test_nested_arrays);
    tcase_add_test(tc, test_wrong_typed_getters);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(gguf_suite)
