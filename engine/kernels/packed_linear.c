/* qwenbot's block-quantised matrix kernels for the native decoder on a CPU.
 *
 * Weights: 8 or 4 bits in blocks of 32 values along K, as llama.cpp's Q8_0 (w = d * code,
 * code in [-127, 127]) and Q4_1 (w = d * code + m, code in [0, 15]), with fp16 d and m.
 * Each group of GROUP_ROWS rows is interleaved in pieces of 64 weights (64 or 32 bytes) so
 * the kernel reads one sequential stream; in a 4-bit piece, byte j holds weight j in its
 * low nibble and weight j + 32 in its high one.
 * Activations: 15-bit integers with one scale per row, as exact as fp32 for this purpose
 * (int8 activations in blocks, as llama.cpp uses, flip near-ties: on SmolLM2 the answer to
 * "What is the capital of France?" changed). AVX-512 VNNI multiplies them: vpdpwssd on
 * int16 pairs for 8-bit weights, vpdpbusd on the activations' two bytes for 4-bit ones.
 * Why our own: torch's int8 weight-only CPU kernel streams ~15 GB/s on 2 Zen 5 cores,
 * fbgemm's W8A8 uses one int8 scale per token, which garbles small models, and torch's int4
 * kernel is compute-bound; these stream at about memory speed with finer weight scales.
 * The portable path (no AVX-512 VNNI) computes the same sums in plain C.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "packed_linear.h"

#if QB_VNNI
#include <immintrin.h>
#endif

#define GROUP_ROWS 4
#define PIECE 64 /* weights of one row per interleaved piece; K must be a multiple */
#define BLOCK 32 /* weights per scale */
#define PER_PIECE (PIECE / BLOCK)
#define PREFETCH_PIECES 1 /* how far ahead to prefetch */

int qb_vnni(void) { return QB_VNNI; }

static inline int64_t piece_bytes(int bits) { return PIECE * bits / 8; }

/* fp16 words per block: d, and m for 4 bits. */
static inline int64_t scale_words(int bits) { return bits == 4 ? 2 : 1; }

/* Where a group's piece keeps its scales: GROUP_ROWS * PER_PIECE d's (row r, block b at
 * r * PER_PIECE + b), then, for 4 bits, as many m's. */
static inline int64_t piece_scales_at(int64_t group, int64_t piece, int64_t k, int bits) {
    return (group * (k / PIECE) + piece) * scale_words(bits) * GROUP_ROWS * PER_PIECE;
}

/* Where row `row` of a group keeps piece `piece` (as a count of row-pieces). */
static inline int64_t row_piece(int64_t group, int64_t piece, int64_t row, int64_t k) {
    return (group * (k / PIECE) + piece) * GROUP_ROWS + row;
}

/* codes [N, K] (int8: [-127, 127] for 8 bits, [0, 15] for 4) and fp16 scales
 * [N, K / BLOCK, scale words] (d, or d and m), row-major -> packed codes
 * [N / GROUP_ROWS][K / PIECE][GROUP_ROWS][piece bytes] and packed scales (piece_scales_at). */
void qb_pack(const int8_t *codes, const uint16_t *scales, int64_t n, int64_t k, int bits,
             uint8_t *packed, uint16_t *packed_scales) {
    const int64_t bytes = piece_bytes(bits), words = scale_words(bits);
    for (int64_t group = 0; group < n / GROUP_ROWS; group++)
        for (int64_t piece = 0; piece < k / PIECE; piece++) {
            uint16_t *piece_scales = packed_scales + piece_scales_at(group, piece, k, bits);
            for (int64_t row = 0; row < GROUP_ROWS; row++) {
                const int64_t source_row = group * GROUP_ROWS + row;
                const int8_t *src = codes + source_row * k + piece * PIECE;
                uint8_t *dst = packed + row_piece(group, piece, row, k) * bytes;
                if (bits == 8)
                    memcpy(dst, src, PIECE);
                else
                    for (int64_t j = 0; j < PIECE / 2; j++)
                        dst[j] = (uint8_t)(src[j] | (src[j + PIECE / 2] << 4));
                for (int64_t b = 0; b < PER_PIECE; b++)
                    for (int64_t word = 0; word < words; word++)
                        piece_scales[word * GROUP_ROWS * PER_PIECE + row * PER_PIECE + b] =
                            scales[(source_row * (k / BLOCK) + piece * PER_PIECE + b) * words + word];
            }
        }
}

static float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    float value;
    if (exponent == 0) value = ldexpf((float)mantissa, -24); /* zero or subnormal */
    else if (exponent == 31) value = mantissa ? NAN : INFINITY;
    else value = ldexpf((float)(mantissa | 0x400), (int)exponent - 25);
    return sign ? -value : value;
}

/* The code of weight j (0..PIECE-1) of one row's piece. */
static inline int32_t code_at(const uint8_t *piece, int64_t j, int bits) {
    if (bits == 8) return (int8_t)piece[j];
    return j < PIECE / 2 ? piece[j] & 15 : piece[j - PIECE / 2] >> 4;
}

/* d and m of (row, block) in a piece's scales (m = 0 for 8 bits). */
static inline void block_scales(const uint16_t *piece_scales, int64_t row, int64_t block, int bits,
                                float *d, float *m) {
    *d = half_to_float(piece_scales[row * PER_PIECE + block]);
    *m = bits == 4 ? half_to_float(piece_scales[GROUP_ROWS * PER_PIECE + row * PER_PIECE + block]) : 0.0f;
}

/* Rows ids[0..count) of a packed matrix, de-quantised to fp32 [count, K] (embedding lookup). */
void qb_rows(const uint8_t *packed, const uint16_t *packed_scales, int bits, const int64_t *ids,
             int64_t count, int64_t k, float *out) {
    for (int64_t i = 0; i < count; i++) {
        const int64_t group = ids[i] / GROUP_ROWS, row = ids[i] % GROUP_ROWS;
        for (int64_t piece = 0; piece < k / PIECE; piece++) {
            const uint8_t *codes = packed + row_piece(group, piece, row, k) * piece_bytes(bits);
            const uint16_t *piece_scales = packed_scales + piece_scales_at(group, piece, k, bits);
            for (int64_t j = 0; j < PIECE; j++) {
                float d, m;
                block_scales(piece_scales, row, j / BLOCK, bits, &d, &m);
                out[i * k + piece * PIECE + j] = (float)code_at(codes, j, bits) * d + m;
            }
        }
    }
}

int qb_activations_alloc(Activations *a, int64_t k) {
    a->values = malloc(sizeof(int16_t) * (size_t)k);
    a->high = malloc((size_t)k);
    a->low = malloc((size_t)k);
    a->lane_sums = malloc(sizeof(float) * (size_t)(k / 4 + 1));
    a->scale = 0.0f;
    if (a->values && a->high && a->low && a->lane_sums) return 0;
    qb_activations_free(a);
    return -1;
}

void qb_activations_free(Activations *a) {
    free(a->values); free(a->high); free(a->low); free(a->lane_sums);
    a->values = NULL; a->high = a->low = NULL; a->lane_sums = NULL;
}

void qb_quantize(const float *x, int64_t k, int bits, Activations *a) {
    float amax = 0.0f;
    for (int64_t i = 0; i < k; i++) amax = fmaxf(amax, fabsf(x[i]));
    a->scale = amax / 16383.0f;
    const float inverse = a->scale > 0.0f ? 1.0f / a->scale : 0.0f;
    for (int64_t i = 0; i < k; i++) a->values[i] = (int16_t)lrintf(x[i] * inverse);
    if (bits != 4) return;
    for (int64_t i = 0; i < k; i++) {
        a->high[i] = (int8_t)(a->values[i] >> 7); /* arithmetic shift: floor division */
        a->low[i] = (int8_t)(a->values[i] & 127);
    }
    for (int64_t lane = 0; lane < k / 4; lane++) {
        const int16_t *v = a->values + 4 * lane;
        a->lane_sums[lane] = (float)(v[0] + v[1] + v[2] + v[3]);
    }
}

#if QB_VNNI
/* A row's piece as two blocks of 32 int16 codes. */
static inline void load_piece(const uint8_t *p, int bits, __m512i *first, __m512i *second) {
    if (bits == 8) {
        *first = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p));
        *second = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + 32)));
    } else {
        const __m256i nibbles = _mm256_loadu_si256((const __m256i *)p), low = _mm256_set1_epi8(15);
        *first = _mm512_cvtepu8_epi16(_mm256_and_si256(nibbles, low));
        *second = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(nibbles, 4), low));
    }
}
#endif

/* The GROUP_ROWS dot products of one packed row group with one row of activations, in
 * units of the activations' scale. */
static inline void group_dot(const uint8_t *group, const uint16_t *group_scales, int bits,
                             const Activations *a, int64_t k, float sums[GROUP_ROWS]) {
    const int16_t *values = a->values;
    const int64_t bytes = piece_bytes(bits);
    const int64_t scales_per_piece = scale_words(bits) * GROUP_ROWS * PER_PIECE;
#if QB_VNNI
    __m512 acc[GROUP_ROWS];
    __m512i pick[GROUP_ROWS * PER_PIECE]; /* broadcasts a piece's d of (row r, block b): 2r + b */
    for (int j = 0; j < GROUP_ROWS * PER_PIECE; j++) pick[j] = _mm512_set1_epi32(j);
    __m512i spread[GROUP_ROWS]; /* row r's two d's over lanes 0-7 and 8-15 */
    for (int r = 0; r < GROUP_ROWS; r++)
        spread[r] = _mm512_mask_blend_epi32(0xff00, pick[2 * r], pick[2 * r + 1]);
    const __m512i to_m = _mm512_set1_epi32(GROUP_ROWS * PER_PIECE); /* the m's follow the d's */
    for (int r = 0; r < GROUP_ROWS; r++) acc[r] = _mm512_setzero_ps();
    const uint8_t *p = group;
    const uint16_t *ps = group_scales;
    for (int64_t i = 0; i < k; i += PIECE, p += GROUP_ROWS * bytes, ps += scales_per_piece) {
        for (int64_t line = 0; line < GROUP_ROWS * bytes; line += 64)
            _mm_prefetch((const char *)p + PREFETCH_PIECES * GROUP_ROWS * bytes + line, _MM_HINT_T0);
        if (bits == 4) {
            /* 64 nibbles as u8 against the activations' two s8 parts: vpdpbusd sums 4
             * products per lane, so lanes 0-7 hold block 0 and lanes 8-15 block 1; each
             * block adds d * sum(code * x) + m * sum(x). */
            const __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)ps));
            const __m512i high = _mm512_loadu_si512(a->high + i), low = _mm512_loadu_si512(a->low + i);
            const __m512 lane_sums = _mm512_loadu_ps(a->lane_sums + i / 4);
            const __m256i mask = _mm256_set1_epi8(15);
            for (int r = 0; r < GROUP_ROWS; r++) {
                const __m256i nibbles = _mm256_loadu_si256((const __m256i *)(p + r * bytes));
                const __m512i q = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_and_si256(nibbles, mask)),
                    _mm256_and_si256(_mm256_srli_epi16(nibbles, 4), mask), 1);
                const __m512i by_high = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, high);
                const __m512i dots = _mm512_add_epi32(_mm512_slli_epi32(by_high, 7), _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, low));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_permutexvar_ps(spread[r], ws), acc[r]);
                acc[r] = _mm512_fmadd_ps(lane_sums, _mm512_permutexvar_ps(_mm512_add_epi32(spread[r], to_m), ws), acc[r]);
            }
            continue;
        }
        const __m512 ws = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)ps)));
        const __m512i x0 = _mm512_loadu_si512(values + i);
        const __m512i x1 = _mm512_loadu_si512(values + i + BLOCK);
        for (int r = 0; r < GROUP_ROWS; r++) {
            __m512i w0, w1;
            load_piece(p + r * bytes, bits, &w0, &w1);
            /* vpdpwssd sums adjacent int16 products into 16 int32 lanes: one block each. */
            const __m512i d0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), w0, x0);
            const __m512i d1 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), w1, x1);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_permutexvar_ps(pick[2 * r], ws), acc[r]);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_permutexvar_ps(pick[2 * r + 1], ws), acc[r]);
        }
    }
    for (int r = 0; r < GROUP_ROWS; r++) sums[r] = _mm512_reduce_add_ps(acc[r]);
#else
    for (int row = 0; row < GROUP_ROWS; row++) sums[row] = 0.0f;
    for (int64_t piece = 0; piece < k / PIECE; piece++)
        for (int row = 0; row < GROUP_ROWS; row++) {
            const uint8_t *codes = group + (piece * GROUP_ROWS + row) * bytes;
            for (int64_t b = 0; b < PER_PIECE; b++) {
                int32_t dot = 0, total = 0;
                for (int64_t i = 0; i < BLOCK; i++) {
                    const int32_t x = values[piece * PIECE + b * BLOCK + i];
                    dot += code_at(codes, b * BLOCK + i, bits) * x;
                    total += x;
                }
                float d, m;
                block_scales(group_scales + piece * scales_per_piece, row, b, bits, &d, &m);
                sums[row] += (float)dot * d + (float)total * m;
            }
        }
#endif
}

void qb_rows_dot_batch(const uint8_t *packed, const uint16_t *packed_scales, int bits,
                       const Activations *a, int64_t batch, int64_t n, int64_t k, float *y) {
    const int64_t group_bytes = GROUP_ROWS * (k / PIECE) * piece_bytes(bits);
#pragma omp for schedule(static)
    for (int64_t group = 0; group < n / GROUP_ROWS; group++)
        for (int64_t row = 0; row < batch; row++) {
            float sums[GROUP_ROWS];
            group_dot(packed + group * group_bytes, packed_scales + piece_scales_at(group, 0, k, bits),
                      bits, a + row, k, sums);
            for (int r = 0; r < GROUP_ROWS; r++) y[row * n + group * GROUP_ROWS + r] = sums[r] * a[row].scale;
        }
}

/* y [M, N] = x [M, K] @ W.T for a packed W. Returns 0, or -1 when scratch memory cannot
 * be had. N % GROUP_ROWS == 0 and K % PIECE == 0 (checked by the caller). */
int qb_linear(const uint8_t *packed, const uint16_t *packed_scales, int bits, const float *x,
              float *y, int64_t m, int64_t n, int64_t k, int threads) {
    Activations *rows = calloc((size_t)m, sizeof(Activations));
    int failed = rows == NULL;
    for (int64_t row = 0; row < m && !failed; row++) {
        failed = qb_activations_alloc(rows + row, k) != 0;
        if (!failed) qb_quantize(x + row * k, k, bits, rows + row);
    }
    const int64_t group_bytes = GROUP_ROWS * (k / PIECE) * piece_bytes(bits);
    /* Each thread streams a contiguous share of the rows; a group's rows stay in L1 while
     * every activation row passes over them. */
#pragma omp parallel for num_threads(threads) schedule(static) if (!failed)
    for (int64_t group = 0; group < (failed ? 0 : n / GROUP_ROWS); group++)
        for (int64_t row = 0; row < m; row++) {
            float sums[GROUP_ROWS];
            group_dot(packed + group * group_bytes, packed_scales + piece_scales_at(group, 0, k, bits),
                      bits, rows + row, k, sums);
            float *out = y + row * n + group * GROUP_ROWS;
            for (int r = 0; r < GROUP_ROWS; r++) out[r] = sums[r] * rows[row].scale;
        }
    for (int64_t row = 0; rows && row < m; row++) qb_activations_free(rows + row);
    free(rows);
    return failed ? -1 : 0;
}

static inline uint16_t float_to_bf16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16); /* round to nearest even */
}

/* The whole packed matrix de-quantised to bf16 [N, K] row-major, for a prompt's dense matmul
 * (torch's bf16 GEMM beats this kernel once a prompt has a few rows). */
void qb_unpack_bf16(const uint8_t *packed, const uint16_t *packed_scales, int bits, int64_t n,
                    int64_t k, uint16_t *out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t group = 0; group < n / GROUP_ROWS; group++)
        for (int64_t piece = 0; piece < k / PIECE; piece++) {
            const uint16_t *piece_scales = packed_scales + piece_scales_at(group, piece, k, bits);
            for (int64_t row = 0; row < GROUP_ROWS; row++) {
                const uint8_t *codes = packed + row_piece(group, piece, row, k) * piece_bytes(bits);
                uint16_t *dst = out + (group * GROUP_ROWS + row) * k + piece * PIECE;
#if QB_VNNI && defined(__AVX512BF16__)
                __m512i halves[PER_PIECE];
                load_piece(codes, bits, &halves[0], &halves[1]);
                for (int b = 0; b < PER_PIECE; b++) {
                    float d, m;
                    block_scales(piece_scales, row, b, bits, &d, &m);
                    const __m512 dv = _mm512_set1_ps(d), mv = _mm512_set1_ps(m);
                    const __m512 low = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(halves[b]))), dv, mv);
                    const __m512 high = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(halves[b], 1))), dv, mv);
                    _mm512_storeu_si512(dst + b * BLOCK, (__m512i)_mm512_cvtne2ps_pbh(high, low));
                }
#else
                for (int64_t j = 0; j < PIECE; j++) {
                    float d, m;
                    block_scales(piece_scales, row, j / BLOCK, bits, &d, &m);
                    dst[j] = float_to_bf16((float)code_at(codes, j, bits) * d + m);
                }
#endif
            }
        }
}
