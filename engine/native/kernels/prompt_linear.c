/* A prompt's matmul on integer activations: y [M, N] = x [M, K] @ W.T for a packed W, with x
 * quantised in blocks of 32: as llama.cpp quantises activations for its Q8_0 dot products
 * (a = da * code, da = the block's largest |x| / 127, code in [-127, 127]), or, `precise`,
 * to 15 bits (da = largest |x| / 16383), split as code = 128 * high + low (high signed, low
 * in [0, 127]) so that each half is one int8 product, as the decode kernel's rows are.
 * 8 bits are ~1.5x as fast; on SmolLM2 they flipped the near-tie that decides the answer to
 * "What is the capital of France?" (benchmarks/fidelity.py), 15 bits did not.
 *
 * Why: a prompt pass is many rows through the same weights, bound by multiply-adds rather
 * than by reading the weights. torch's bf16 GEMM needs the weights de-quantised to bf16 for
 * every pass and does 2 products per 32-bit lane; an int8 dot product does 4 (vpdpbusd),
 * straight from the packed bytes. AMX's int8 tiles (amx_prompt.c) take a block for 16 rows
 * at once, but a block of 32 is half a tile's depth and every block's sums must leave the
 * tile to be scaled: there torch's bf16 tiles win from ~64 rows on (packed_linear.py).
 *
 * Per block b of row i and weight row n the int32 sum is exact; it meets the scales as
 *   8-bit weights: acc = fma(float(dot - 128 * asum), da * dw, acc)   (codes stored as code + 128)
 *   4-bit weights: acc = fma(float(dot), da * dw, acc); acc = fma(m, da * asum, acc)
 * in block order, in every path (AMX, AVX-512 VNNI, plain C), so the three agree to the bit
 * and a row's result never depends on which other rows share the call (a prompt read in one
 * pass or in chunks fills the cache alike).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "prompt_linear.h"
#define CHUNK_BYTES (256 * 1024) /* activations a chunk of rows holds: well within L2 */
#define VNNI_ROWS 8 /* rows sharing a block's weight registers on the VNNI path */


#if !QB_VNNI
static float input_at(const void *x, int bf16, int64_t i) {
    if (!bf16) return ((const float *)x)[i];
    const uint32_t bits = (uint32_t)((const uint16_t *)x)[i] << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}
#endif

/* One block of 32 inputs (fp32 or bf16) -> codes (split when low is not NULL), its scale and
 * sums; the SIMD and plain loops compute the same numbers (lrintf and cvtps both round to
 * nearest even). */
static void quantize_block(const void *x, int bf16, int64_t at, int8_t *codes, int8_t *low, float *scale,
                           int32_t *sum, float *moment) {
    const float top = low ? 16383.0f : 127.0f;
    int32_t total = 0;
    float d;
#if QB_VNNI
    __m512 v[2];
    for (int h = 0; h < 2; h++)
        v[h] = bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
                          (const __m256i *)(const void *)((const uint16_t *)x + at + 16 * h))), 16))
                    : _mm512_loadu_ps((const float *)x + at + 16 * h);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
    d = amax / top;
    const __m512 inverse = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
    __m512i rounded[2];
    for (int h = 0; h < 2; h++) {
        rounded[h] = _mm512_cvtps_epi32(_mm512_mul_ps(v[h], inverse));
        if (low) {
            _mm_storeu_si128((__m128i *)(void *)(codes + 16 * h), _mm512_cvtepi32_epi8(_mm512_srai_epi32(rounded[h], 7)));
            _mm_storeu_si128((__m128i *)(void *)(low + 16 * h),
                             _mm512_cvtepi32_epi8(_mm512_and_si512(rounded[h], _mm512_set1_epi32(127))));
        } else {
            _mm_storeu_si128((__m128i *)(void *)(codes + 16 * h), _mm512_cvtepi32_epi8(rounded[h]));
        }
    }
    total = _mm512_reduce_add_epi32(_mm512_add_epi32(rounded[0], rounded[1]));
#else
    float amax = 0.0f;
    for (int j = 0; j < BLOCK; j++) amax = fmaxf(amax, fabsf(input_at(x, bf16, at + j)));
    d = amax / top;
    const float inverse = d > 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < BLOCK; j++) {
        const int32_t code = (int32_t)lrintf(input_at(x, bf16, at + j) * inverse);
        codes[j] = (int8_t)(low ? code >> 7 : code); /* arithmetic shift: floor division */
        if (low) low[j] = (int8_t)(code & 127);
        total += code;
    }
#endif
    *scale = d;
    *sum = total;
    *moment = d * (float)total;
}

/* Quantise rows [0, m) of x; rows up to the next GROUP are zeros. */
static void quantize_rows(const void *x, int bf16, int64_t m, int64_t k, const BlockActivations *a) {
    const int64_t blocks = k / BLOCK, padded = (m + GROUP - 1) / GROUP * GROUP;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < padded; i++) {
        for (int64_t b = 0; b < blocks; b++) {
            const int64_t at = i * blocks + b;
            if (i < m) {
                quantize_block(x, bf16, i * k + b * BLOCK, a->codes + i * k + b * BLOCK,
                               a->low ? a->low + i * k + b * BLOCK : NULL, a->scales + at, a->sums + at, a->moments + at);
            } else {
                memset(a->codes + i * k + b * BLOCK, 0, BLOCK);
                if (a->low) memset(a->low + i * k + b * BLOCK, 0, BLOCK);
                a->scales[at] = 0.0f; a->sums[at] = 0; a->moments[at] = 0.0f;
            }
        }
    }
}

/* fp32 -> out row (fp32, or bf16 rounded to nearest even). */
static void store_row(const float *sums, void *y, int y_bf16, int64_t at) {
    if (!y_bf16) {
        memcpy((float *)y + at, sums, TILE * sizeof(float));
        return;
    }
    for (int r = 0; r < TILE; r++) ((uint16_t *)y)[at + r] = float_to_bf16_rounded(sums[r]);
}

/* The plain C path: one tile of weight rows against a group of activation rows. */
static void tile_group_plain(const uint8_t *codes, const uint16_t *scales, int bits, const BlockActivations *a,
                             int64_t first, int64_t rows, int64_t k, float out[GROUP][TILE]) {
    const int64_t blocks = k / BLOCK, bytes = block_bytes(bits), words = block_words(bits);
    for (int64_t i = 0; i < rows; i++)
        for (int r = 0; r < TILE; r++) out[i][r] = 0.0f;
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *block = codes + b * bytes;
        for (int64_t i = 0; i < rows; i++) {
            const int64_t row = first + i, at = row * blocks + b;
            const int8_t *x = a->codes + row * k + b * BLOCK, *x_low = a->low ? a->low + row * k + b * BLOCK : NULL;
            for (int r = 0; r < TILE; r++) {
                float d, m;
                block_scales(scales + b * words, r, bits, &d, &m);
                int32_t dot = 0;
                for (int64_t j = 0; j < BLOCK; j++) {
                    const int32_t stored = bits == 8 ? code_at(block, r, j, bits) + 128 : code_at(block, r, j, bits);
                    dot += stored * (x_low ? 128 * x[j] + x_low[j] : x[j]);
                }
                if (bits == 8) dot -= 128 * a->sums[at];
                out[i][r] = fmaf((float)dot, a->scales[at] * d, out[i][r]);
                if (bits == 4) out[i][r] = fmaf(m, a->moments[at], out[i][r]);
            }
        }
    }
}

#if QB_VNNI
/* The AVX-512 VNNI path: VNNI_ROWS rows at a time share each block's weight registers. */
static void tile_group_vnni(const uint8_t *codes, const uint16_t *scales, int bits, const BlockActivations *a,
                            int64_t first, int64_t rows, int64_t k, float out[GROUP][TILE]) {
    const int64_t blocks = k / BLOCK, bytes = block_bytes(bits), words = block_words(bits);
    for (int64_t part = 0; part < rows; part += VNNI_ROWS) {
        __m512 acc[VNNI_ROWS];
        for (int i = 0; i < VNNI_ROWS; i++) acc[i] = _mm512_setzero_ps();
        for (int64_t b = 0; b < blocks; b++) {
            __m512i w[QUADS];
            load_block(codes + b * bytes, bits, w);
            const uint16_t *s = scales + b * words;
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)s));
            const __m512 m = bits == 4 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + TILE))) : d;
            for (int i = 0; i < VNNI_ROWS; i++) {
                const int64_t row = first + part + i;
                const quad_word *x = (const quad_word *)(const void *)(a->codes + row * k + b * BLOCK);
                __m512i d0 = _mm512_setzero_si512(), d1 = d0; /* two chains, so they overlap */
                for (int q = 0; q < QUADS; q += 2) {
                    d0 = dpbusd_broadcast(d0, w[q], x + q);
                    d1 = dpbusd_broadcast(d1, w[q + 1], x + q + 1);
                }
                __m512i dots = _mm512_add_epi32(d0, d1);
                if (a->low) { /* high part times 128, plus the low part's products */
                    const quad_word *x_low = (const quad_word *)(const void *)(a->low + row * k + b * BLOCK);
                    __m512i l0 = _mm512_setzero_si512(), l1 = l0;
                    for (int q = 0; q < QUADS; q += 2) {
                        l0 = dpbusd_broadcast(l0, w[q], x_low + q);
                        l1 = dpbusd_broadcast(l1, w[q + 1], x_low + q + 1);
                    }
                    dots = _mm512_add_epi32(_mm512_slli_epi32(dots, 7), _mm512_add_epi32(l0, l1));
                }
                acc[i] = scale_block(acc[i], dots, d, m, bits, a, row * blocks + b);
            }
        }
        for (int i = 0; i < VNNI_ROWS && part + i < rows; i++) _mm512_storeu_ps(out[part + i], acc[i]);
    }
}
#endif


/* 2: AMX, 1: AVX-512 VNNI, 0: plain C; what qb_prompt_linear takes by default here. */
int qb_prompt_path(void) {
#if QB_AMX
    if (qb_amx_granted()) return 2;
#endif
    return QB_VNNI;
}

/* y [M, N] (fp32, or bf16 when y_bf16) = x [M, K] (fp32, or bf16 when x_bf16) @ W.T for a packed
 * W, activations in 8 bits or (precise) 15, on `path` (as qb_prompt_path; a path this build
 * lacks falls back to the next one down).
 * Returns 0, or -1 when scratch memory cannot be had. N % TILE == 0, K % BLOCK == 0. */
int qb_prompt_linear(const uint8_t *packed, const uint16_t *packed_scales, int bits, const void *x, int x_bf16,
                     void *y, int y_bf16, int64_t m, int64_t n, int64_t k, int precise, int threads, int path) {
    const int64_t blocks = k / BLOCK, padded = (m + GROUP - 1) / GROUP * GROUP;
    BlockActivations a = {
        malloc((size_t)(padded * k)), precise ? malloc((size_t)(padded * k)) : NULL,
        malloc(sizeof(float) * (size_t)(padded * blocks)),
        malloc(sizeof(int32_t) * (size_t)(padded * blocks)), malloc(sizeof(float) * (size_t)(padded * blocks)),
    };
    if (!a.codes || (precise && !a.low) || !a.scales || !a.sums || !a.moments) {
        free(a.codes); free(a.low); free(a.scales); free(a.sums); free(a.moments);
        return -1;
    }
    if (path > qb_prompt_path()) path = qb_prompt_path();
    const int64_t chunk = (CHUNK_BYTES / k + GROUP - 1) / GROUP * GROUP; /* rows, whole groups */
#pragma omp parallel num_threads(threads)
    {
        quantize_rows(x, x_bf16, m, k, &a); /* its omp for ends on a barrier */
#if QB_AMX
        if (path == 2) qb_prompt_amx_configure();
#endif
        /* Rows a chunk at a time, so a chunk's activations stay in L2 while every tile of
         * weights meets them (tile by tile over all rows re-read them from memory: a
         * 2,000-token pass ran at 0.6x the speed of a 256-token one). */
        for (int64_t start = 0; start < m; start += chunk) {
            const int64_t stop = m < start + chunk ? m : start + chunk;
#pragma omp for schedule(static) nowait
            for (int64_t tile = 0; tile < n / TILE; tile++) {
                const uint8_t *codes = packed + tile * blocks * block_bytes(bits);
                const uint16_t *scales = packed_scales + tile * blocks * block_words(bits);
                for (int64_t first = start; first < stop; first += GROUP) {
                    const int64_t rows = stop - first < GROUP ? stop - first : GROUP;
                    float out[GROUP][TILE];
#if QB_AMX
                    if (path == 2) qb_prompt_amx_group(codes, scales, bits, &a, first, rows, k, out);
                    else
#endif
#if QB_VNNI
                    if (path == 1) tile_group_vnni(codes, scales, bits, &a, first, rows, k, out);
                    else
#endif
                        tile_group_plain(codes, scales, bits, &a, first, rows, k, out);
                    for (int64_t i = 0; i < rows; i++) store_row(out[i], y, y_bf16, (first + i) * n + tile * TILE);
                }
            }
        }
#if QB_AMX
        if (path == 2) _tile_release();
#endif
    }
    free(a.codes); free(a.low); free(a.scales); free(a.sums); free(a.moments);
    return 0;
}
