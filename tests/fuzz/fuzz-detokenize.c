/* Fuzz target: detokenization of arbitrary token ids through the public API.
 * Byte 0: bit 0 set = ids are raw int32 (mostly outside the vocabulary), clear = the raw
 * values reduced into [-2, n_vocab + 2); bits 1..7 = the output capacity to try first.
 * The rest: little-endian int32 ids. Checked: an id outside the vocabulary is
 * FREE_ERR_TOKEN naming it; otherwise the needed size is the same for every capacity, a
 * too-small buffer says so (never overrun), the text is valid UTF-8 and equals the
 * streaming decoder's output piece by piece; free_token_to_piece agrees with the piece
 * bytes for every id. */
#include "fuzz-common.h"
#include "model.h"

static free_model *vocab_model(void)
{
    static free_model *m;
    if (!m)
        m = fr_fuzz_model("vocab.gguf", 1);
    return m;
}

static void check_pieces(free_model *m, const int32_t *ids, size_t n)
{
    const int32_t nv = free_model_n_vocab(m);
    for (size_t i = 0; i < n; i++) {
        char small[4], big[512];
        size_t k = 0, k2 = 0;
        free_status s = free_token_to_piece(m, ids[i], big, sizeof big, &k);
        if (ids[i] < 0 || ids[i] >= nv) {
            FR_FUZZ_ASSERT(s == FREE_ERR_TOKEN);
            fr_fuzz_check_message(s, "free_token_to_piece");
            continue;
        }
        FR_FUZZ_ASSERT(s == FREE_OK && k <= sizeof big);
        s = free_token_to_piece(m, ids[i], small, sizeof small, &k2);
        FR_FUZZ_ASSERT(k2 == k);
        FR_FUZZ_ASSERT(s == (k <= sizeof small ? FREE_OK : FREE_ERR_BUFFER_TOO_SMALL));
        if (s == FREE_OK)
            FR_FUZZ_ASSERT(memcmp(small, big, k) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        fr_fuzz_quiet();
        quiet = 1;
    }
    if (size < 1)
        return 0;
    free_model *m = vocab_model();
    const int32_t nv = free_model_n_vocab(m);
    size_t n = (size - 1) / 4;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    int bad = -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)data[1 + 4 * i] | (uint32_t)data[2 + 4 * i] << 8 |
                     (uint32_t)data[3 + 4 * i] << 16 | (uint32_t)data[4 + 4 * i] << 24;
        ids[i] = (data[0] & 1) ? (int32_t)u : (int32_t)(u % (uint32_t)(nv + 4)) - 2;
        if (bad < 0 && (ids[i] < 0 || ids[i] >= nv))
            bad = (int)i;
    }
    check_pieces(m, ids, n);

    size_t cap0 = data[0] >> 1, need = 0, got = 0;
    char *buf0 = malloc(cap0 ? cap0 : 1);
    free_status s = free_detokenize(m, ids, n, cap0 ? buf0 : NULL, cap0, &need);
    fr_fuzz_check_message(s, "free_detokenize");
    if (bad >= 0) {
        FR_FUZZ_ASSERT(s == FREE_ERR_TOKEN);
        char want[32];
        snprintf(want, sizeof want, "%d", ids[bad]);
        FR_FUZZ_ASSERT(strstr(free_last_error(), want) != NULL);
        free(buf0);
        free(ids);
        return 0;
    }
    FR_FUZZ_ASSERT(s == (need + 1 <= cap0 ? FREE_OK : FREE_ERR_BUFFER_TOO_SMALL));
    char *buf = malloc(need + 1);
    s = free_detokenize(m, ids, n, buf, need + 1, &got);
    FR_FUZZ_ASSERT(s == FREE_OK && got == need && buf[need] == '\0');
    FR_FUZZ_ASSERT(fr_fuzz_utf8_valid((const unsigned char *)buf, need));
    /* The truncated first call wrote a prefix of the same text. */
    if (cap0)
        FR_FUZZ_ASSERT(memcmp(buf0, buf, cap0 < need ? cap0 : need) == 0);

    /* The streaming decoder (what free_decode uses) gives the same bytes. */
    const fr_tokenizer *t = m->tokenizer;
    size_t pcap = fr_tokenizer_max_piece(t) + 16, pos = 0;
    char *piece = malloc(pcap);
    fr_detok d;
    fr_detok_init(&d, true);
    for (size_t i = 0; i <= n; i++) {
        size_t k = i < n ? fr_detok_push(t, &d, ids[i], piece, pcap)
                         : fr_detok_flush(&d, piece, pcap);
        FR_FUZZ_ASSERT(pos + k <= need && memcmp(buf + pos, piece, k) == 0);
        pos += k;
    }
    FR_FUZZ_ASSERT(pos == need);
    free(piece);
    free(buf);
    free(buf0);
    free(ids);
    return 0;
}
