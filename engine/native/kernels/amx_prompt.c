/* The prompt kernel's AMX path (see prompt_linear.c): a group of 16 activation rows times a
 * tile of 16 weight rows, a block at a time, in one int8 tile multiply (two for 15-bit
 * activations); the sums are then scaled as on the other paths, in the same order. */
#include <stdint.h>
#include <string.h>

#include "prompt_linear.h"

#if QB_AMX
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} PromptTileConfig;

/* Tiles: 0 the sums (16 x 16 int32), 1 the activations (16 rows x a block), 2 the weights
 * (8 quads x 16 rows x 4 bytes: the packed block as it is); 3 and 4 the low parts' sums
 * and activations when precise. */
void qb_prompt_amx_configure(void) {
    PromptTileConfig config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    config.rows[0] = GROUP; config.bytes_per_row[0] = TILE * 4;
    config.rows[1] = GROUP; config.bytes_per_row[1] = BLOCK;
    config.rows[2] = QUADS; config.bytes_per_row[2] = TILE * 4;
    config.rows[3] = GROUP; config.bytes_per_row[3] = TILE * 4;
    config.rows[4] = GROUP; config.bytes_per_row[4] = BLOCK;
    __asm__ volatile("" : : "r"(&config) : "memory"); /* see qb_amx_begin */
    _tile_loadconfig(&config);
}

/* The AMX path: a whole group of 16 rows per tile multiply. */
void qb_prompt_amx_group(const uint8_t *codes, const uint16_t *scales, int bits, const BlockActivations *a,
                         int64_t first, int64_t rows, int64_t k, float out[GROUP][TILE]) {
    const int64_t blocks = k / BLOCK, bytes = block_bytes(bits), words = block_words(bits);
    int32_t sums[GROUP][TILE], low_sums[GROUP][TILE];
    uint8_t unpacked[QUADS * 64]; /* a 4-bit block as bytes, in the tile's layout */
    __m512 acc[GROUP];
    for (int i = 0; i < GROUP; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *block = codes + b * bytes;
        if (bits == 4) {
            __m512i w[QUADS];
            load_block(block, bits, w);
            for (int q = 0; q < QUADS; q++) _mm512_storeu_si512(unpacked + q * 64, w[q]);
            block = unpacked;
        }
        _tile_zero(0);
        _tile_loadd(1, a->codes + first * k + b * BLOCK, k);
        _tile_loadd(2, block, TILE * 4);
        _tile_dpbsud(0, 1, 2);
        _tile_stored(0, sums, TILE * 4);
        if (a->low) {
            _tile_zero(3);
            _tile_loadd(4, a->low + first * k + b * BLOCK, k);
            _tile_dpbsud(3, 4, 2);
            _tile_stored(3, low_sums, TILE * 4);
        }
        const uint16_t *s = scales + b * words;
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)s));
        const __m512 m = bits == 4 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + TILE))) : d;
        for (int i = 0; i < GROUP; i++) {
            __m512i dots = _mm512_loadu_si512(sums[i]);
            if (a->low) dots = _mm512_add_epi32(_mm512_slli_epi32(dots, 7), _mm512_loadu_si512(low_sums[i]));
            acc[i] = scale_block(acc[i], dots, d, m, bits, a, (first + i) * blocks + b);
        }
    }
    for (int64_t i = 0; i < rows; i++) _mm512_storeu_ps(out[i], acc[i]);
}
#endif
