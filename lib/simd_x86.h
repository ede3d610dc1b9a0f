/* x86 SIMD helpers shared by the matrix kernels (kernels_x86.c) and attention
 * (attention.c): target attributes, and the transposed horizontal sums that add 8 (16)
 * vectors' lanes at once. Include only where FR_X86-style guards hold (x86 and GCC or
 * clang). */
#ifndef FREE_SIMD_X86_H
#define FREE_SIMD_X86_H

#include <immintrin.h>

#define FR_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FR_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#ifdef FR_SIMD_PLAIN
/* Fuzz builds (meson -Dfuzz=true): forced inlining and full unrolling of the tiles
 * multiply the code that coverage, ASan and UBSan instrument - clang 14 then needs over 11
 * minutes and 2 GB for kernels_x86.c. The compiler's own choices compute the same
 * operations in the same order (the results do not change), just more slowly. */
#define FR_INLINE inline
#define FR_UNROLL
#else
#define FR_INLINE inline __attribute__((always_inline))
/* Full unrolling of the block loops keeps the accumulators in registers at any -O. */
#define FR_UNROLL _Pragma("GCC unroll 16")
#endif

/* The canonical horizontal sum of 8 lanes is ((v0 + v4) + (v2 + v6)) + ((v1 + v5) +
 * (v3 + v7)), the first operand of each addition the lower lanes (as in the sequence
 * _mm_add_ps(low, high 128 bits), _mm_add_ps(s, _mm_movehl_ps(s, s)),
 * _mm_add_ss(s, _mm_movehdup_ps(s))). avx2_hsum8 makes those additions for 8 vectors at
 * once: lane o of the result is the sum of v[o], the levels 4 + 4 (128-bit halves), 2 + 2,
 * 1 + 1 each done 8 lanes wide. After it half h of the result holds the sums of the
 * vectors in slots h, h + 2, h + 4, h + 6, so v[o] goes into slot 2 (o % 4) + o / 4. */
FR_AVX2 static FR_INLINE __m256 avx2_hsum8(const __m256 v[8])
{
    __m256 p[4], q[2];
    FR_UNROLL
    for (int i = 0; i < 4; i++) {
        __m256 a = v[(2 * i) % 2 * 4 + (2 * i) / 2], b = v[(2 * i + 1) % 2 * 4 + (2 * i + 1) / 2];
        p[i] = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20),
                             _mm256_permute2f128_ps(a, b, 0x31));
    }
    FR_UNROLL
    for (int i = 0; i < 2; i++) {
        __m256 a = p[2 * i], b = p[2 * i + 1];
        q[i] = _mm256_add_ps(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    return _mm256_add_ps(_mm256_shuffle_ps(q[0], q[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm256_shuffle_ps(q[0], q[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* The canonical horizontal sum of 16 lanes adds the two 256-bit halves (low + high), then
 * sums the 8 lanes as avx2_hsum8 does. avx512_hsum16 makes those additions for 16 vectors
 * at once: lane o of the result is the sum of v[o], the levels 8 + 8, 4 + 4 (128-bit
 * quarters), 2 + 2, 1 + 1 each done 16 lanes wide, lower lanes first. After it quarter m
 * of the result holds the sums of the vectors in slots m, m + 4, m + 8, m + 12, so v[o]
 * goes into slot 4 (o % 4) + o / 4. */
FR_AVX512 static FR_INLINE __m512 avx512_hsum16(const __m512 v[16])
{
    __m512 p[8], q[4], s[2];
    FR_UNROLL
    for (int i = 0; i < 8; i++) {
        __m512 a = v[(2 * i) % 4 * 4 + (2 * i) / 4];
        __m512 b = v[(2 * i + 1) % 4 * 4 + (2 * i + 1) / 4];
        p[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    FR_UNROLL
    for (int i = 0; i < 4; i++) {
        __m512 a = p[2 * i], b = p[2 * i + 1];
        q[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    FR_UNROLL
    for (int i = 0; i < 2; i++) {
        __m512 a = q[2 * i], b = q[2 * i + 1];
        s[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    return _mm512_add_ps(_mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

#endif
