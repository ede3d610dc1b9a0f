/* Fuzz target: whole GGUF files. The bytes are parsed in memory (gguf_open_memory, then
 * every key-value, array and tensor is read back through the typed getters) and then
 * loaded through the public path, free_model_load on a memfd, with and without
 * vocab_only. A model that loads is described, tokenizes a line, and decodes two tokens
 * in a small context: whatever the file says, nothing may read outside it or crash. */
#include "fuzz-common.h"
#include "gguf.h"
#include "tokenizer.h"

static void touch(const void *p, uint64_t n)
{
    /* Reads the first and the last byte so that ASan sees a wrong range. */
    if (n) {
        volatile unsigned char a = ((const unsigned char *)p)[0];
        volatile unsigned char b = ((const unsigned char *)p)[n - 1];
        (void)a;
        (void)b;
    }
}

static void walk_kv(const gguf_file *f, const gguf_kv *kv)
{
    char key[256];
    fr_error err;
    bool found;
    size_t n = kv->key.len < sizeof key - 1 ? (size_t)kv->key.len : sizeof key - 1;
    touch(kv->key.ptr, kv->key.len);
    touch(kv->value, kv->value_size);
    memcpy(key, kv->key.ptr, n);
    key[n] = '\0';
    /* An embedded NUL makes the look-up find another key or none: both are fine. */
    const gguf_kv *again = gguf_find_kv(f, key);
    FR_FUZZ_ASSERT(!again || gguf_str_eq(again->key, key));
    uint32_t u;
    float x;
    bool b;
    gguf_str s;
    if (gguf_get_u32(f, key, &u, &found, &err) != FREE_OK)
        FR_FUZZ_ASSERT(err.msg[0] != '\0');
    if (gguf_get_f32(f, key, &x, &found, &err) != FREE_OK)
        FR_FUZZ_ASSERT(err.msg[0] != '\0');
    gguf_get_bool(f, key, &b, &found, &err);
    if (gguf_get_str(f, key, &s, &found, &err) == FREE_OK && found)
        touch(s.ptr, s.len);
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_n == 0 || kv->arr_n > (1u << 20))
        return;
    if (kv->arr_type == GGUF_TYPE_STRING) {
        gguf_str *v = malloc(kv->arr_n * sizeof *v);
        if (v && gguf_array_strings(kv, v, kv->arr_n, &err) == FREE_OK)
            for (uint64_t i = 0; i < kv->arr_n; i++)
                touch(v[i].ptr, v[i].len);
        free(v);
    } else {
        float *v = malloc(kv->arr_n * sizeof *v);
        int32_t *w = malloc(kv->arr_n * sizeof *w);
        if (v)
            gguf_array_f32(kv, v, kv->arr_n, &err);
        if (w)
            gguf_array_i32(kv, w, kv->arr_n, &err);
        free(v);
        free(w);
    }
}

static void parse_in_memory(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    fr_error err;
    fr_error_clear(&err);
    if (gguf_open_memory(data, size, &f, &err) != FREE_OK) {
        FR_FUZZ_ASSERT(f == NULL && err.msg[0] != '\0');
        return;
    }
    for (uint64_t i = 0; i < gguf_n_kv(f); i++)
        walk_kv(f, gguf_kv_at(f, i));
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        touch(t->name.ptr, t->name.len);
        FR_FUZZ_ASSERT((const uint8_t *)t->data >= data &&
                       (const uint8_t *)t->data + t->nbytes <= data + size);
        touch(t->data, t->nbytes);
        gguf_row_bytes(t->type, t->ne[0]);
        gguf_tensor_type_name(t->type);
    }
    fr_tokenizer *tok = NULL;
    fr_error_clear(&err);
    if (fr_tokenizer_load(f, &tok, &err) == FREE_OK) {
        int32_t ids[64];
        size_t n = 0;
        fr_tokenize(tok, "Once upon a time \xff", 17, true, ids, 64, &n, &err);
        fr_tokenizer_destroy(tok);
    } else {
        FR_FUZZ_ASSERT(err.msg[0] != '\0');
    }
    gguf_close(f);
}

static void use_model(free_model *m)
{
    free_model_describe(m);
    free_model_architecture(m);
    int32_t ids[32];
    size_t n = 0;
    char text[256];
    free_status s = free_tokenize(m, "Once upon a time", -1, 1, ids, 32, &n);
    fr_fuzz_check_message(s, "free_tokenize");
    if (s == FREE_OK) {
        s = free_detokenize(m, ids, n, text, sizeof text, &n);
        fr_fuzz_check_message(s, "free_detokenize");
    }
    if (free_model_n_layers(m) == 0)
        return; /* vocab_only */
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_ctx = 8;
    p.n_threads = 1;
    p.n_batch = 4;
    free_ctx *ctx = NULL;
    s = free_ctx_create(m, &p, &ctx);
    fr_fuzz_check_message(s, "free_ctx_create");
    if (s != FREE_OK)
        return;
    s = free_decode(ctx, "Once", -1, 2, NULL, NULL);
    fr_fuzz_check_message(s, "free_decode");
    free_ctx_destroy(ctx);
}

static void load_public(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-gguf", MFD_CLOEXEC);
    if (fd < 0) {
        perror("memfd_create");
        abort();
    }
    if (size && write(fd, data, size) != (ssize_t)size) {
        perror("write");
        abort();
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    for (int vocab_only = 1; vocab_only >= 0; vocab_only--) {
        free_model_params p;
        free_model_params_init(&p, sizeof p);
        p.vocab_only = vocab_only;
        free_model *m = NULL;
        free_status s = free_model_load(path, &p, &m);
        fr_fuzz_check_message(s, "free_model_load");
        FR_FUZZ_ASSERT((s == FREE_OK) == (m != NULL));
        if (m) {
            use_model(m);
            free_model_destroy(m);
        } else if (vocab_only) {
            break; /* the full load fails too */
        }
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        fr_fuzz_quiet();
        quiet = 1;
    }
    parse_in_memory(data, size);
    load_public(data, size);
    return 0;
}
