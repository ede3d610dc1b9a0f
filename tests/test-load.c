/* Bad input through the public API: model files the test writes with the GGUF writer
 * (missing or misshapen tensors, bad hyper-parameters, unsupported types) and byte-level
 * corruptions of a valid file (truncation, magic, version, counts, offsets). Each must
 * fail with its own status and a message that names the problem, and leave nothing
 * behind: no model, no mapping, no descriptor. */
#include "test-common.h"

#include "gguf_write.h"

#include <dirent.h>
#include <fcntl.h>
#include <free/free.h>
#include <math.h>
#include <stdbool.h>
#include <unistd.h>

enum {
    DIM = 64, N_LAYER = 2, N_HEAD = 4, N_HEAD_KV = 2, HEAD_DIM = DIM / N_HEAD,
    KV_DIM = N_HEAD_KV * HEAD_DIM, N_FF = 96, N_CTX = 32,
    N_VOCAB = 3 + 256 + 8 /* <unk> <s> </s>, the bytes, a few pieces */
};

/* What to change in the otherwise valid tiny model. */
typedef struct spec {
    const char *arch;        /* general.architecture; NULL = "llama" */
    const char *drop_tensor; /* left out of the file */
    const char *drop_key;    /* left out of the file */
    const char *q8_tensor;   /* stored as Q8_0 instead of F32 */
    int q_rows;              /* rows of blk.0.attn_q.weight; 0 = DIM */
    uint32_t head_count;     /* 0 = N_HEAD */
    const int32_t *exit_layer; /* free.exit_layer; NULL = key absent */
    int embd_rows;           /* rows of token_embd.weight; 0 = N_VOCAB */
    uint32_t ctx_len;        /* llama.context_length; 0 = N_CTX */
} spec;

/* Backs every tensor (weights are borrowed by the writer until the write). */
static float weights[N_VOCAB * DIM];

static void fill_weights(void)
{
    for (size_t i = 0; i < sizeof weights / sizeof weights[0]; i++)
        weights[i] = (float)(0.05 * sin(0.37 * (double)i));
}

#define WRITE_OK(expr) ck_assert_msg((expr) == FREE_OK, "writer: %s", err.msg)

static void add_matrix(fr_gguf_writer *w, const spec *sp, const char *name, int rows,
                       int cols)
{
    fr_error err = {FREE_OK, ""};
    if (sp->drop_tensor && strcmp(sp->drop_tensor, name) == 0)
        return;
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    if (sp->q8_tensor && strcmp(sp->q8_tensor, name) == 0) {
        ck_assert_int_eq(cols % 32, 0);
        uint64_t bytes = (uint64_t)rows * (uint64_t)(cols / 32) * 34;
        ck_assert_uint_le(bytes, sizeof weights);
        WRITE_OK(fr_gguf_add_tensor(w, name, 2, ne, GGUF_TENSOR_Q8_0, weights, bytes, &err));
        return;
    }
    ck_assert_uint_le((size_t)rows * (size_t)cols, sizeof weights / sizeof weights[0]);
    WRITE_OK(fr_gguf_add_tensor(w, name, rows == 1 ? 1 : 2, ne, GGUF_TENSOR_F32, weights,
                                (uint64_t)rows * (uint64_t)cols * 4, &err));
}

static void add_u32(fr_gguf_writer *w, const spec *sp, const char *key, uint32_t v)
{
    fr_error err = {FREE_OK, ""};
    if (!sp->drop_key || strcmp(sp->drop_key, key) != 0)
        WRITE_OK(fr_gguf_add_u32(w, key, v, &err));
}

static fr_gguf_writer *make_writer(const spec *sp)
{
    fr_error err = {FREE_OK, ""};
    fr_gguf_writer *w = NULL;
    fill_weights();
    WRITE_OK(fr_gguf_writer_create(&w, &err));
    WRITE_OK(fr_gguf_add_str(w, "general.architecture", sp->arch ? sp->arch : "llama", &err));
    char key[96];
    const char *a = sp->arch ? sp->arch : "llama";
#define ARCH_KEY(s) (snprintf(key, sizeof key, "%s.%s", a, s), key)
    add_u32(w, sp, ARCH_KEY("context_length"), sp->ctx_len ? sp->ctx_len : N_CTX);
    add_u32(w, sp, ARCH_KEY("embedding_length"), DIM);
    add_u32(w, sp, ARCH_KEY("block_count"), N_LAYER);
    add_u32(w, sp, ARCH_KEY("feed_forward_length"), N_FF);
    add_u32(w, sp, ARCH_KEY("attention.head_count"), sp->head_count ? sp->head_count : N_HEAD);
    add_u32(w, sp, ARCH_KEY("attention.head_count_kv"), N_HEAD_KV);
    add_u32(w, sp, ARCH_KEY("rope.dimension_count"), HEAD_DIM);
    WRITE_OK(fr_gguf_add_f32(w, ARCH_KEY("rope.freq_base"), 10000.0f, &err));
    WRITE_OK(fr_gguf_add_f32(w, ARCH_KEY("attention.layer_norm_rms_epsilon"), 1e-5f, &err));
#undef ARCH_KEY
    if (sp->exit_layer)
        WRITE_OK(fr_gguf_add_i32(w, "free.exit_layer", *sp->exit_layer, &err));

    static char pieces[N_VOCAB][16];
    const char *tokens[N_VOCAB];
    float scores[N_VOCAB];
    int32_t types[N_VOCAB];
    for (int i = 0; i < N_VOCAB; i++) {
        if (i < 3)
            snprintf(pieces[i], sizeof pieces[i], "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (i < 259)
            snprintf(pieces[i], sizeof pieces[i], "<0x%02X>", i - 3);
        else
            snprintf(pieces[i], sizeof pieces[i], "\xe2\x96\x81%c", 'a' + (i - 259));
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
        tokens[i] = pieces[i];
        scores[i] = -(float)i;
    }
    WRITE_OK(fr_gguf_add_str(w, "tokenizer.ggml.model", "llama", &err));
    WRITE_OK(fr_gguf_add_arr_str(w, "tokenizer.ggml.tokens", tokens, N_VOCAB, &err));
    WRITE_OK(fr_gguf_add_arr_f32(w, "tokenizer.ggml.scores", scores, N_VOCAB, &err));
    WRITE_OK(fr_gguf_add_arr_i32(w, "tokenizer.ggml.token_type", types, N_VOCAB, &err));

    add_matrix(w, sp, "token_embd.weight", sp->embd_rows ? sp->embd_rows : N_VOCAB, DIM);
    add_matrix(w, sp, "output_norm.weight", 1, DIM);
    add_matrix(w, sp, "output.weight", N_VOCAB, DIM);
    for (int il = 0; il < N_LAYER; il++) {
        char name[64];
#define LAYER(s) (snprintf(name, sizeof name, "blk.%d.%s.weight", il, s), name)
        add_matrix(w, sp, LAYER("attn_norm"), 1, DIM);
        add_matrix(w, sp, LAYER("attn_q"), il == 0 && sp->q_rows ? sp->q_rows : DIM, DIM);
        add_matrix(w, sp, LAYER("attn_k"), KV_DIM, DIM);
        add_matrix(w, sp, LAYER("attn_v"), KV_DIM, DIM);
        add_matrix(w, sp, LAYER("attn_output"), DIM, DIM);
        add_matrix(w, sp, LAYER("ffn_norm"), 1, DIM);
        add_matrix(w, sp, LAYER("ffn_gate"), N_FF, DIM);
        add_matrix(w, sp, LAYER("ffn_up"), N_FF, DIM);
        add_matrix(w, sp, LAYER("ffn_down"), DIM, N_FF);
#undef LAYER
    }
    return w;
}

/* The file bytes of a model built from sp. */
static uint8_t *model_bytes(const spec *sp, size_t *size)
{
    fr_error err = {FREE_OK, ""};
    void *buf = NULL;
    fr_gguf_writer *w = make_writer(sp);
    WRITE_OK(fr_gguf_writer_write_memory(w, &buf, size, &err));
    fr_gguf_writer_destroy(w);
    return buf;
}

/* ---- files and leak checks -------------------------------------------------------- */

typedef struct temp_file {
    char path[64];
} temp_file;

static void tmp_create(temp_file *t)
{
    snprintf(t->path, sizeof t->path, "/tmp/test-load-XXXXXX");
    int fd = mkstemp(t->path);
    ck_assert_int_ge(fd, 0);
    close(fd);
}

/* Replaces the file (a new inode: truncating a written file in place makes ext4 flush it,
 * which costs milliseconds per call). */
static void tmp_write(const temp_file *t, const void *data, size_t n)
{
    unlink(t->path);
    int fd = open(t->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Lines of /proc/self/maps that map path (a procfs file has no size: read it by lines). */
static int count_mappings(const char *path)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096 + 128];
    int n = 0;
    ck_assert_ptr_nonnull(f);
    const size_t len = strlen(path);
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, path);
        n += p && p > line && p[-1] == ' ' && (p[len] == '\n' || p[len] == ' ');
    }
    fclose(f);
    return n;
}

/* Loads path and expects status with a message containing every string of `needles`
 * (NULL-terminated), no model, and no mapping of the file left. A temporary file is
 * removed before the checks, so that a failing check leaves nothing in /tmp (a mapping
 * would still show in /proc/self/maps, as "path (deleted)"). */
static void expect_fail_load(const char *path, bool temporary, free_status want,
                             const char *const *needles, const char *what)
{
    free_model *m = (free_model *)&m; /* must be reset to NULL */
    free_status s = free_model_load(path, NULL, &m);
    if (temporary)
        unlink(path);
    const char *msg = free_last_error();
    ck_assert_msg(s == want, "%s: status %d (%s), expected %d (%s); message: %s", what, s,
                  free_strerror(s), want, free_strerror(want), msg);
    ck_assert_msg(m == NULL, "%s: *out is not NULL after a failed load", what);
    for (const char *const *n = needles; *n; n++)
        ck_assert_msg(strstr(msg, *n) != NULL, "%s: message \"%s\" does not mention \"%s\"",
                      what, msg, *n);
    ck_assert_msg(count_mappings(path) == 0, "%s: the file is still mapped", what);
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

static void expect_fail_bytes(const void *data, size_t n, free_status want,
                              const char *const *needles, const char *what)
{
    temp_file t;
    tmp_create(&t);
    tmp_write(&t, data, n);
    expect_fail_load(t.path, true, want, needles, what);
}

static void expect_fail_spec(const spec *sp, free_status want, const char *const *needles,
                             const char *what)
{
    size_t n = 0;
    uint8_t *bytes = model_bytes(sp, &n);
    expect_fail_bytes(bytes, n, want, needles, what);
    free(bytes);
}

static free_model *load_bytes(const void *data, size_t n)
{
    temp_file t;
    free_model *m = NULL;
    tmp_create(&t);
    tmp_write(&t, data, n);
    free_status s = free_model_load(t.path, NULL, &m);
    unlink(t.path);
    ck_assert_msg(s == FREE_OK, "valid model: %s", free_last_error());
    return m;
}

/* ---- locating fields of the valid file -------------------------------------------- */

/* Byte positions inside the valid file, found by walking its header. */
typedef struct layout {
    size_t n_tensors_at, n_kv_at;
    size_t header_end, data_offset; /* the end of the tensor infos; the padded start */
    size_t tokens_count_at; /* element count of tokenizer.ggml.tokens */
    int n_tensors;
    size_t name_at[64];     /* tensor i: name bytes */
    size_t type_at[64];     /* tensor i: the u32 type */
    size_t offset_at[64];   /* tensor i: the u64 offset */
    size_t ne_at[64];       /* tensor i: ne[0] */
    uint64_t offset[64], nbytes[64];
    char name[64][40];
} layout;

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

/* Skips one value of type t (the writer's output only holds these types). */
static size_t skip_value(const uint8_t *b, size_t pos, uint32_t t)
{
    switch (t) {
    case 4: case 5: case 6: return pos + 4;            /* u32, i32, f32 */
    case 7: return pos + 1;                            /* bool */
    case 8: return pos + 8 + (size_t)get_u64(b + pos); /* string */
    case 9: {                                          /* array */
        uint32_t et = get_u32(b + pos);
        uint64_t n = get_u64(b + pos + 4);
        pos += 12;
        for (uint64_t i = 0; i < n; i++)
            pos = skip_value(b, pos, et);
        return pos;
    }
    default: ck_abort_msg("unexpected value type %u", t); return pos;
    }
}

static void find_layout(const uint8_t *b, size_t size, layout *L)
{
    memset(L, 0, sizeof *L);
    ck_assert(size > 24 && memcmp(b, "GGUF", 4) == 0);
    L->n_tensors_at = 8;
    L->n_kv_at = 16;
    uint64_t nt = get_u64(b + 8), nkv = get_u64(b + 16);
    ck_assert_uint_le(nt, 64);
    size_t pos = 24;
    for (uint64_t i = 0; i < nkv; i++) {
        uint64_t klen = get_u64(b + pos);
        bool tokens = klen == 21 && memcmp(b + pos + 8, "tokenizer.ggml.tokens", 21) == 0;
        pos += 8 + (size_t)klen;
        uint32_t t = get_u32(b + pos);
        pos += 4;
        if (tokens)
            L->tokens_count_at = pos + 4;
        pos = skip_value(b, pos, t);
    }
    L->n_tensors = (int)nt;
    for (int i = 0; i < L->n_tensors; i++) {
        uint64_t nlen = get_u64(b + pos);
        ck_assert_uint_lt(nlen, sizeof L->name[0]);
        L->name_at[i] = pos + 8;
        memcpy(L->name[i], b + pos + 8, (size_t)nlen);
        pos += 8 + (size_t)nlen;
        uint32_t nd = get_u32(b + pos);
        pos += 4;
        L->ne_at[i] = pos;
        uint64_t elems = 1;
        for (uint32_t d = 0; d < nd; d++)
            elems *= get_u64(b + pos + 8 * d);
        pos += 8 * (size_t)nd;
        L->type_at[i] = pos;
        ck_assert_uint_eq(get_u32(b + pos), GGUF_TENSOR_F32);
        L->nbytes[i] = elems * 4;
        L->offset_at[i] = pos + 4;
        L->offset[i] = get_u64(b + pos + 4);
        pos += 12;
    }
    L->header_end = pos;
    L->data_offset = (pos + 31) / 32 * 32;
    ck_assert_uint_eq(L->data_offset + L->offset[nt - 1] + L->nbytes[nt - 1], size);
}

/* Index of the tensor called name. */
static int tensor_index(const layout *L, const char *name)
{
    for (int i = 0; i < L->n_tensors; i++)
        if (strcmp(L->name[i], name) == 0)
            return i;
    ck_abort_msg("no tensor %s", name);
    return -1;
}

/* A copy of the valid file for one corruption. */
static uint8_t *valid_copy(size_t *size, layout *L)
{
    spec sp = {0};
    uint8_t *b = model_bytes(&sp, size);
    find_layout(b, *size, L);
    return b;
}

/* ---- the valid model and writer-made variants ------------------------------------- */

START_TEST(valid_model_loads)
{
    spec sp = {0};
    size_t n = 0;
    uint8_t *b = model_bytes(&sp, &n);
    free_model *m = load_bytes(b, n);
    ck_assert_int_eq(free_model_n_layers(m), N_LAYER);
    ck_assert_int_eq(free_model_n_vocab(m), N_VOCAB);
    ck_assert_int_eq(free_model_n_embd(m), DIM);
    ck_assert_int_eq(free_model_n_ctx_train(m), N_CTX);
    ck_assert_int_eq(free_model_exit_layer(m), 0);
    ck_assert_str_eq(free_model_architecture(m), "llama");
    free_model_destroy(m);
    /* The leak checks below can see a mapping: a loaded model has one, a destroyed none. */
    temp_file t;
    tmp_create(&t);
    tmp_write(&t, b, n);
    ck_assert_int_eq(free_model_load(t.path, NULL, &m), FREE_OK);
    ck_assert_int_ge(count_mappings(t.path), 1);
    free_model_destroy(m);
    ck_assert_int_eq(count_mappings(t.path), 0);
    unlink(t.path);
    /* GGUF v2 has the same layout for these fields. */
    put_u32(b + 4, 2);
    m = load_bytes(b, n);
    free_model_destroy(m);
    free(b);
    /* The largest valid exit layer. */
    const int32_t one = 1;
    sp.exit_layer = &one;
    b = model_bytes(&sp, &n);
    m = load_bytes(b, n);
    ck_assert_int_eq(free_model_exit_layer(m), 1);
    free_model_destroy(m);
    free(b);
}
END_TEST

START_TEST(missing_tensor)
{
    static const char *const names[] = {"blk.1.ffn_up.weight", "token_embd.weight",
                                        "output_norm.weight", "blk.0.attn_norm.weight"};
    spec sp = {.drop_tensor = names[_i]};
    expect_fail_spec(&sp, FREE_ERR_MODEL, NEEDLES(names[_i], "missing"), names[_i]);
}
END_TEST

START_TEST(missing_tensor_is_fine_for_vocab_only)
{
    spec sp = {.drop_tensor = "blk.1.ffn_up.weight"};
    size_t n = 0;
    uint8_t *b = model_bytes(&sp, &n);
    temp_file t;
    tmp_create(&t);
    tmp_write(&t, b, n);
    free_model_params p;
    ck_assert_int_eq(free_model_params_init(&p, sizeof p), FREE_OK);
    p.vocab_only = 1;
    free_model *m = NULL;
    ck_assert_msg(free_model_load(t.path, &p, &m) == FREE_OK, "%s", free_last_error());
    ck_assert_int_eq(free_model_n_vocab(m), N_VOCAB);
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_create(m, NULL, &ctx), FREE_ERR_STATE);
    ck_assert_ptr_null(ctx);
    free_model_destroy(m);
    unlink(t.path);
    free(b);
}
END_TEST

START_TEST(wrong_shape)
{
    spec sp = {.q_rows = DIM - 16};
    expect_fail_spec(&sp, FREE_ERR_MODEL, NEEDLES("blk.0.attn_q.weight", "shape", "48"),
                     "attn_q with 48 rows");
}
END_TEST

START_TEST(unknown_architecture)
{
    spec sp = {.arch = "gpt-j"};
    expect_fail_spec(&sp, FREE_ERR_UNSUPPORTED,
                     NEEDLES("architecture 'gpt-j' is not supported",
                             "(supported: llama, qwen2, phi3)"),
                     "architecture gpt-j");
}
END_TEST

/* Each matrix is read in its own type: one Q8_0 matrix in an F32 model loads. */
START_TEST(mixed_tensor_types)
{
    spec sp = {.q8_tensor = "blk.1.ffn_gate.weight"};
    size_t n = 0;
    uint8_t *bytes = model_bytes(&sp, &n);
    free_model *m = load_bytes(bytes, n);
    free_model_destroy(m);
    free(bytes);
}
END_TEST

START_TEST(missing_hyper_parameter)
{
    static const char *const keys[] = {"llama.embedding_length", "llama.block_count",
                                       "llama.attention.head_count",
                                       "llama.feed_forward_length"};
    spec sp = {.drop_key = keys[_i]};
    expect_fail_spec(&sp, FREE_ERR_FORMAT, NEEDLES(keys[_i], "missing"), keys[_i]);
}
END_TEST

START_TEST(head_count_does_not_divide_embedding)
{
    spec sp = {.head_count = 6};
    expect_fail_spec(&sp, FREE_ERR_FORMAT, NEEDLES("head_count 6", "embedding_length 64"),
                     "head_count 6");
}
END_TEST

START_TEST(exit_layer_out_of_range)
{
    static const int32_t values[] = {0, N_LAYER, 100, -1};
    spec sp = {.exit_layer = &values[_i]};
    char what[64];
    snprintf(what, sizeof what, "free.exit_layer = %d", values[_i]);
    expect_fail_spec(&sp, FREE_ERR_FORMAT, NEEDLES("free.exit_layer"), what);
}
END_TEST

START_TEST(vocab_size_mismatch)
{
    spec sp = {.embd_rows = N_VOCAB - 1};
    expect_fail_spec(&sp, FREE_ERR_MODEL, NEEDLES("token_embd.weight", "266", "267"),
                     "token_embd with one row less than the vocabulary");
}
END_TEST

START_TEST(context_length_too_large)
{
    spec sp = {.ctx_len = (1u << 24) + 1};
    expect_fail_spec(&sp, FREE_ERR_FORMAT, NEEDLES("context_length", "16777217"),
                     "context_length 2^24 + 1");
}
END_TEST

/* ---- byte-level corruptions of the valid file ------------------------------------- */

/* Every prefix that ends inside the header (KV pairs, tensor infos, padding). */
START_TEST(truncated_header_every_offset)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    temp_file t;
    tmp_create(&t);
    const int fds = count_fds();
    for (size_t off = 0; off <= L.data_offset; off++) {
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu of %zu", off, size);
        tmp_write(&t, b, off);
        const char *needle = off == 0 ? "empty" : off < L.header_end ? "truncated"
                                                                     : "past the end";
        expect_fail_load(t.path, true, FREE_ERR_FORMAT,
                         NEEDLES(t.path, needle, off < L.header_end ? "" : L.name[0]), what);
    }
    ck_assert_int_eq(count_fds(), fds);
    unlink(t.path);
    free(b);
}
END_TEST

/* A sample of prefixes ending inside the data: the first tensor that no longer fits is
 * named. */
START_TEST(truncated_data_sample)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    temp_file t;
    tmp_create(&t);
    const int fds = count_fds();
    int n = 0;
    for (size_t off = L.data_offset + 1; off < size; off += off + 1000 < size ? 997 : 1) {
        const char *first = NULL;
        for (int i = 0; i < L.n_tensors && !first; i++)
            if (L.data_offset + L.offset[i] + L.nbytes[i] > off)
                first = L.name[i];
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu of %zu", off, size);
        tmp_write(&t, b, off);
        expect_fail_load(t.path, true, FREE_ERR_FORMAT, NEEDLES(first, "past the end"), what);
        n++;
    }
    ck_assert_int_gt(n, 1000);
    ck_assert_int_eq(count_fds(), fds);
    unlink(t.path);
    free(b);
}
END_TEST

START_TEST(wrong_magic)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    memcpy(b, "GGML", 4);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT, NEEDLES("not a GGUF file", "47 47 4d 4c"),
                      "magic GGML");
    memcpy(b, "FUGG", 4);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT, NEEDLES("magic"), "magic FUGG");
    free(b);
}
END_TEST

START_TEST(unsupported_version)
{
    static const uint32_t versions[] = {1, 99, 0, 0x03000000u};
    static const char *const needles[] = {"version 1", "version 99", "version 0",
                                          "big-endian"};
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    put_u32(b + 4, versions[_i]);
    expect_fail_bytes(b, size, FREE_ERR_UNSUPPORTED, NEEDLES(needles[_i]), needles[_i]);
    free(b);
}
END_TEST

START_TEST(huge_counts)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    uint8_t *c = malloc(size);
    static const uint64_t huge[] = {UINT64_MAX, (uint64_t)1 << 62, (uint64_t)1 << 40,
                                    1u << 20};
    for (int i = 0; i < 4; i++) {
        memcpy(c, b, size);
        put_u64(c + L.n_tensors_at, huge[i]);
        expect_fail_bytes(c, size, FREE_ERR_FORMAT, NEEDLES("n_tensors", "impossible"),
                          "huge n_tensors");
        memcpy(c, b, size);
        put_u64(c + L.n_kv_at, huge[i]);
        expect_fail_bytes(c, size, FREE_ERR_FORMAT, NEEDLES("n_kv", "impossible"),
                          "huge n_kv");
        memcpy(c, b, size);
        put_u64(c + L.tokens_count_at, huge[i]);
        expect_fail_bytes(c, size, FREE_ERR_FORMAT,
                          NEEDLES("tokenizer.ggml.tokens", "array count"), "huge token count");
        memcpy(c, b, size);
        put_u64(c + 24, huge[i]); /* the length of the first key */
        expect_fail_bytes(c, size, FREE_ERR_FORMAT, NEEDLES("truncated", "key"),
                          "huge key length");
        memcpy(c, b, size);
        put_u64(c + L.name_at[3] - 8, huge[i]);
        expect_fail_bytes(c, size, FREE_ERR_FORMAT, NEEDLES("truncated", "tensor name"),
                          "huge tensor name length");
        memcpy(c, b, size);
        put_u64(c + L.ne_at[0], huge[i]);
        expect_fail_bytes(c, size, FREE_ERR_FORMAT, NEEDLES("token_embd.weight"),
                          "huge dimension");
    }
    free(c);
    free(b);
}
END_TEST

START_TEST(tensor_count_off_by_one)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    /* One fewer: the last tensor info is read as padding, the tensor is missing. */
    put_u64(b + L.n_tensors_at, (uint64_t)L.n_tensors - 1);
    expect_fail_bytes(b, size, FREE_ERR_MODEL, NEEDLES(L.name[L.n_tensors - 1], "missing"),
                      "one tensor fewer");
    /* One more: the padding and the weights are read as a tensor info. */
    put_u64(b + L.n_tensors_at, (uint64_t)L.n_tensors + 1);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT, NEEDLES("tensor name"), "one tensor more");
    free(b);
}
END_TEST

START_TEST(tensor_offset_past_end)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    const int i = tensor_index(&L, "blk.0.attn_v.weight");
    const uint64_t data_size = size - L.data_offset;
    static const uint64_t deltas[] = {0, 32, 1u << 20};
    for (int k = 0; k < 3; k++) {
        put_u64(b + L.offset_at[i], (data_size + 31) / 32 * 32 + deltas[k]);
        expect_fail_bytes(b, size, FREE_ERR_FORMAT,
                          NEEDLES("blk.0.attn_v.weight", "past the end"), "offset past end");
    }
    /* Within the file, but the tensor's end is not. */
    put_u64(b + L.offset_at[i], (data_size - L.nbytes[i] + 32) / 32 * 32);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT, NEEDLES("blk.0.attn_v.weight", "past the end"),
                      "tensor end past end");
    /* offset + size overflows 64 bits. */
    put_u64(b + L.offset_at[i], UINT64_MAX - 31);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT, NEEDLES("blk.0.attn_v.weight", "past the end"),
                      "offset overflow");
    free(b);
}
END_TEST

START_TEST(misaligned_tensor)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    const int i = tensor_index(&L, "blk.0.attn_k.weight");
    put_u64(b + L.offset_at[i], L.offset[i] + 4);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT,
                      NEEDLES("blk.0.attn_k.weight", "alignment 32"), "offset + 4");
    free(b);
}
END_TEST

START_TEST(overlapping_tensors)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    const int i = tensor_index(&L, "blk.1.attn_q.weight");
    /* Starts 32 bytes into the previous tensor (blk.1.attn_norm.weight, 256 bytes). */
    put_u64(b + L.offset_at[i], L.offset[i - 1] + 32);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT,
                      NEEDLES("overlap", L.name[i - 1], "blk.1.attn_q.weight"),
                      "overlapping");
    /* The same offset as another tensor. */
    put_u64(b + L.offset_at[i], L.offset[0]);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT,
                      NEEDLES("overlap", "token_embd.weight", "blk.1.attn_q.weight"),
                      "same offset");
    free(b);
}
END_TEST

START_TEST(bad_tensor_type_field)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    const int i = tensor_index(&L, "blk.1.ffn_down.weight");
    put_u32(b + L.type_at[i], 10); /* Q2_K: known to ggml, not to libfree */
    expect_fail_bytes(b, size, FREE_ERR_UNSUPPORTED,
                      NEEDLES("blk.1.ffn_down.weight", "Q2_K", "Q4_K, Q5_K and Q6_K"),
                      "type Q2_K");
    put_u32(b + L.type_at[i], 1000); /* unknown: unsupported as well, by number */
    expect_fail_bytes(b, size, FREE_ERR_UNSUPPORTED,
                      NEEDLES("blk.1.ffn_down.weight", "1000", "unknown"), "type 1000");
    /* A K-quant whose rows (ne[0]) are not whole super-blocks of 256. */
    put_u32(b + L.type_at[i], 12);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT,
                      NEEDLES("blk.1.ffn_down.weight", "not a multiple", "Q4_K"), "Q4_K rows");
    free(b);
}
END_TEST

START_TEST(zero_dimension)
{
    size_t size;
    layout L;
    uint8_t *b = valid_copy(&size, &L);
    put_u64(b + L.ne_at[tensor_index(&L, "blk.0.ffn_up.weight")], 0);
    expect_fail_bytes(b, size, FREE_ERR_FORMAT, NEEDLES("blk.0.ffn_up.weight", "is 0"),
                      "ne[0] = 0");
    free(b);
}
END_TEST

/* ---- paths, arguments, params, context -------------------------------------------- */

START_TEST(directory_nonexistent_empty)
{
    expect_fail_load("/tmp", false, FREE_ERR_IO, NEEDLES("/tmp", "not a regular file"),
                     "directory");
    const char *missing = "/tmp/test-load-no-such-dir/model.gguf";
    expect_fail_load(missing, false, FREE_ERR_IO, NEEDLES(missing, "No such file"),
                     "nonexistent");
    expect_fail_bytes("", 0, FREE_ERR_FORMAT, NEEDLES("empty"), "empty file");
    expect_fail_bytes("GGU", 3, FREE_ERR_FORMAT, NEEDLES("truncated"), "3 bytes");
}
END_TEST

START_TEST(null_arguments)
{
    free_model *m = (free_model *)&m;
    ck_assert_int_eq(free_model_load(NULL, NULL, &m), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "path"));
    ck_assert_int_eq(free_model_load("/tmp/x.gguf", NULL, NULL), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "out"));
    ck_assert_int_eq(free_model_params_init(NULL, sizeof(free_model_params)),
                     FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_ctx_params_init(NULL, sizeof(free_ctx_params)),
                     FREE_ERR_INVALID_ARG);
    free_ctx *ctx = (free_ctx *)&ctx;
    ck_assert_int_eq(free_ctx_create(NULL, NULL, &ctx), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_null(ctx);
    ck_assert_int_eq(free_eval(NULL, NULL, 0, NULL), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_tokenize(NULL, "x", -1, 1, NULL, 0, NULL), FREE_ERR_INVALID_ARG);
    free_model_destroy(NULL);
    free_ctx_destroy(NULL);
    ck_assert_int_eq(free_model_n_layers(NULL), 0);
    ck_assert_int_eq(free_model_n_vocab(NULL), 0);
    ck_assert_str_eq(free_model_architecture(NULL), "");
}
END_TEST

/* A params struct from a newer header: unknown fields are fine when zero only. */
START_TEST(params_size_larger_than_known)
{
    spec sp = {0};
    size_t n = 0;
    uint8_t *b = model_bytes(&sp, &n);
    temp_file t;
    tmp_create(&t);
    tmp_write(&t, b, n);
    struct {
        free_model_params p;
        uint64_t future[4];
    } big;
    memset(&big, 0, sizeof big);
    ck_assert_int_eq(free_model_params_init(&big.p, sizeof big), FREE_OK);
    ck_assert_uint_eq(big.p.size, sizeof big);
    free_model *m = NULL;
    ck_assert_msg(free_model_load(t.path, &big.p, &m) == FREE_OK, "%s", free_last_error());
    free_model_destroy(m);
    big.future[2] = 7;
    m = (free_model *)&m;
    ck_assert_int_eq(free_model_load(t.path, &big.p, &m), FREE_ERR_UNSUPPORTED);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "free_model_params"));
    ck_assert_ptr_nonnull(strstr(free_last_error(), "not zero"));
    big.p.size = sizeof big.p - 1;
    ck_assert_int_eq(free_model_load(t.path, &big.p, &m), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "size"));

    ck_assert_msg(free_model_load(t.path, NULL, &m) == FREE_OK, "%s", free_last_error());
    struct {
        free_ctx_params p;
        uint64_t future[4];
    } cbig;
    memset(&cbig, 0, sizeof cbig);
    ck_assert_int_eq(free_ctx_params_init(&cbig.p, sizeof cbig), FREE_OK);
    free_ctx *ctx = NULL;
    ck_assert_msg(free_ctx_create(m, &cbig.p, &ctx) == FREE_OK, "%s", free_last_error());
    free_ctx_destroy(ctx);
    cbig.future[3] = 1;
    ctx = (free_ctx *)&ctx;
    ck_assert_int_eq(free_ctx_create(m, &cbig.p, &ctx), FREE_ERR_UNSUPPORTED);
    ck_assert_ptr_null(ctx);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "free_ctx_params"));
    free_model_destroy(m);
    unlink(t.path);
    free(b);
}
END_TEST

START_TEST(context_overflow)
{
    spec sp = {0};
    size_t n = 0;
    uint8_t *b = model_bytes(&sp, &n);
    free_model *m = load_bytes(b, n);
    free_ctx_params p;
    free_ctx *ctx = NULL;
    free_ctx_params_init(&p, sizeof p);
    p.n_ctx = (1 << 20) + 1;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "n_ctx"));
    p.n_ctx = 8;
    p.n_threads = 1;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
    int32_t tokens[9] = {1, 10, 20, 30, 40, 50, 60, 70, 80};
    ck_assert_int_eq(free_prefill(ctx, tokens, 9), FREE_ERR_CONTEXT_FULL);
    ck_assert_ptr_nonnull(strstr(free_ctx_last_error(ctx), "full"));
    ck_assert_int_eq(free_ctx_n_past(ctx), 0);
    tokens[3] = N_VOCAB;
    ck_assert_int_eq(free_prefill(ctx, tokens, 8), FREE_ERR_TOKEN);
    ck_assert_ptr_nonnull(strstr(free_ctx_last_error(ctx), "267"));
    tokens[3] = 30;
    ck_assert_int_eq(free_prefill(ctx, tokens, 7), FREE_OK);
    int32_t tok;
    ck_assert_int_eq(free_step(ctx, &tok, NULL), FREE_OK); /* from the prefill's logits */
    ck_assert_int_eq(free_step(ctx, &tok, NULL), FREE_OK); /* runs position 7 */
    ck_assert_int_eq(free_step(ctx, &tok, NULL), FREE_ERR_CONTEXT_FULL);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "full"));
    ck_assert_int_eq(free_prefill(ctx, tokens, 1), FREE_ERR_CONTEXT_FULL);
    /* A prompt longer than the context. */
    ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
    ck_assert_int_eq(free_decode(ctx, "abcdefghij", -1, 4, NULL, NULL), FREE_ERR_CONTEXT_FULL);
    ck_assert_ptr_nonnull(strstr(free_ctx_last_error(ctx), "prompt"));
    ck_assert_int_eq(free_ctx_n_past(ctx), 0);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
    free(b);
}
END_TEST

/* ---- faults found while writing these tests (see the report) ---------------------- */

/* The path is named once: free_model_load (api.c) and gguf_open both prefix it. */
START_TEST(message_names_path_once)
{
    temp_file t;
    tmp_create(&t);
    tmp_write(&t, "GGUF", 4);
    const char *missing = "/tmp/test-load-no-such-dir/model.gguf";
    const char *paths[] = {t.path, missing, "/tmp"};
    for (int i = 0; i < 3; i++) {
        free_model *m = NULL;
        free_status s = free_model_load(paths[i], NULL, &m);
        if (i == 0)
            unlink(t.path);
        ck_assert_int_ne(s, FREE_OK);
        const char *msg = free_last_error(), *first = strstr(msg, paths[i]);
        ck_assert_ptr_nonnull(first);
        ck_assert_msg(strstr(first + strlen(paths[i]), paths[i]) == NULL,
                      "the path appears twice in \"%s\"", msg);
    }
}
END_TEST

/* A 6 MB file claiming 4096 layers of width 2^20 and holding none of their tensors: the
 * missing tensor must be reported before memory for 4096 layers is asked for (34 GB). */
START_TEST(huge_model_without_layers)
{
    fr_error err = {FREE_OK, ""};
    fr_gguf_writer *w = NULL;
    const char *toks[] = {"<unk>", "<s>", "</s>"};
    const uint64_t ne[2] = {1u << 20, 3};
    void *embd = calloc(3, 2u << 20);
    ck_assert_ptr_nonnull(embd);
    WRITE_OK(fr_gguf_writer_create(&w, &err));
    WRITE_OK(fr_gguf_add_str(w, "general.architecture", "llama", &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.embedding_length", 1u << 20, &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.block_count", 4096, &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.attention.head_count", 1, &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.feed_forward_length", 1, &err));
    WRITE_OK(fr_gguf_add_str(w, "tokenizer.ggml.model", "llama", &err));
    WRITE_OK(fr_gguf_add_arr_str(w, "tokenizer.ggml.tokens", toks, 3, &err));
    WRITE_OK(fr_gguf_add_tensor(w, "token_embd.weight", 2, ne, GGUF_TENSOR_F16, embd,
                                6u << 20, &err));
    void *bytes = NULL;
    size_t n = 0;
    WRITE_OK(fr_gguf_writer_write_memory(w, &bytes, &n, &err));
    fr_gguf_writer_destroy(w);
    free(embd);
    expect_fail_bytes(bytes, n, FREE_ERR_MODEL, NEEDLES("tensor", "is missing"),
                      "4096 layers of width 2^20 in 6 MB");
    free(bytes);
}
END_TEST

static Suite *load_suite(void)
{
    Suite *s = suite_create("load");
    TCase *tc = tcase_create("writer");
    tcase_add_test(tc, valid_model_loads);
    tcase_add_loop_test(tc, missing_tensor, 0, 4);
    tcase_add_test(tc, missing_tensor_is_fine_for_vocab_only);
    tcase_add_test(tc, wrong_shape);
    tcase_add_test(tc, unknown_architecture);
    tcase_add_test(tc, mixed_tensor_types);
    tcase_add_loop_test(tc, missing_hyper_parameter, 0, 4);
    tcase_add_test(tc, head_count_does_not_divide_embedding);
    tcase_add_loop_test(tc, exit_layer_out_of_range, 0, 4);
    tcase_add_test(tc, vocab_size_mismatch);
    tcase_add_test(tc, context_length_too_large);
    suite_add_tcase(s, tc);
    tc = tcase_create("bytes");
    tcase_add_test(tc, truncated_header_every_offset);
    tcase_add_test(tc, truncated_data_sample);
    tcase_add_test(tc, wrong_magic);
    tcase_add_loop_test(tc, unsupported_version, 0, 4);
    tcase_add_test(tc, huge_counts);
    tcase_add_test(tc, tensor_count_off_by_one);
    tcase_add_test(tc, tensor_offset_past_end);
    tcase_add_test(tc, misaligned_tensor);
    tcase_add_test(tc, overlapping_tensors);
    tcase_add_test(tc, bad_tensor_type_field);
    tcase_add_test(tc, zero_dimension);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, directory_nonexistent_empty);
    tcase_add_test(tc, null_arguments);
    tcase_add_test(tc, params_size_larger_than_known);
    tcase_add_test(tc, context_overflow);
    suite_add_tcase(s, tc);
    tc = tcase_create("regressions");
    tcase_add_test(tc, message_names_path_once);
    tcase_add_test(tc, huge_model_without_layers);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(load_suite)
