/* Attention over a bf16 KV cache, shared by the decode step and prompt chunks. */
#ifndef QWENBOT_ATTENTION_H
#define QWENBOT_ATTENTION_H

#include <stdint.h>
#include <string.h>

#include "packed_linear.h"

#if QB_VNNI
#include <immintrin.h>
#endif

typedef uint16_t bf16; /* the top half of an fp32 */

/* bf16 pair dot products (vdpbf16ps): a prompt chunk's attention as tiled matrix products */
#if QB_VNNI && defined(__AVX512BF16__)
#define QB_BF16 1
#else
#define QB_BF16 0
#endif

#if QB_VNNI
/* e^x for 16 floats: Cephes' expf polynomial (about 1 ulp), scaled by 2^n with vscalefps. */
static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-88.3762626647949f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}
#endif

/* The `group` query heads that share one KV head, over its positions 0..length-1: each key
 * and value row is read once for the group. scores: [group][length] scratch. */
void qb_attend_group(const float *queries, const bf16 *keys, const bf16 *values, int64_t length,
                     int64_t d, int64_t group, float *scores, float *out);

/* A prompt chunk's causal attention over the cache (prompt_attention.c). */
int qb_prompt_attention(const float *queries, const bf16 *keys, const bf16 *values, int64_t heads,
                        int64_t kv_heads, int64_t d, int64_t capacity, int64_t start, int64_t count,
                        float *out, int threads);

#endif
