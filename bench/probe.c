/* Machine facts and the memory-bandwidth probe. Decoding one row reads every weight once,
 * so tokens/s is bounded by bandwidth / bytes per token; the probe gives the bound. */
#include "bench.h"

#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double fb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the read kernel ------------------------------------------------------------------ */

/* The widest loads the CPU has, four independent sums: the loop must be bound by the loads,
 * as the decoder's matrix kernels are (they use the same instruction sets), or the probe
 * would report the adder's speed rather than the memory's. */
static uint64_t sum_bytes_plain(const void *p, size_t bytes)
{
    const uint64_t *v = p;
    size_t n = bytes / sizeof(uint64_t);
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += v[i];
        a1 += v[i + 1];
        a2 += v[i + 2];
        a3 += v[i + 3];
    }
    for (; i < n; i++)
        a0 += v[i];
    return a0 + a1 + a2 + a3;
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx2"))) static uint64_t sum_bytes_avx2(const void *p, size_t bytes)
{
    const __m256i *v = p;
    size_t n = bytes / sizeof(__m256i);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(v + i));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(v + i + 1));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(v + i + 2));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(v + i + 3));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, a0);
    size_t done = i * sizeof(__m256i);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] +
           sum_bytes_plain((const unsigned char *)p + done, bytes - done);
}

__attribute__((target("avx512f"))) static uint64_t sum_bytes_avx512(const void *p,
                                                                     size_t bytes)
{
    const unsigned char *c = p;
    size_t n = bytes / 64;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(c + 64 * i));
        a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(c + 64 * (i + 1)));
        a2 = _mm512_add_epi64(a2, _mm512_loadu_si512(c + 64 * (i + 2)));
        a3 = _mm512_add_epi64(a3, _mm512_loadu_si512(c + 64 * (i + 3)));
    }
    a0 = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
    size_t done = i * 64;
    return (uint64_t)_mm512_reduce_add_epi64(a0) + sum_bytes_plain(c + done, bytes - done);
}

static uint64_t sum_bytes(const void *p, size_t bytes)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return sum_bytes_avx512(p, bytes);
    if (__builtin_cpu_supports("avx2"))
        return sum_bytes_avx2(p, bytes);
    return sum_bytes_plain(p, bytes);
}
#else
static uint64_t sum_bytes(const void *p, size_t bytes)
{
    return sum_bytes_plain(p, bytes);
}
#endif

typedef struct reader {
    const unsigned char *base;
    size_t bytes;
    int passes;
    uint64_t sum; /* kept so the reads cannot be optimized away */
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    uint64_t s = 0;
    for (int p = 0; p < r->passes; p++)
        s += sum_bytes(r->base, r->bytes);
    r->sum = s;
    return NULL;
}

/* Best GB/s of `trials` runs in which `threads` threads each read their own slice of buf
 * `passes` times. */
static double measure(const unsigned char *buf, size_t bytes, int threads, int passes,
                      int trials)
{
    enum { MAX_THREADS = 64 };
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    reader rd[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    /* Slices are multiples of 4 KiB so every thread streams whole pages. */
    size_t slice = bytes / (size_t)threads / 4096 * 4096;
    if (slice == 0)
        return 0.0;
    bool started[MAX_THREADS];
    double best = 0.0;
    volatile uint64_t sink = 0; /* the sums must be computed: the reads stay */
    for (int t = 0; t < trials; t++) {
        double t0 = fb_now();
        for (int i = 0; i < threads; i++) {
            rd[i] = (reader){buf + (size_t)i * slice, slice, passes, 0};
            started[i] = i > 0 && pthread_create(&tid[i], NULL, reader_main, &rd[i]) == 0;
            if (i > 0 && !started[i])
                reader_main(&rd[i]); /* no thread: read it here, slower but still counted */
        }
        reader_main(&rd[0]);
        for (int i = 1; i < threads; i++)
            if (started[i])
                pthread_join(tid[i], NULL);
        double dt = fb_now() - t0;
        for (int i = 0; i < threads; i++)
            sink += rd[i].sum;
        double gbps = (double)slice * (double)threads * passes / dt * 1e-9;
        if (gbps > best)
            best = gbps;
    }
    return best;
}

static void probe_child(size_t stream_bytes, size_t model_bytes, int threads, fb_probe *out)
{
    memset(out, 0, sizeof *out);
    out->threads = threads;
    out->stream_bytes = stream_bytes;
    out->model_bytes = model_bytes;
    size_t cap = stream_bytes > model_bytes ? stream_bytes : model_bytes;
    unsigned char *buf = aligned_alloc(4096, (cap + 4095) / 4096 * 4096);
    if (!buf)
        return;
    /* Touch every page (and make the contents non-trivial) before timing. */
    for (size_t i = 0; i < cap; i += 64)
        buf[i] = (unsigned char)i;
    if (stream_bytes) {
        out->stream_gbps_1 = measure(buf, stream_bytes, 1, 1, 5);
        out->stream_gbps_t = measure(buf, stream_bytes, threads, 1, 5);
    }
    if (model_bytes) {
        /* Enough passes that one trial reads about 512 MB: thread start-up is noise. */
        int passes = (int)(512e6 / (double)model_bytes) + 1;
        measure(buf, model_bytes, threads, 1, 1); /* bring it into the caches */
        out->model_gbps_1 = measure(buf, model_bytes, 1, passes, 5);
        out->model_gbps_t = measure(buf, model_bytes, threads, passes, 5);
    }
    free(buf);
    out->ok = 1;
}

int fb_probe_run(size_t stream_bytes, size_t model_bytes, int threads, fb_probe *out)
{
    if (threads < 1)
        threads = 1;
    int fd[2];
    if (pipe(fd) != 0)
        goto inline_run;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        goto inline_run;
    }
    if (pid == 0) {
        fb_probe p;
        close(fd[0]);
        probe_child(stream_bytes, model_bytes, threads, &p);
        ssize_t w = write(fd[1], &p, sizeof p);
        _exit(w == (ssize_t)sizeof p ? 0 : 1);
    }
    close(fd[1]);
    size_t got = 0;
    while (got < sizeof *out) {
        ssize_t r = read(fd[0], (char *)out + got, sizeof *out - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (got == sizeof *out && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return out->ok ? 0 : -1;
    memset(out, 0, sizeof *out);
    return -1;
inline_run:
    probe_child(stream_bytes, model_bytes, threads, out);
    return out->ok ? 0 : -1;
}

/* ---- machine facts -------------------------------------------------------------------- */

size_t fb_llc_bytes(void)
{
    size_t best = 0;
    /* The highest cache index is the last level; sizes read like "300M", "4096K". */
    for (int i = 0; i < 8; i++) {
        char path[96];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        unsigned long v = 0;
        char unit = 0;
        if (fscanf(f, "%lu%c", &v, &unit) >= 1) {
            size_t b = v;
            if (unit == 'K')
                b *= 1024;
            else if (unit == 'M')
                b *= 1024 * 1024;
            else if (unit == 'G')
                b *= 1024ul * 1024 * 1024;
            if (b > best)
                best = b;
        }
        fclose(f);
    }
    return best;
}

void fb_cpu_name(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            break;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(buf, cap, "%s", v);
        buf[strcspn(buf, "\n")] = '\0';
        break;
    }
    fclose(f);
}

double fb_loadavg(void)
{
    double l[1];
    return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t k = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, k) == 0 && line[k] == ':') {
            v = strtol(line + k + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

long fb_vm_hwm_kb(void)
{
    return status_kb("VmHWM");
}

long fb_vm_rss_kb(void)
{
    return status_kb("VmRSS");
}

long fb_maxrss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

int fb_reset_hwm(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return -1;
    int ok = fputs("5", f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}
