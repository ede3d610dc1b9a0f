/* The llama.cpp oracle shared by the differential tests (and bench/llamacpp-bench.c): the
 * prebuilt libraries of $FREE_ORACLE_DIR (scripts/oracle), reached with dlopen. Every
 * function says why the oracle is unavailable in reason, for the caller's SKIP message. */
#ifndef FREE_TESTS_ORACLE_H
#define FREE_TESTS_ORACLE_H

#include <dirent.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first file in dir named prefix*.so (libllama.so or libllama.vX.Y.Z.so). */
static inline bool oracle_find_lib(const char *dir, const char *prefix, char *out, size_t size)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    struct dirent *e;
    bool found = false;
    const size_t np = strlen(prefix);
    while (!found && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, np) == 0 && n > np + 2 &&
            strcmp(e->d_name + n - 3, ".so") == 0 &&
            (e->d_name[np] == '.' || strcmp(e->d_name + np, ".so") == 0)) {
            snprintf(out, size, "%s/%s", dir, e->d_name);
            found = true;
        }
    }
    closedir(d);
    return found;
}

/* $FREE_ORACLE_DIR, or NULL (with the reason) when it is unset or empty. */
static inline const char *oracle_dir(char *reason, size_t size)
{
    const char *dir = getenv("FREE_ORACLE_DIR");
    if (!dir || !*dir) {
        snprintf(reason, size, "FREE_ORACLE_DIR is not set");
        return NULL;
    }
    return dir;
}

/* Opens libllama*.so of $FREE_ORACLE_DIR into *llama (its path in path), then, when ggml is
 * not NULL, the libggml*.so holding the backend loader into *ggml (NULL when absent: it is
 * optional). Returns 0 when libllama is loaded, 77 when the oracle is absent (skip), 1 when
 * libllama is there but does not load; reason says why on failure. */
static inline int oracle_open_llama(void **llama, void **ggml, char *path, size_t path_size,
                                    char *reason, size_t size)
{
    *llama = NULL;
    if (ggml)
        *ggml = NULL;
    const char *dir = oracle_dir(reason, size);
    if (!dir)
        return 77;
    if (!oracle_find_lib(dir, "libllama", path, path_size)) {
        snprintf(reason, size, "no libllama*.so in %s", dir);
        return 77;
    }
    if (!(*llama = dlopen(path, RTLD_NOW | RTLD_LOCAL))) {
        snprintf(reason, size, "cannot load %s (%s)", path, dlerror());
        return 1;
    }
    /* The CPU backend is a separate library that ggml loads from a directory. */
    char ggml_path[4096];
    if (ggml && oracle_find_lib(dir, "libggml", ggml_path, sizeof ggml_path))
        *ggml = dlopen(ggml_path, RTLD_NOW | RTLD_LOCAL);
    return 0;
}

/* Opens $FREE_ORACLE_DIR/libggml-base.so; NULL with the reason when it cannot be had. */
static inline void *oracle_open_ggml_base(char *reason, size_t size)
{
    const char *dir = oracle_dir(reason, size);
    if (!dir)
        return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/libggml-base.so", dir);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        snprintf(reason, size, "cannot load %s (%s)", path, dlerror());
    return h;
}

/* Looks name up in h and stores it in the function pointer at fn_field; false (with the
 * reason) when it is absent. */
static inline bool oracle_sym(void *h, const char *name, void *fn_field, char *reason,
                              size_t size)
{
    void *p = dlsym(h, name);
    if (!p) {
        snprintf(reason, size, "%s not found in libllama", name);
        return false;
    }
    memcpy(fn_field, &p, sizeof p); /* ISO C: no void * to function pointer cast */
    return true;
}

#endif
