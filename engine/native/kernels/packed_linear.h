/* What the other kernels (decode_step.c, amx_rows.c, prompt_linear.c) use of packed_linear.c. */
#ifndef QWENBOT_PACKED_LINEAR_H
#define QWENBOT_PACKED_LINEAR_H

#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__) && !defined(QB_PORTABLE)
#define QB_VNNI 1
#else
#define QB_VNNI 0
#endif

/* AMX int8 tiles (Xeon 4th generation on): a batch's rows in one tile multiply (amx_rows.c) */
#if QB_VNNI && defined(__AMX_TILE__) && defined(__AMX_INT8__)
#define QB_AMX 1
#else
#define QB_AMX 0
#endif

#if QB_VNNI
#include <immintrin.h>
#endif

typedef int32_t __attribute__((may_alias)) quad_word; /* 4 activation bytes read as one */

#if QB_VNNI
/* acc + w . (the 4 activation bytes at p in every lane), the bytes read by the multiply-add
 * itself as an embedded broadcast. In asm because gcc loads the broadcast with its own
 * instruction: that made a batch of 4-8 rows' linears 1.15-1.2x slower on Zen 5. */
static inline __m512i dpbusd_broadcast(__m512i acc, __m512i w, const quad_word *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*p));
    return acc;
}
#endif

/* fp32 -> bf16, rounded to nearest even as torch does (NaN as torch writes it). */
static inline uint16_t float_to_bf16_rounded(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffff) > 0x7f800000) return 0x7fc0;
    return (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

/* One row of activations, quantised for the kernel. */
typedef struct {
    int16_t *values;  /* [K]: x / scale, |value| <= 16383 (15 bits) */
    int8_t *high;     /* [K]: value = 128 * high + low, for vpdpbusd */
    int8_t *low;      /* [K]: in [0, 127] */
    int32_t *block_sums; /* [K / 32]: the sum of each block's values */
    float scale;
    int64_t stride; /* bytes from this row's high (and low) parts to the next row's */
} Activations;

/* Room for `count` rows of up to k values each, each part of all rows in one block (rows k
 * bytes apart: a tile load takes them at once); returns 0, or -1 when memory cannot be had. */
int qb_activations_alloc_rows(Activations *rows, int64_t count, int64_t k);
void qb_activations_free_rows(Activations *rows);

/* Quantise x [K] into a (the 4-bit path needs the split parts too). */
void qb_quantize(const float *x, int64_t k, int bits, Activations *a);

/* y [batch, N] (rows y_stride apart) = W @ x for each of `batch` rows of activations a[0..batch), for a packed
 * W of 8 or 4 bits. The weight groups are shared out among the threads of the enclosing
 * OpenMP parallel region (an orphaned `omp for`, with its closing barrier); each group
 * meets every row while it sits in L1, so a batch reads the weights once, and a row's sums
 * do not depend on the batch. */
void qb_rows_dot_batch(const uint8_t *packed, const uint16_t *packed_scales, int bits,
                       const Activations *a, int64_t batch, int64_t n, int64_t k, float *y,
                       int64_t y_stride);

/* AMX (amx_rows.c): whether this batch takes it; then, on each thread of the region, the
 * tile set-up, the tiles (as tile_rows, the same sums to the bit), and the release. */
int qb_amx_granted(void); /* Linux lent this process the tile registers */
int qb_amx_takes(int bits, const Activations *a, int64_t batch);
void qb_amx_begin(int64_t batch);
void qb_amx_tile_rows(const uint8_t *packed, const uint16_t *packed_scales, const Activations *a,
                      int64_t batch, int64_t tile, int64_t k, float *y, int64_t y_stride);
void qb_amx_end(void);

#endif
