/* Shared by the fuzz targets: the libFuzzer entry point prototype, the committed data
 * files, and loading a model from bytes through the public path (a memfd, so that
 * free_model_load maps a real file). */
#ifndef FREE_FUZZ_COMMON_H
#define FREE_FUZZ_COMMON_H

#include "free/free.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Directory of the committed data (tests/fuzz/data); $FREE_FUZZ_DATA overrides. */
#ifndef FR_FUZZ_DATA_DIR
#define FR_FUZZ_DATA_DIR "tests/fuzz/data"
#endif

static inline const char *fr_fuzz_data_path(const char *name)
{
    static char buf[4096];
    const char *dir = getenv("FREE_FUZZ_DATA");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : FR_FUZZ_DATA_DIR, name);
    return buf;
}

/* Loads a committed model once per process; aborts when it is missing (a setup error,
 * not a finding). */
static inline free_model *fr_fuzz_model(const char *name, int vocab_only)
{
    free_model *m = NULL;
    free_model_params p;
    free_model_params_init(&p, sizeof p);
    p.vocab_only = vocab_only;
    if (free_model_load(fr_fuzz_data_path(name), &p, &m) != FREE_OK) {
        fprintf(stderr, "fuzz: cannot load %s: %s\n", name, free_last_error());
        abort();
    }
    return m;
}

/* Silences the default stderr logger (fuzzing prints millions of expected errors). */
static void fr_fuzz_quiet_log(void *user, free_log_level level, const char *message)
{
    (void)user;
    (void)level;
    (void)message;
}

static inline void fr_fuzz_quiet(void)
{
    free_log_set(fr_fuzz_quiet_log, NULL, FREE_LOG_ERROR);
}

/* A failing call must leave a message. */
static inline void fr_fuzz_check_message(free_status s, const char *where)
{
    if (s != FREE_OK && free_last_error()[0] == '\0') {
        fprintf(stderr, "fuzz: %s failed with %d (%s) but free_last_error() is empty\n",
                where, (int)s, free_strerror(s));
        abort();
    }
}

#define FR_FUZZ_ASSERT(cond)                                                             \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz: %s:%d: assertion failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                              \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* True when s[0..n) is valid UTF-8 (shortest forms, no surrogates, <= U+10FFFF). */
static inline int fr_fuzz_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            k = 1;
        } else if (b >= 0xe0 && b <= 0xef) {
            k = 2;
            if (b == 0xe0)
                lo = 0xa0;
            if (b == 0xed)
                hi = 0x9f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            k = 3;
            if (b == 0xf0)
                lo = 0x90;
            if (b == 0xf4)
                hi = 0x8f;
        } else {
            return 0;
        }
        if (i + k >= n)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t j = 2; j <= k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xbf)
                return 0;
        i += k + 1;
    }
    return 1;
}

#endif
