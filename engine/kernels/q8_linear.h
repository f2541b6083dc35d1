/* What decode_step.c uses of q8_linear.c. */
#ifndef QWENBOT_Q8_LINEAR_H
#define QWENBOT_Q8_LINEAR_H

#include <stdint.h>

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__) && !defined(QB_PORTABLE)
#define QB_VNNI 1
#else
#define QB_VNNI 0
#endif

/* One row of activations -> int16 values with one scale (returned). */
float qb_quantize_row(const float *x, int64_t k, int16_t *values);

/* y [N] = scale * (W @ values) for a packed W, its rows shared out among the threads of the
 * enclosing OpenMP parallel region (an orphaned `omp for`, with its closing barrier). */
void qb_rows_dot(const int8_t *packed, const uint16_t *packed_scales, const int16_t *values,
                 float scale, int64_t n, int64_t k, float *y);

#endif
