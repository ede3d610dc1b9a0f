/* Shared helpers for the Check programs: one program per module, each defining
 * `Suite *<module>_suite(void)` and ending with FR_TEST_MAIN(<module>_suite). */
#ifndef FREE_TEST_COMMON_H
#define FREE_TEST_COMMON_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Path of a test model file named as in the shared models directory ("stories260K/
 * stories260K.gguf"): the fixture committed in the source tree (tests/data/REL) when there
 * is one, else $FREE_MODELS_DIR/REL (set by meson; ../shared/models by default), else, for
 * the two default models, their committed copies in models/. Absent files keep the
 * $FREE_MODELS_DIR path: FR_TEST_NEED skips the test then. */
static inline int fr_test_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

static inline const char *fr_test_model_path(const char *rel)
{
    static char buf[8][4096];
    static int slot;
    const char *dir = getenv("FREE_MODELS_DIR");
    const char *src = getenv("FREE_SOURCE_DIR");
    char *out = buf[slot++ & 7];
    snprintf(out, sizeof buf[0], "%s/tests/data/%s", src ? src : ".", rel);
    if (fr_test_exists(out))
        return out;
    snprintf(out, sizeof buf[0], "%s/%s", dir ? dir : "../shared/models", rel);
    if (fr_test_exists(out))
        return out;
    static const char *const committed[] = {"free-llama-22M/free-llama-22M.gguf",
                                            "free-code-22M/free-code-22M.gguf"};
    for (size_t i = 0; i < sizeof committed / sizeof *committed; i++)
        if (!strcmp(rel, committed[i])) {
            char alt[4096];
            snprintf(alt, sizeof alt, "%s/models/%s", src ? src : ".", strchr(rel, '/') + 1);
            if (fr_test_exists(alt)) {
                snprintf(out, sizeof buf[0], "%s", alt);
                return out;
            }
        }
    return out;
}

/* True when the model file REL exists (see fr_test_model_path); otherwise prints
 * "SKIP: ..." (scripts/test-summary counts these lines as skipped cases) and returns 0. */
static inline int fr_test_have_model(const char *func, const char *rel)
{
    const char *path = fr_test_model_path(rel);
    if (fr_test_exists(path))
        return 1;
    printf("SKIP: %s: %s not found (the shared test models: ../shared/models beside the "
           "source tree, or meson setup -Dmodels_dir=DIR)\n", func, path);
    fflush(stdout);
    return 0;
}

/* Ends the current test case, counted as skipped, when a model file is absent. */
#define FR_TEST_NEED(rel)                                                                \
    do {                                                                                 \
        if (!fr_test_have_model(__func__, (rel)))                                        \
            return;                                                                      \
    } while (0)

/* Path of a file in the source tree ($FREE_SOURCE_DIR). */
static inline const char *fr_test_source_path(const char *rel)
{
    static char buf[4][4096];
    static int slot;
    const char *dir = getenv("FREE_SOURCE_DIR");
    char *out = buf[slot++ & 3];
    snprintf(out, sizeof buf[0], "%s/%s", dir ? dir : ".", rel);
    return out;
}

/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL on failure. */
static inline char *fr_test_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)n + 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (data) {
        data[n] = '\0';
        if (size)
            *size = (size_t)n;
    }
    return data;
}

#define FR_TEST_MAIN(suite_fn)                                                           \
    int main(void)                                                                       \
    {                                                                                    \
        SRunner *sr = srunner_create(suite_fn());                                        \
        srunner_run_all(sr, CK_NORMAL);                                                  \
        int failed = srunner_ntests_failed(sr);                                          \
        srunner_free(sr);                                                                \
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;                                \
    }

#endif
