/* Shared helpers for the Check programs: one program per module, each defining
 * `Suite *<module>_suite(void)` and ending with FR_TEST_MAIN(<module>_suite). */
#ifndef FREE_TEST_COMMON_H
#define FREE_TEST_COMMON_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Path of a file under the shared models directory ($FREE_MODELS_DIR, set by meson). */
static inline const char *fr_test_model_path(const char *rel)
{
    static char buf[8][4096];
    static int slot;
    const char *dir = getenv("FREE_MODELS_DIR");
    char *out = buf[slot++ & 7];
    snprintf(out, sizeof buf[0], "%s/%s", dir ? dir : "../shared/models", rel);
    return out;
}

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
