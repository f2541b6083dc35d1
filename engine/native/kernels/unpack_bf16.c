/* A packed matrix de-quantised to bf16 [N, K] row-major, for a prompt's dense matmul (torch's
 * bf16 GEMM beats the packed kernel once a prompt has a few rows).
 *
 * Every prompt pass de-quantises each layer just before its matmul (the bf16 copy is twice
 * the packed bytes, so it is never kept). On 2 Zen 5 cores this took 175 ms of a 100-token
 * prompt's 570 ms pass: a libm call per row's scale and a gather per row's codes. Here a
 * block's 16 scales convert in one instruction, and a block's rows come out of a transpose
 * of its 8 (8-bit) or 4 (4-bit) registers: 2.2-2.5x faster for both. The values are the
 * same to the bit: code * d + m in fp32 (one rounding), then rounded to bf16.
 */
#include <stdint.h>

#include "packed_layout.h"
#include "packed_linear.h"

#if QB_VNNI && defined(__AVX512BF16__)
#include <immintrin.h>

/* 32 codes (int16) -> bf16 (code * d + m) at dst. */
static inline void store_codes(__m512i codes, float d, float m, uint16_t *dst) {
    const __m512 dv = _mm512_set1_ps(d), mv = _mm512_set1_ps(m);
    const __m512 first = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(codes))), dv, mv);
    const __m512 second = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(codes, 1))), dv, mv);
    _mm512_storeu_si512(dst, (__m512i)_mm512_cvtne2ps_pbh(second, first));
}

/* A block's registers hold one 4-byte word of all 16 rows each (word w of row r is dword r
 * of register w): rounds of two-register permutes gather each row's words.
 * words_of_rows: registers w and w + 1 -> words w, w + 1 of rows 8h..8h + 7 side by side. */
static inline __m512i words_of_rows(__m512i first, __m512i second, int h) {
    const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    return _mm512_permutex2var_epi32(first, h ? high : low, second);
}

/* Two such pairs (words 0-1 and 2-3 of rows 8h..8h + 7) -> words 0-3 of rows
 * 8h + 4g..8h + 4g + 3, a row per 128 bits. */
static inline __m512i four_words_of_rows(__m512i first, __m512i second, int g) {
    const __m512i low = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i high = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    return _mm512_permutex2var_epi64(first, g ? high : low, second);
}

/* 128-bit lane i of a register. */
static inline __m128i lane_of(__m512i v, int i) {
    switch (i) {
    case 0: return _mm512_extracti32x4_epi32(v, 0);
    case 1: return _mm512_extracti32x4_epi32(v, 1);
    case 2: return _mm512_extracti32x4_epi32(v, 2);
    default: return _mm512_extracti32x4_epi32(v, 3);
    }
}

/* Four registers of a block (a 4-bit block, or half an 8-bit one): rows[j] holds rows
 * 4j..4j + 3, their four words (16 bytes) each. */
static inline void transpose_words(const uint8_t *block, __m512i rows[4]) {
    __m512i words[4], pairs[2][2];
    for (int w = 0; w < 4; w++) words[w] = _mm512_loadu_si512(block + w * 64);
    for (int p = 0; p < 2; p++)
        for (int h = 0; h < 2; h++) pairs[p][h] = words_of_rows(words[2 * p], words[2 * p + 1], h);
    for (int h = 0; h < 2; h++)
        for (int g = 0; g < 2; g++) rows[2 * h + g] = four_words_of_rows(pairs[0][h], pairs[1][h], g);
}

/* An 8-bit block (8 registers, one quad each): rows[i] holds rows 2i (low half) and 2i + 1,
 * 32 codes each: each half's rows, then a row's quads 0-3 beside its quads 4-7. */
static inline void transpose_8bit(const uint8_t *block, __m512i rows[TILE / 2]) {
    __m512i first[4], second[4];
    transpose_words(block, first);
    transpose_words(block + 4 * 64, second);
    const __m512i row_of[2] = {_mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15)};
    for (int j = 0; j < 4; j++)
        for (int o = 0; o < 2; o++) rows[2 * j + o] = _mm512_permutex2var_epi64(first[j], row_of[o], second[j]);
}

/* One tile's block -> its 16 rows' 32 bf16 values each, rows k apart from dst. */
static void unpack_block(const uint8_t *block, const uint16_t *scales, int bits, int64_t k, uint16_t *dst) {
    float ds[TILE], ms[TILE];
    _mm512_storeu_ps(ds, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)scales)));
    _mm512_storeu_ps(ms, bits == 4 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + TILE))) : _mm512_setzero_ps());
    if (bits == 8) {
        __m512i rows[TILE / 2];
        transpose_8bit(block, rows);
        const __m512i offset = _mm512_set1_epi16(128); /* codes are stored as code + 128 */
        for (int i = 0; i < TILE / 2; i++) {
            const __m512i low = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(rows[i]));
            const __m512i high = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(rows[i], 1));
            store_codes(_mm512_sub_epi16(low, offset), ds[2 * i], ms[2 * i], dst + 2 * i * k);
            store_codes(_mm512_sub_epi16(high, offset), ds[2 * i + 1], ms[2 * i + 1], dst + (2 * i + 1) * k);
        }
        return;
    }
    __m512i rows[4];
    transpose_words(block, rows);
    const __m128i nibble = _mm_set1_epi8(15);
    for (int64_t r = 0; r < TILE; r++) { /* a row's 16 bytes: low nibbles quads 0-3, high 4-7 */
        const __m128i four = lane_of(rows[r / 4], (int)(r % 4));
        const __m512i codes = _mm512_cvtepu8_epi16(
            _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(four, 4), nibble), _mm_and_si128(four, nibble)));
        store_codes(codes, ds[r], ms[r], dst + r * k);
    }
}
#else
/* One tile's block -> its 16 rows' 32 bf16 values each, rows k apart from dst. */
static void unpack_block(const uint8_t *block, const uint16_t *scales, int bits, int64_t k, uint16_t *dst) {
    for (int64_t r = 0; r < TILE; r++) {
        float d, m;
        block_scales(scales, r, bits, &d, &m);
        for (int64_t j = 0; j < BLOCK; j++)
            dst[r * k + j] = float_to_bf16_rounded((float)code_at(block, r, j, bits) * d + m);
    }
}
#endif

/* The whole packed matrix de-quantised to bf16 [N, K] row-major into out. */
void qb_unpack_bf16(const uint8_t *packed, const uint16_t *packed_scales, int bits, int64_t n,
                    int64_t k, uint16_t *out, int threads) {
    const int64_t blocks = k / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t tile = 0; tile < n / TILE; tile++)
        for (int64_t b = 0; b < blocks; b++)
            unpack_block(packed + (tile * blocks + b) * block_bytes(bits),
                         packed_scales + (tile * blocks + b) * block_words(bits), bits, k,
                         out + tile * TILE * k + b * BLOCK);
}
