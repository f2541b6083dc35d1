/* qwenbot's block-quantised matrix kernels for the native decoder on a CPU.
 *
 * Weights: 8 or 4 bits in blocks of 32 values along K, as llama.cpp's Q8_0 (w = d * code,
 * code in [-127, 127]) and Q4_1 (w = d * code + m, code in [0, 15]), with fp16 d and m.
 * Layout: tiles of TILE (16) rows; a tile's block is stored as 8 "quads" (4 consecutive
 * weights) x 16 rows x 4 bytes, so one 64-byte load holds one quad of all 16 rows and an
 * AVX-512 lane is a row. 8-bit codes are stored as unsigned (code + 128); in a 4-bit block,
 * 64-byte register i holds quad i in its low nibbles and quad i + 4 in its high ones.
 * Activations: 15-bit integers with one scale per row, split as value = 128 * high + low
 * (high signed, low in [0, 127]) so vpdpbusd multiplies unsigned weight bytes by signed
 * activation bytes, four products per lane; the +128 of 8-bit codes comes back out as
 * 128 * sum(values of the block). The integer sums are exact: the VNNI and portable paths
 * agree bit for bit. 15-bit activations rather than llama.cpp's int8 blocks: those flipped
 * near-ties on SmolLM2 (the answer to "What is the capital of France?" changed).
 * Why this layout: the previous one (4 rows, a row's block per register) spent three
 * instructions per 32 products on scaling and was compute-bound at batch 1; here each
 * block costs 16 vpdpbusd and 4 scaling instructions for 16 rows, and weight registers are
 * reused by every row of a decode batch.
 * The portable path (no AVX-512 VNNI) computes the same sums in plain C.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "packed_layout.h"
#include "packed_linear.h"

/* activation rows sharing a tile's weight registers: a decode batch of 8 reads each tile once
 * (its linears 11-12 % faster than 4 rows at a time on Zen 5; the same sums) */
#define ROWS_AT_ONCE 8
#define PREFETCH_BLOCKS 2 /* how far ahead to prefetch into L1 */
/* and into L2: the hardware prefetcher alone left a decode step's weight reads and its
 * multiply-adds one after the other (8 rows took the sum of both times); 16 KB ahead, the
 * linears take 0.76-0.94x the time on Zen 5 at 1-8 rows (8-bit; 4-bit 0.90-0.99x) */
#define L2_AHEAD_BYTES 16384

int qb_vnni(void) { return QB_VNNI; }

/* codes [N, K] (int8: [-127, 127] for 8 bits, [0, 15] for 4) and fp16 scales
 * [N, K / BLOCK, words] (d, or d and m), row-major -> packed codes [N / TILE][K / BLOCK]
 * [block bytes] and packed scales [N / TILE][K / BLOCK][block words]. */
void qb_pack(const int8_t *codes, const uint16_t *scales, int64_t n, int64_t k, int bits,
             uint8_t *packed, uint16_t *packed_scales) {
    const int64_t blocks = k / BLOCK, words = bits == 4 ? 2 : 1;
    for (int64_t tile = 0; tile < n / TILE; tile++)
        for (int64_t b = 0; b < blocks; b++) {
            uint8_t *dst = packed + (tile * blocks + b) * block_bytes(bits);
            uint16_t *dst_scales = packed_scales + (tile * blocks + b) * block_words(bits);
            memset(dst, 0, (size_t)block_bytes(bits));
            for (int64_t r = 0; r < TILE; r++) {
                const int64_t row = tile * TILE + r;
                for (int64_t j = 0; j < BLOCK; j++) {
                    const int8_t code = codes[row * k + b * BLOCK + j];
                    const int64_t q = j / 4, at = code_offset(r, q, j % 4, bits);
                    if (bits == 8) dst[at] = (uint8_t)(code + 128);
                    else dst[at] |= (uint8_t)(q < 4 ? code : code << 4);
                }
                for (int64_t word = 0; word < words; word++)
                    dst_scales[word * TILE + r] = scales[(row * blocks + b) * words + word];
            }
        }
}

/* Rows ids[0..count) of a packed matrix, de-quantised to fp32 [count, K] (embedding lookup). */
void qb_rows(const uint8_t *packed, const uint16_t *packed_scales, int bits, const int64_t *ids,
             int64_t count, int64_t k, float *out) {
    const int64_t blocks = k / BLOCK;
    for (int64_t i = 0; i < count; i++) {
        const int64_t tile = ids[i] / TILE, r = ids[i] % TILE;
        for (int64_t b = 0; b < blocks; b++) {
            const uint8_t *block = packed + (tile * blocks + b) * block_bytes(bits);
            float d, m;
            block_scales(packed_scales + (tile * blocks + b) * block_words(bits), r, bits, &d, &m);
            for (int64_t j = 0; j < BLOCK; j++)
                out[i * k + b * BLOCK + j] = (float)code_at(block, r, j, bits) * d + m;
        }
    }
}

int qb_activations_alloc_rows(Activations *rows, int64_t count, int64_t k) {
    const size_t n = (size_t)count, sums = (size_t)(k / BLOCK + 1);
    int16_t *values = malloc(sizeof(int16_t) * n * (size_t)k);
    int8_t *high = malloc(n * (size_t)k), *low = malloc(n * (size_t)k);
    int32_t *block_sums = malloc(sizeof(int32_t) * n * sums);
    if (!values || !high || !low || !block_sums) {
        free(values); free(high); free(low); free(block_sums);
        return -1;
    }
    for (int64_t i = 0; i < count; i++)
        rows[i] = (Activations){values + i * k, high + i * k, low + i * k, block_sums + (size_t)i * sums, 0.0f, k};
    return 0;
}

void qb_activations_free_rows(Activations *rows) { /* row 0 holds each block's start */
    free(rows->values); free(rows->high); free(rows->low); free(rows->block_sums);
}

void qb_quantize(const float *x, int64_t k, int bits, Activations *a) {
    (void)bits; /* both widths take the same split activations */
    float amax = 0.0f;
    int64_t i = 0;
#if QB_VNNI /* the same numbers as the loops below, 16 at a time (a decode step quantises
             * every row four times per layer) */
    __m512 top = _mm512_setzero_ps();
    for (; i + 16 <= k; i += 16) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    amax = _mm512_reduce_max_ps(top);
#endif
    for (; i < k; i++) amax = fmaxf(amax, fabsf(x[i]));
    a->scale = amax / 16383.0f;
    const float inverse = a->scale > 0.0f ? 1.0f / a->scale : 0.0f;
    i = 0;
#if QB_VNNI
    const __m512 scale_by = _mm512_set1_ps(inverse);
    for (; i + 32 <= k && k % BLOCK == 0; i += 32) { /* a block: rounded to nearest even, as lrintf */
        const __m512i first = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), scale_by));
        const __m512i second = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i + 16), scale_by));
        const __m512i values = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(first)), _mm512_cvtepi32_epi16(second), 1);
        _mm512_storeu_si512(a->values + i, values);
        _mm256_storeu_si256((__m256i *)(void *)(a->high + i), _mm512_cvtepi16_epi8(_mm512_srai_epi16(values, 7)));
        _mm256_storeu_si256((__m256i *)(void *)(a->low + i), _mm512_cvtepi16_epi8(_mm512_and_si512(values, _mm512_set1_epi16(127))));
        a->block_sums[i / BLOCK] = _mm512_reduce_add_epi32(_mm512_add_epi32(first, second));
    }
#endif
    for (int64_t j = i; j < k; j++) {
        const int16_t value = (int16_t)lrintf(x[j] * inverse);
        a->values[j] = value;
        a->high[j] = (int8_t)(value >> 7); /* arithmetic shift: floor division */
        a->low[j] = (int8_t)(value & 127);
    }
    for (int64_t b = i / BLOCK; b < k / BLOCK; b++) {
        int32_t total = 0;
        for (int64_t j = 0; j < BLOCK; j++) total += a->values[b * BLOCK + j];
        a->block_sums[b] = total;
    }
}


/* One tile's 16 dot products with each of `rows` (<= ROWS_AT_ONCE) activation rows, in
 * units of each row's scale: sums[i][r] for activation row i and weight row r. */
static inline void tile_dot(const uint8_t *tile, const uint16_t *tile_scales, int bits,
                            const Activations *a, int rows, int64_t k, float sums[ROWS_AT_ONCE][TILE]) {
    const int64_t blocks = k / BLOCK, bytes = block_bytes(bits), words = block_words(bits);
#if QB_VNNI
    __m512 acc[ROWS_AT_ONCE];
    for (int i = 0; i < ROWS_AT_ONCE; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *block = tile + b * bytes;
        for (int64_t line = 0; line < bytes; line += 64) {
            _mm_prefetch((const char *)block + PREFETCH_BLOCKS * bytes + line, _MM_HINT_T0);
            _mm_prefetch((const char *)block + L2_AHEAD_BYTES + line, _MM_HINT_T1);
        }
        __m512i w[QUADS];
        if (bits == 8) {
            for (int q = 0; q < QUADS; q++) w[q] = _mm512_loadu_si512(block + q * 64);
        } else {
            const __m512i nibble = _mm512_set1_epi8(15);
            for (int q = 0; q < 4; q++) {
                const __m512i both = _mm512_loadu_si512(block + q * 64);
                w[q] = _mm512_and_si512(both, nibble);
                w[q + 4] = _mm512_and_si512(_mm512_srli_epi16(both, 4), nibble);
            }
        }
        const uint16_t *scales = tile_scales + b * words;
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)scales));
        const __m512 m = bits == 4 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + TILE))) : _mm512_setzero_ps();
        for (int i = 0; i < rows; i++) {
            const int8_t *high = a[i].high + b * BLOCK, *low = a[i].low + b * BLOCK;
            /* four independent chains, so the multiply-adds overlap */
            __m512i h0 = _mm512_setzero_si512(), h1 = h0, l0 = h0, l1 = h0;
            /* a quad of activations as a 32-bit word, broadcast by the multiply-add */
            const quad_word *hq = (const quad_word *)(const void *)high, *lq = (const quad_word *)(const void *)low;
            for (int q = 0; q < QUADS; q += 2) {
                h0 = dpbusd_broadcast(h0, w[q], hq + q);
                h1 = dpbusd_broadcast(h1, w[q + 1], hq + q + 1);
                l0 = dpbusd_broadcast(l0, w[q], lq + q);
                l1 = dpbusd_broadcast(l1, w[q + 1], lq + q + 1);
            }
            __m512i dots = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(h0, h1), 7), _mm512_add_epi32(l0, l1));
            const int32_t block_sum = a[i].block_sums[b];
            if (bits == 8) dots = _mm512_sub_epi32(dots, _mm512_set1_epi32(128 * block_sum));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), d, acc[i]);
            if (bits == 4) acc[i] = _mm512_fmadd_ps(m, _mm512_set1_ps((float)block_sum), acc[i]);
        }
    }
    for (int i = 0; i < rows; i++) _mm512_storeu_ps(sums[i], acc[i]);
#else
    for (int i = 0; i < rows; i++)
        for (int64_t r = 0; r < TILE; r++) sums[i][r] = 0.0f;
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *block = tile + b * bytes;
        for (int64_t r = 0; r < TILE; r++) {
            float d, m;
            block_scales(tile_scales + b * words, r, bits, &d, &m);
            for (int i = 0; i < rows; i++) {
                int32_t dot = 0;
                for (int64_t j = 0; j < BLOCK; j++) dot += code_at(block, r, j, bits) * a[i].values[b * BLOCK + j];
                sums[i][r] = fmaf((float)dot, d, sums[i][r]);
                if (bits == 4) sums[i][r] = fmaf(m, (float)a[i].block_sums[b], sums[i][r]);
            }
        }
    }
#endif
}

/* Rows [first, first + count) of y for one tile, all activation rows, ROWS_AT_ONCE at a time. */
static void tile_rows(const uint8_t *packed, const uint16_t *packed_scales, int bits, const Activations *a,
                      int64_t batch, int64_t tile, int64_t k, float *y, int64_t y_stride) {
    const int64_t blocks = k / BLOCK;
    const uint8_t *codes = packed + tile * blocks * block_bytes(bits);
    const uint16_t *scales = packed_scales + tile * blocks * block_words(bits);
    for (int64_t first = 0; first < batch; first += ROWS_AT_ONCE) {
        const int rows = (int)(batch - first < ROWS_AT_ONCE ? batch - first : ROWS_AT_ONCE);
        float sums[ROWS_AT_ONCE][TILE];
        tile_dot(codes, scales, bits, a + first, rows, k, sums);
        for (int i = 0; i < rows; i++) {
            float *out = y + (first + i) * y_stride + tile * TILE;
            for (int r = 0; r < TILE; r++) out[r] = sums[i][r] * a[first + i].scale;
        }
    }
}

void qb_rows_dot_batch(const uint8_t *packed, const uint16_t *packed_scales, int bits,
                       const Activations *a, int64_t batch, int64_t n, int64_t k, float *y,
                       int64_t y_stride) {
    const int amx = qb_amx_takes(bits, a, batch);
    if (amx) qb_amx_begin(batch);
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n / TILE; tile++) {
        if (amx)
            qb_amx_tile_rows(packed, packed_scales, a, batch, tile, k, y, y_stride);
        else
            tile_rows(packed, packed_scales, bits, a, batch, tile, k, y, y_stride);
    }
    if (amx) qb_amx_end();
}

/* y [M, N] = x [M, K] @ W.T for a packed W. Returns 0, or -1 when scratch memory cannot
 * be had. N % TILE == 0 and K % BLOCK == 0 (checked by the caller). */
int qb_linear(const uint8_t *packed, const uint16_t *packed_scales, int bits, const float *x,
              float *y, int64_t m, int64_t n, int64_t k, int threads) {
    Activations *rows = calloc((size_t)m, sizeof(Activations));
    int failed = rows == NULL || qb_activations_alloc_rows(rows, m, k) != 0;
    for (int64_t row = 0; row < m && !failed; row++) qb_quantize(x + row * k, k, bits, rows + row);
#pragma omp parallel num_threads(threads) if (!failed)
    if (!failed) qb_rows_dot_batch(packed, packed_scales, bits, rows, m, n, k, y, n);
    if (rows && !failed) qb_activations_free_rows(rows);
    free(rows);
    return failed ? -1 : 0;
}
