/* bench-gemv: the decode products of a model alone, without the rest of a token's work.
 *
 *     bench-gemv MODEL.gguf [ROUNDS] [THREADS]
 *
 * One pass = fr_matmul with one input over every 2-D weight a decoding step reads (every
 * matrix of the file but token_embd, in file order), each weight read once: the bytes
 * decode streams per token at full depth. Rounds alternate with a pass of plain reads of
 * the same bytes (four 64-byte loads a step, a software prefetch 16 KB ahead: what the
 * memory gives one thread when nothing is computed), so both see the same machine state.
 * Prints per kind the CPU time of the calling thread per pass and the weight bytes per
 * second of that CPU time (the figure to A/B on a shared machine: a descheduled thread
 * accrues none), and the median wall-clock GB/s. With THREADS > 1 the products run on a
 * pool (the read pass stays on one thread, and CPU time is only the caller's); the read
 * pass needs AVX-512 and is left out without it. */
#include "gguf.h"
#include "kernels.h"
#include "threadpool.h"

#include <immintrin.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

__attribute__((target("avx512f"))) static float read_bytes(const char *p, size_t n)
{
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i + 256 <= n; i += 256) {
        for (int q = 0; q < 256; q += 64)
            _mm_prefetch(p + i + 16384 + q, _MM_HINT_T0);
        a = _mm512_add_ps(a, _mm512_loadu_ps((const float *)(p + i)));
        b = _mm512_add_ps(b, _mm512_loadu_ps((const float *)(p + i + 64)));
        c = _mm512_add_ps(c, _mm512_loadu_ps((const float *)(p + i + 128)));
        d = _mm512_add_ps(d, _mm512_loadu_ps((const float *)(p + i + 192)));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench-gemv MODEL.gguf [ROUNDS] [THREADS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 10, threads = argc > 3 ? atoi(argv[3]) : 1;
    if (rounds < 1 || threads < 1)
        return 2;
    gguf_file *f;
    fr_error err;
    if (gguf_open(argv[1], &f, &err) != FREE_OK) {
        fprintf(stderr, "bench-gemv: %s\n", err.msg);
        return 1;
    }
    fr_pool *pool = NULL;
    if (threads > 1 && fr_pool_create(threads, &pool, &err) != FREE_OK)
        return 1;
    uint64_t nt = gguf_n_tensors(f);
    fr_matrix *m = calloc(nt, sizeof *m);
    int nm = 0;
    double bytes = 0;
    int64_t max_dim = 0;
    for (uint64_t i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (t->n_dims != 2 || (t->name.len == 17 && !memcmp(t->name.ptr, "token_embd.weight", 17)))
            continue;
        m[nm++] = (fr_matrix){t->data, t->type, (int64_t)t->ne[1], (int64_t)t->ne[0]};
        bytes += (double)t->nbytes;
        max_dim = max_dim > (int64_t)t->ne[0] ? max_dim : (int64_t)t->ne[0];
        max_dim = max_dim > (int64_t)t->ne[1] ? max_dim : (int64_t)t->ne[1];
    }
    size_t xbytes = ((size_t)max_dim * sizeof(float) + 63) / 64 * 64;
    float *X = aligned_alloc(64, xbytes), *Y = aligned_alloc(64, xbytes);
    if (getenv("BENCH_GEMV_MISALIGN")) /* X off a cache line, as a plain malloc may give */
        X = (float *)((char *)aligned_alloc(64, xbytes + 64) + 16);
    for (int64_t i = 0; i < max_dim; i++)
        X[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    const bool has_avx512 = __builtin_cpu_supports("avx512f");
    double cpu[2] = {0, 0}, *wall = calloc(2 * (size_t)rounds, sizeof *wall), sink = 0;
    /* Round -1 is a warm-up, untimed: the first touch of each page of the mapping faults. */
    for (int r = -1; r < rounds; r++)
        for (int kind = 0; kind < 2; kind++) {
            double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
            for (int i = 0; i < nm; i++) {
                if (kind == 0) {
                    fr_matmul(&m[i], 1, X, Y, pool);
                    sink += Y[0];
                } else {
                    size_t n = (size_t)gguf_row_bytes(m[i].type, (uint64_t)m[i].cols) *
                               (size_t)m[i].rows;
                    if (has_avx512)
                        sink += read_bytes(m[i].data, n);
                }
            }
            if (r < 0)
                continue;
            cpu[kind] += clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
            wall[kind * rounds + r] = clock_s(CLOCK_MONOTONIC) - w0;
        }
    printf("bench-gemv: %s: %d matrices, %.1f MB a pass, %d rounds, %d thread(s)\n", argv[1],
           nm, bytes / 1e6, rounds, threads);
    static const char *const names[2] = {"fr_matmul", "plain reads"};
    for (int kind = 0; kind < (has_avx512 ? 2 : 1); kind++) {
        qsort(wall + kind * rounds, (size_t)rounds, sizeof *wall, cmp_double);
        printf("  %-11s  CPU %.1f ms a pass (%.2f GB/s of CPU time), wall median %.2f GB/s\n",
               names[kind], cpu[kind] / rounds * 1e3, bytes * rounds / cpu[kind] / 1e9,
               bytes / wall[kind * rounds + rounds / 2] / 1e9);
    }
    fprintf(stderr, "(checksum %g)\n", sink);
    fr_pool_destroy(pool);
    gguf_close(f);
    free(m);
    free(X);
    free(Y);
    free(wall);
    return 0;
}
