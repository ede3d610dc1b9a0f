/* Token choice from logits. Ordering and tie rule used everywhere in this file: token a
 * ranks before token b when its scaled logit is larger, or equal with a lower index. Top-k
 * keeps the first k tokens in that order; top-p keeps the shortest prefix of that order
 * whose probability mass reaches p. So ties at a cut-off always keep the lower indices.
 *
 * Non-finite logits: NaN and -Inf get probability 0; if any scaled logit is +Inf (also a
 * finite logit that overflows when divided by a small temperature), the +Inf tokens share
 * the mass equally (the limit of the softmax). If no token is left, the distribution is
 * one-hot at fr_argmax(logits), so a draw always has something to return. */
#include "sampler.h"

#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The top-p bucket pre-pass (see bucket_prefilter) pays off above a few hundred tokens. */
enum { NUCLEUS_BUCKETS = 256, NUCLEUS_BUCKETS_PER_NAT = 16, NUCLEUS_MIN_BUCKETED = 512 };

struct fr_sampler {
    int32_t n_vocab;
    fr_sampler_config cfg;
    uint64_t rng[4];    /* xoshiro256** state for the draws */
    uint64_t pivot_rng; /* splitmix64 state for quickselect pivots; never affects results */
    float *scaled;      /* [n_vocab] logits / temperature */
    int32_t *idx;       /* [n_vocab] candidate token ids, partitioned in place */
    float *probs;       /* [n_vocab] fr_sample's distribution */
    double bucket_mass[NUCLEUS_BUCKETS];
};

/* ---- RNG: splitmix64 to seed xoshiro256** (Blackman & Vigna). Integer-only, so the same
 * seed gives the same sequence on every platform. */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

static void rng_seed(fr_sampler *s, uint64_t seed)
{
    /* Four consecutive splitmix64 outputs are distinct, so the state is never all zero. */
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    s->pivot_rng = seed ^ UINT64_C(0x5851f42d4c957f2d);
}

double fr_sampler_uniform(fr_sampler *s)
{
    /* The top 53 bits: every value is a multiple of 2^-53 in [0, 1). */
    return (double)(rng_next(s->rng) >> 11) * 0x1.0p-53;
}

/* ---- Lifetime and configuration */

static void set_config(fr_sampler *s, const fr_sampler_config *cfg)
{
    static const fr_sampler_config greedy = {0.0f, 0, 1.0f, 0, 0.0f};
    s->cfg = cfg ? *cfg : greedy;
    rng_seed(s, s->cfg.seed);
}

free_status fr_sampler_create(int32_t n_vocab, const fr_sampler_config *cfg,
                              fr_sampler **out, fr_error *err)
{
    if (!out)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_sampler_create: out is NULL");
    *out = NULL;
    if (n_vocab <= 0)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "sampler: n_vocab is %d; it must be at least 1", (int)n_vocab);
    fr_sampler *s = calloc(1, sizeof *s);
    size_t n = (size_t)n_vocab;
    if (s) {
        s->scaled = malloc(n * sizeof *s->scaled);
        s->idx = malloc(n * sizeof *s->idx);
        s->probs = malloc(n * sizeof *s->probs);
    }
    if (!s || !s->scaled || !s->idx || !s->probs) {
        fr_sampler_destroy(s);
        return fr_fail(err, FREE_ERR_NOMEM,
                       "sampler: cannot allocate %zu bytes of scratch for n_vocab %d",
                       n * (sizeof(float) * 2 + sizeof(int32_t)), (int)n_vocab);
    }
    s->n_vocab = n_vocab;
    set_config(s, cfg);
    *out = s;
    return FREE_OK;
}

void fr_sampler_destroy(fr_sampler *s)
{
    if (!s)
        return;
    free(s->scaled);
    free(s->idx);
    free(s->probs);
    free(s);
}

void fr_sampler_configure(fr_sampler *s, const fr_sampler_config *cfg)
{
    set_config(s, cfg);
}

bool fr_sampler_is_greedy(const fr_sampler *s)
{
    /* Written as !(t > 0) so that a NaN temperature means greedy. top_k == 1 and
     * top_p <= 0 keep exactly one token, the argmax, so they are greedy too. */
    return !(s->cfg.temperature > 0.0f) || s->cfg.top_k == 1 || s->cfg.top_p <= 0.0f;
}

/* ---- Argmax and confidence */

int32_t fr_argmax(const float *x, int32_t n)
{
    if (!x || n <= 0)
        return -1;
    int32_t best = -1;
    for (int32_t i = 0; i < n; i++) {
        if (isnan(x[i]))
            continue;
        if (best < 0 || x[i] > x[best])
            best = i;
    }
    return best < 0 ? 0 : best; /* all NaN: no winner, fall back to the first token */
}

float fr_confidence_top2(const float *logits, int32_t n, int32_t *top1)
{
    if (!logits || n <= 0) {
        if (top1)
            *top1 = -1;
        return 0.0f;
    }
    /* Pass 1: the two largest values (equal values count twice, giving 0) and finiteness. */
    int32_t i1 = 0;
    float l1 = logits[0], l2 = -INFINITY;
    bool finite = isfinite(l1);
    for (int32_t i = 1; i < n; i++) {
        float x = logits[i];
        finite = finite && isfinite(x);
        if (x > l1) {
            l2 = l1;
            l1 = x;
            i1 = i;
        } else if (x > l2) {
            l2 = x;
        }
    }
    if (!finite) {
        if (top1)
            *top1 = fr_argmax(logits, n);
        return 0.0f;
    }
    if (top1)
        *top1 = i1;
    if (n == 1)
        return 1.0f;
    /* Pass 2: p1 - p2 = (1 - exp(l2 - l1)) / sum_j exp(l_j - l1); every term is <= 1 and
     * the l1 term is exactly 1, so nothing overflows and the sum is >= 1. */
    double sum = 0.0;
    float chunk[512]; /* the SIMD exp-sum works in place: a copy, 2 KB at a time */
    for (int32_t i0 = 0; i0 < n; i0 += 512) {
        const int32_t m = n - i0 < 512 ? n - i0 : 512;
        memcpy(chunk, logits + i0, (size_t)m * sizeof *chunk);
        sum += fr_exp_sum(chunk, m, l1);
    }
    double c = (1.0 - (double)expf(l2 - l1)) / sum;
    return c < 0.0 ? 0.0f : c > 1.0 ? 1.0f : (float)c;
}

/* ---- Selection: partial quickselect on the candidate ids, never a full sort. */

static inline bool ranks_before(const float *v, int32_t a, int32_t b)
{
    return v[a] > v[b] || (v[a] == v[b] && a < b);
}

static inline void swap_ids(int32_t *idx, int32_t a, int32_t b)
{
    int32_t t = idx[a];
    idx[a] = idx[b];
    idx[b] = t;
}

/* Partitions idx[lo, hi) around a pivot: ids ranking before it end in [lo, pos), the pivot
 * at pos, the rest after. If w is given, *mass gets the sum of w over [lo, pos). The pivot
 * is the median of three random positions: results do not depend on it (the order is
 * total), only the running time, and random choice defeats sorted or crafted inputs. */
static int32_t partition(fr_sampler *s, int32_t lo, int32_t hi, const float *w, double *mass)
{
    const float *v = s->scaled;
    int32_t *idx = s->idx;
    uint32_t span = (uint32_t)(hi - lo);
    int32_t a = lo + (int32_t)(splitmix64(&s->pivot_rng) % span);
    int32_t b = lo + (int32_t)(splitmix64(&s->pivot_rng) % span);
    int32_t c = lo + (int32_t)(splitmix64(&s->pivot_rng) % span);
    if (ranks_before(v, idx[b], idx[a]))
        swap_ids(idx, a, b);
    if (ranks_before(v, idx[c], idx[b])) {
        swap_ids(idx, b, c);
        if (ranks_before(v, idx[b], idx[a]))
            swap_ids(idx, a, b);
    }
    swap_ids(idx, b, hi - 1);
    int32_t piv = idx[hi - 1], pos = lo;
    float pv = v[piv];
    double m = 0.0;
    /* (A branch-free variant, always swapping, measured no faster: the stores to idx[pos]
     * then chain through store forwarding.) */
    for (int32_t i = lo; i < hi - 1; i++) {
        int32_t id = idx[i];
        float x = v[id];
        if ((x > pv) | ((x == pv) & (id < piv))) {
            if (w)
                m += w[id];
            idx[i] = idx[pos];
            idx[pos++] = id;
        }
    }
    swap_ids(idx, pos, hi - 1);
    if (mass)
        *mass = m;
    return pos;
}

/* Restores the heap property below slot j of the heap idx[0, k) whose root is the id
 * ranking last (so the root is the one to evict). */
static void sift_down(const float *v, int32_t *idx, int32_t k, int32_t j)
{
    for (;;) {
        int32_t c = 2 * j + 1;
        if (c >= k)
            return;
        if (c + 1 < k && ranks_before(v, idx[c], idx[c + 1]))
            c++;
        if (!ranks_before(v, idx[j], idx[c]))
            return;
        swap_ids(idx, j, c);
        j = c;
    }
}

/* Moves the k highest-ranked of idx[0, m) into idx[0, k) (in no particular order). */
static void select_top_k(fr_sampler *s, int32_t m, int32_t k)
{
    const float *v = s->scaled;
    int32_t *idx = s->idx;
    if ((int64_t)k * 32 <= m) {
        /* Small k: one pass against a heap of the best k so far. Most ids lose to the
         * root at the first comparison, a branch the predictor gets right; O(m log k) even
         * for adversarial (ascending) input. */
        for (int32_t j = k / 2 - 1; j >= 0; j--)
            sift_down(v, idx, k, j);
        for (int32_t j = k; j < m; j++) {
            if (ranks_before(v, idx[j], idx[0])) {
                idx[0] = idx[j];
                sift_down(v, idx, k, 0);
            }
        }
        return;
    }
    int32_t lo = 0, hi = m; /* invariant: lo <= k < hi */
    for (;;) {
        int32_t pos = partition(s, lo, hi, NULL, NULL);
        if (pos == k)
            return;
        if (pos < k)
            lo = pos + 1;
        else
            hi = pos;
    }
}

/* Buckets of width 1/16 in log-probability below the top token (16 nats), the last one
 * taking everything further down. The bucket is non-decreasing along the rank order. */
static int32_t bucket_of(float vmax, float v)
{
    float d = (vmax - v) * (float)NUCLEUS_BUCKETS_PER_NAT;
    return d < (float)(NUCLEUS_BUCKETS - 1) ? (int32_t)d : NUCLEUS_BUCKETS - 1;
}

/* Narrows the nucleus search: a histogram of the weight per bucket finds the bucket b in
 * which the cumulative weight reaches target. Ids in buckets before b are all kept and
 * moved to idx[0, *lo); ids of bucket b go to idx[*lo, *hi); later ones are dropped.
 * Returns the weight of idx[0, *lo). */
static double bucket_prefilter(fr_sampler *s, int32_t m, float vmax, const float *w,
                               double target, int32_t *lo, int32_t *hi)
{
    const float *v = s->scaled;
    int32_t *idx = s->idx;
    double *mass = s->bucket_mass;
    memset(mass, 0, sizeof s->bucket_mass);
    for (int32_t j = 0; j < m; j++)
        mass[bucket_of(vmax, v[idx[j]])] += w[idx[j]];
    int32_t b = 0;
    double before = 0.0;
    while (b < NUCLEUS_BUCKETS - 1 && before + mass[b] < target)
        before += mass[b++];
    int32_t n_lo = 0, n_hi;
    for (int32_t j = 0; j < m; j++)
        if (bucket_of(vmax, v[idx[j]]) < b)
            swap_ids(idx, j, n_lo++);
    n_hi = n_lo;
    for (int32_t j = n_lo; j < m; j++)
        if (bucket_of(vmax, v[idx[j]]) == b)
            swap_ids(idx, j, n_hi++);
    *lo = n_lo;
    *hi = n_hi;
    return before;
}

/* Returns c, the length of the shortest prefix (in rank order) of idx[0, m) whose weight
 * w reaches target, and moves those ids into idx[0, c). A weighted quickselect: each round
 * partitions, then continues in the half that holds the cut. */
static int32_t select_nucleus(fr_sampler *s, int32_t m, float vmax, const float *w,
                              double target)
{
    int32_t lo = 0, hi = m;
    double acc = 0.0; /* weight of idx[0, lo), all of which rank before idx[lo, m) */
    if (m >= NUCLEUS_MIN_BUCKETED && isfinite(vmax))
        acc = bucket_prefilter(s, m, vmax, w, target, &lo, &hi);
    while (lo < hi) {
        double mass;
        int32_t pos = partition(s, lo, hi, w, &mass);
        if (acc + mass >= target) {
            hi = pos;
        } else {
            acc += mass + w[s->idx[pos]];
            if (acc >= target)
                return pos + 1;
            lo = pos + 1;
        }
    }
    /* Only reached through rounding: the sums of the sub-ranges fell just short of the sum
     * that chose them. idx[0, lo) is the prefix that sum chose (all of it when lo == m). */
    return lo > 0 ? lo : 1;
}

/* ---- The sampling distribution */

static void one_hot(float *probs, int32_t n, int32_t at)
{
    memset(probs, 0, (size_t)n * sizeof *probs);
    probs[at] = 1.0f;
}

void fr_sampler_dist(fr_sampler *s, const float *logits, float *probs)
{
    int32_t n = s->n_vocab;
    if (fr_sampler_is_greedy(s)) {
        one_hot(probs, n, fr_argmax(logits, n));
        return;
    }
    /* Every logit is read here, before probs is written, so probs may alias logits. */
    float t = s->cfg.temperature, vmax = -INFINITY;
    float *v = s->scaled;
    int32_t *idx = s->idx;
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        float x = logits[i] / t;
        v[i] = x;
        if (x > -INFINITY) { /* false for NaN and -Inf */
            idx[m++] = i;
            if (x > vmax)
                vmax = x;
        }
    }
    if (m == 0) {
        one_hot(probs, n, fr_argmax(logits, n));
        return;
    }
    if (s->cfg.top_k > 0 && s->cfg.top_k < m) {
        select_top_k(s, m, s->cfg.top_k);
        m = s->cfg.top_k;
    }

    /* Unnormalised softmax weights of the kept tokens, stored in place in probs. */
    memset(probs, 0, (size_t)n * sizeof *probs);
    bool inf_max = isinf(vmax);
    double total = 0.0;
    for (int32_t j = 0; j < m; j++) {
        int32_t i = idx[j];
        float e = inf_max ? (v[i] == vmax ? 1.0f : 0.0f) : expf(v[i] - vmax);
        probs[i] = e;
        total += e;
    }
    if (s->cfg.top_p < 1.0f && m > 1) {
        int32_t c = select_nucleus(s, m, vmax, probs, (double)s->cfg.top_p * total);
        for (int32_t j = c; j < m; j++)
            probs[idx[j]] = 0.0f;
    }
    /* min-p: the top token's weight is exactly 1, so a weight is its ratio to the top. */
    if (s->cfg.min_p > 0.0f)
        for (int32_t j = 0; j < m; j++)
            if (probs[idx[j]] < s->cfg.min_p)
                probs[idx[j]] = 0.0f;

    /* Normalise in index order, so the result does not depend on how selection permuted
     * the ids (and a naive implementation can reproduce it bit for bit). total >= 1: the
     * top token's weight is exactly 1 and it is always kept. */
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++)
        sum += probs[i];
    double inv = 1.0 / sum;
    for (int32_t i = 0; i < n; i++)
        probs[i] = (float)(probs[i] * inv);
}

/* ---- Drawing */

int32_t fr_sampler_draw(fr_sampler *s, const float *probs)
{
    int32_t n = s->n_vocab;
    /* Always consume exactly one uniform, so the RNG stream does not depend on the input. */
    double u = fr_sampler_uniform(s);
    double total = 0.0;
    for (int32_t i = 0; i < n; i++)
        if (probs[i] > 0.0f) /* negative and NaN entries count as 0 */
            total += probs[i];
    if (!(total > 0.0) || isinf(total))
        return fr_argmax(probs, n); /* contract broken (no positive mass) or +Inf entries */
    double target = u * total, cum = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < n; i++) {
        if (probs[i] > 0.0f) {
            cum += probs[i];
            last = i;
            if (target < cum)
                return i;
        }
    }
    /* u * total can round up to total itself: the answer is then the last positive entry. */
    return last;
}

int32_t fr_sample(fr_sampler *s, const float *logits)
{
    if (fr_sampler_is_greedy(s))
        return fr_argmax(logits, s->n_vocab);
    fr_sampler_dist(s, logits, s->probs);
    return fr_sampler_draw(s, s->probs);
}

bool fr_speculative_accept(fr_sampler *s, int32_t draft, const float *q, float *p,
                           int32_t *out)
{
    int32_t n = s->n_vocab;
    /* Accept when u < p/q, written u * q < p: no division, q[d] == 0 with p[d] > 0
     * accepts, p[d] == 0 (or NaN) rejects. */
    double u = fr_sampler_uniform(s);
    if (draft >= 0 && draft < n && u * q[draft] < p[draft]) {
        *out = draft;
        return true;
    }
    /* Rejected: draw from the residual normalise(max(0, p - q)). It is all zero only when
     * p <= q everywhere, i.e. p == q for normalised inputs (or rounding); then draw from p
     * itself, which is why the residual's mass is checked before p is overwritten. */
    double residual = 0.0;
    for (int32_t i = 0; i < n; i++) {
        float r = p[i] - q[i];
        if (r > 0.0f)
            residual += r;
    }
    if (residual > 0.0) {
        for (int32_t i = 0; i < n; i++) {
            float r = p[i] - q[i];
            p[i] = r > 0.0f ? r : 0.0f;
        }
    }
    *out = fr_sampler_draw(s, p);
    return false;
}

void fr_sampler_get_rng(const fr_sampler *s, uint64_t out[4])
{
    memcpy(out, s->rng, sizeof s->rng);
}

void fr_sampler_set_rng(fr_sampler *s, const uint64_t in[4])
{
    memcpy(s->rng, in, sizeof s->rng);
}
