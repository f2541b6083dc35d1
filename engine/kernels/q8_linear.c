/* qwenbot's int8 matrix kernel for the native decoder on a CPU.
 *
 * Weights: int8 in blocks of 32 values along K with one fp16 scale each, as llama.cpp's
 * Q8_0. Each group of GROUP_ROWS rows is interleaved in 64-byte pieces so the kernel reads
 * one sequential stream. Activations: int16 with one scale per row, so they are as exact
 * as fp32 for this purpose (int8 activations, as llama.cpp uses, flip near-ties: measured
 * on SmolLM2, its answer to "What is the capital of France?" changed). AVX-512 VNNI's
 * vpdpwssd multiplies the int16 pairs.
 * Why our own: torch's int8 weight-only CPU kernel streams ~15 GB/s on 2 Zen 5 cores and
 * fbgemm's W8A8 uses one int8 scale per token, which garbles small models; this one
 * streams at about memory speed with finer weight scales than either.
 * The portable path (no AVX-512 VNNI) computes the same sums in plain C.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "q8_linear.h"

#if QB_VNNI
#include <immintrin.h>
#endif

#define GROUP_ROWS 4
#define PIECE 64   /* bytes of one row per interleaved piece; K must be a multiple */
#define BLOCK 32   /* weights per scale */
#define PREFETCH_BYTES 256

int qb_vnni(void) { return QB_VNNI; }

static inline int64_t piece_at(int64_t group, int64_t piece, int64_t k) {
    return group * (k / PIECE) + piece;
}

/* w int8 [N, K] and fp16 scales [N, K / BLOCK] (row-major) -> packed values
 * [N / GROUP_ROWS][K / PIECE][GROUP_ROWS][PIECE] and packed scales
 * [N / GROUP_ROWS][K / PIECE][GROUP_ROWS][PIECE / BLOCK]. */
void qb_pack(const int8_t *w, const uint16_t *scales, int64_t n, int64_t k, int8_t *packed,
             uint16_t *packed_scales) {
    const int64_t per_piece = PIECE / BLOCK;
    for (int64_t group = 0; group < n / GROUP_ROWS; group++)
        for (int64_t piece = 0; piece < k / PIECE; piece++)
            for (int64_t row = 0; row < GROUP_ROWS; row++) {
                const int64_t source_row = group * GROUP_ROWS + row;
                const int8_t *src = w + source_row * k + piece * PIECE;
                const int64_t at = piece_at(group, piece, k) * GROUP_ROWS + row;
                for (int64_t i = 0; i < PIECE; i++) packed[at * PIECE + i] = src[i];
                for (int64_t b = 0; b < per_piece; b++)
                    packed_scales[at * per_piece + b] = scales[source_row * (k / BLOCK) + piece * per_piece + b];
            }
}

static float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    float value;
    if (exponent == 0) value = ldexpf((float)mantissa, -24);            /* zero or subnormal */
    else if (exponent == 31) value = mantissa ? NAN : INFINITY;
    else value = ldexpf((float)(mantissa | 0x400), (int)exponent - 25);
    return sign ? -value : value;
}

/* Rows ids[0..count) of a packed matrix, de-quantised to fp32 [count, K] (embedding lookup). */
void qb_rows(const int8_t *packed, const uint16_t *packed_scales, const int64_t *ids,
             int64_t count, int64_t k, float *out) {
    const int64_t per_piece = PIECE / BLOCK;
    for (int64_t i = 0; i < count; i++) {
        const int64_t group = ids[i] / GROUP_ROWS, row = ids[i] % GROUP_ROWS;
        for (int64_t piece = 0; piece < k / PIECE; piece++) {
            const int64_t at = piece_at(group, piece, k) * GROUP_ROWS + row;
            for (int64_t j = 0; j < PIECE; j++) {
                const float scale = half_to_float(packed_scales[at * per_piece + j / BLOCK]);
                out[i * k + piece * PIECE + j] = (float)packed[at * PIECE + j] * scale;
            }
        }
    }
}

float qb_quantize_row(const float *x, int64_t k, int16_t *values) {
    float amax = 0.0f;
    for (int64_t i = 0; i < k; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float scale = amax / 32767.0f;
    const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
    for (int64_t i = 0; i < k; i++) values[i] = (int16_t)lrintf(x[i] * inverse);
    return scale;
}

/* The GROUP_ROWS dot products of one packed row group with one row of int16 activations. */
static void group_dot(const int8_t *group, const uint16_t *group_scales, const int16_t *values,
                      int64_t k, float sums[GROUP_ROWS]) {
#if QB_VNNI
    __m512 acc[GROUP_ROWS];
    __m512i pick[GROUP_ROWS * 2]; /* broadcasts scale j of a piece's 8 (row r, block b: 2r + b) */
    for (int j = 0; j < GROUP_ROWS * 2; j++) pick[j] = _mm512_set1_epi32(j);
    for (int r = 0; r < GROUP_ROWS; r++) acc[r] = _mm512_setzero_ps();
    const int8_t *p = group;
    const uint16_t *ps = group_scales;
    for (int64_t i = 0; i < k; i += PIECE, p += GROUP_ROWS * PIECE, ps += GROUP_ROWS * (PIECE / BLOCK)) {
        _mm_prefetch((const char *)p + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)p + PREFETCH_BYTES + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)p + PREFETCH_BYTES + 128, _MM_HINT_T0);
        _mm_prefetch((const char *)p + PREFETCH_BYTES + 192, _MM_HINT_T0);
        const __m512 ws = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)ps)));
        const __m512i x0 = _mm512_loadu_si512(values + i);
        const __m512i x1 = _mm512_loadu_si512(values + i + BLOCK);
        for (int r = 0; r < GROUP_ROWS; r++) {
            /* One block of 32 weights widened to int16; vpdpwssd sums adjacent pairs. */
            const __m512i w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + r * PIECE)));
            const __m512i w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + r * PIECE + BLOCK)));
            const __m512i d0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), w0, x0);
            const __m512i d1 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), w1, x1);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_permutexvar_ps(pick[2 * r], ws), acc[r]);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_permutexvar_ps(pick[2 * r + 1], ws), acc[r]);
        }
    }
    for (int r = 0; r < GROUP_ROWS; r++) sums[r] = _mm512_reduce_add_ps(acc[r]);
#else
    const int64_t per_piece = PIECE / BLOCK;
    for (int row = 0; row < GROUP_ROWS; row++) sums[row] = 0.0f;
    for (int64_t piece = 0; piece < k / PIECE; piece++)
        for (int row = 0; row < GROUP_ROWS; row++)
            for (int64_t b = 0; b < per_piece; b++) {
                const int8_t *w = group + (piece * GROUP_ROWS + row) * PIECE + b * BLOCK;
                const int16_t *x = values + piece * PIECE + b * BLOCK;
                int32_t dot = 0;
                for (int i = 0; i < BLOCK; i++) dot += (int32_t)w[i] * x[i];
                sums[row] += (float)dot * half_to_float(group_scales[(piece * GROUP_ROWS + row) * per_piece + b]);
            }
#endif
}

void qb_rows_dot(const int8_t *packed, const uint16_t *packed_scales, const int16_t *values,
                 float scale, int64_t n, int64_t k, float *y) {
#pragma omp for schedule(static)
    for (int64_t group = 0; group < n / GROUP_ROWS; group++) {
        float sums[GROUP_ROWS];
        group_dot(packed + group * GROUP_ROWS * k, packed_scales + group * GROUP_ROWS * (k / BLOCK),
                  values, k, sums);
        for (int r = 0; r < GROUP_ROWS; r++) y[group * GROUP_ROWS + r] = sums[r] * scale;
    }
}

/* y [M, N] = x [M, K] @ W.T for a packed W. Returns 0, or -1 when scratch memory cannot
 * be had. N % GROUP_ROWS == 0 and K % PIECE == 0 (checked by the caller). */
int qb_linear(const int8_t *packed, const uint16_t *packed_scales, const float *x, float *y,
              int64_t m, int64_t n, int64_t k, int threads) {
    int16_t *values = malloc(sizeof(int16_t) * (size_t)(m * k));
    float *row_scales = malloc(sizeof(float) * (size_t)m);
    if (!values || !row_scales) {
        free(values); free(row_scales);
        return -1;
    }
    for (int64_t row = 0; row < m; row++) row_scales[row] = qb_quantize_row(x + row * k, k, values + row * k);
    const int64_t groups = n / GROUP_ROWS;
    /* Each thread streams a contiguous share of the rows; a group's rows stay in L1 while
     * every activation row passes over them. */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t group = 0; group < groups; group++) {
        const int8_t *weights = packed + group * GROUP_ROWS * k;
        const uint16_t *scales = packed_scales + group * GROUP_ROWS * (k / BLOCK);
        for (int64_t row = 0; row < m; row++) {
            float sums[GROUP_ROWS];
            group_dot(weights, scales, values + row * k, k, sums);
            float *out = y + row * n + group * GROUP_ROWS;
            for (int r = 0; r < GROUP_ROWS; r++) out[r] = sums[r] * row_scales[row];
        }
    }
    free(values); free(row_scales);
    return 0;
}

static inline uint16_t float_to_bf16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16); /* round to nearest even */
}

/* The whole packed matrix de-quantised to bf16 [N, K] row-major, for a prompt's dense matmul
 * (torch's bf16 GEMM beats this kernel once a prompt has a few rows). */
void qb_unpack_bf16(const int8_t *packed, const uint16_t *packed_scales, int64_t n, int64_t k,
                    uint16_t *out, int threads) {
    const int64_t per_piece = PIECE / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t group = 0; group < n / GROUP_ROWS; group++)
        for (int64_t piece = 0; piece < k / PIECE; piece++)
            for (int64_t row = 0; row < GROUP_ROWS; row++) {
                const int64_t at = piece_at(group, piece, k) * GROUP_ROWS + row;
                uint16_t *dst = out + (group * GROUP_ROWS + row) * k + piece * PIECE;
                for (int64_t b = 0; b < per_piece; b++) {
                    const float scale = half_to_float(packed_scales[at * per_piece + b]);
                    const int8_t *src = packed + at * PIECE + b * BLOCK;
#if QB_VNNI && defined(__AVX512BF16__)
                    const __m512 s = _mm512_set1_ps(scale);
                    const __m512 low = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)src))), s);
                    const __m512 high = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(src + 16)))), s);
                    _mm512_storeu_si512(dst + b * BLOCK, (__m512i)_mm512_cvtne2ps_pbh(high, low));
#else
                    for (int64_t i = 0; i < BLOCK; i++) dst[b * BLOCK + i] = float_to_bf16((float)src[i] * scale);
#endif
                }
            }
}
