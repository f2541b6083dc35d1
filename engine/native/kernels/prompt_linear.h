/* What amx_prompt.c shares with prompt_linear.c: the quantised activations and a block's
 * scaling, which every path must do in the same order. */
#ifndef QWENBOT_PROMPT_LINEAR_H
#define QWENBOT_PROMPT_LINEAR_H

#include <stdint.h>

#include "packed_layout.h"
#include "packed_linear.h"

#define GROUP 16 /* activation rows taken together: an AMX tile's rows; the buffer is padded to it */

/* Activations of all rows, quantised in blocks: row i's block b at codes + i * k + b * 32. */
typedef struct {
    int8_t *codes;  /* [rows, K]: the code, or its high part when precise */
    int8_t *low;    /* [rows, K]: the low part when precise, else NULL */
    float *scales;  /* [rows, K / 32]: da */
    int32_t *sums;  /* [rows, K / 32]: the sum of the block's codes */
    float *moments; /* [rows, K / 32]: da * sum (the 4-bit minimum's factor) */
} BlockActivations;

#if QB_VNNI
/* A block's weights in 8 registers: quad q of all 16 rows in register q (4-bit codes split). */
static inline void load_block(const uint8_t *block, int bits, __m512i w[QUADS]) {
    if (bits == 8) {
        for (int q = 0; q < QUADS; q++) w[q] = _mm512_loadu_si512(block + q * 64);
        return;
    }
    const __m512i nibble = _mm512_set1_epi8(15);
    for (int q = 0; q < 4; q++) {
        const __m512i both = _mm512_loadu_si512(block + q * 64);
        w[q] = _mm512_and_si512(both, nibble);
        w[q + 4] = _mm512_and_si512(_mm512_srli_epi16(both, 4), nibble);
    }
}

/* acc + a block's int32 sums of 16 weight rows with activation row `at`, scaled. */
static inline __m512 scale_block(__m512 acc, __m512i dots, __m512 d, __m512 m, int bits, const BlockActivations *a,
                                 int64_t at) {
    if (bits == 8) dots = _mm512_sub_epi32(dots, _mm512_set1_epi32(128 * a->sums[at]));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(_mm512_set1_ps(a->scales[at]), d), acc);
    if (bits == 4) acc = _mm512_fmadd_ps(m, _mm512_set1_ps(a->moments[at]), acc);
    return acc;
}
#endif

/* AMX (amx_prompt.c): each thread's tile set-up, then one tile of weight rows against a
 * group of 16 activation rows, `rows` of them kept; the caller releases the tiles. */
void qb_prompt_amx_configure(void);
void qb_prompt_amx_group(const uint8_t *codes, const uint16_t *scales, int bits, const BlockActivations *a,
                         int64_t first, int64_t rows, int64_t k, float out[GROUP][TILE]);

#endif
