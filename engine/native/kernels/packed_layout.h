/* The packed weight layout (see packed_linear.c): tiles of 16 rows, blocks of 32 weights. */
#ifndef QWENBOT_PACKED_LAYOUT_H
#define QWENBOT_PACKED_LAYOUT_H

#include <math.h>
#include <stdint.h>

#define TILE 16  /* rows interleaved together: one per AVX-512 lane */
#define BLOCK 32 /* weights per scale */
#define QUADS (BLOCK / 4)

/* Bytes of one tile's block of codes. */
static inline int64_t block_bytes(int bits) { return TILE * BLOCK * bits / 8; }

/* fp16 words of one tile's block of scales: 16 d's, then for 4 bits 16 m's. */
static inline int64_t block_words(int bits) { return bits == 4 ? 2 * TILE : TILE; }

/* Where (row r of a tile, quad q, lane) sits in a tile's block, and for 4 bits in which
 * nibble (quads 4-7 in the high ones). */
static inline int64_t code_offset(int64_t r, int64_t q, int64_t lane, int bits) {
    return ((bits == 8 ? q : q % 4) * TILE + r) * 4 + lane;
}

/* An fp16 value as fp32 (exact). */
static inline float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    float value;
    if (exponent == 0) value = ldexpf((float)mantissa, -24); /* zero or subnormal */
    else if (exponent == 31) value = mantissa ? NAN : INFINITY;
    else value = ldexpf((float)(mantissa | 0x400), (int)exponent - 25);
    return sign ? -value : value;
}

/* The code of weight j (0..BLOCK-1) of row r in a tile's block. */
static inline int32_t code_at(const uint8_t *block, int64_t r, int64_t j, int bits) {
    const int64_t q = j / 4;
    const uint8_t byte = block[code_offset(r, q, j % 4, bits)];
    if (bits == 8) return (int32_t)byte - 128;
    return q < 4 ? byte & 15 : byte >> 4;
}

/* d and m of row r in a tile's block of scales (m = 0 for 8 bits). */
static inline void block_scales(const uint16_t *scales, int64_t r, int bits, float *d, float *m) {
    *d = half_to_float(scales[r]);
    *m = bits == 4 ? half_to_float(scales[TILE + r]) : 0.0f;
}

#endif
