/* The decode step's attention over the bf16 KV cache, in C: one new token's query heads of a
 * KV head against every cached key, four keys at a time (prompt_attention.c uses it too
 * where the CPU lacks bf16 dot products).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"

/* In place: e^(x - max) / sum, for one head's attention scores. */
static void softmax(float *scores, int64_t n) {
    float top = -INFINITY, sum = 0.0f;
    int64_t i = 0;
#if QB_VNNI
    __m512 highest = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= n; i += 16) highest = _mm512_max_ps(highest, _mm512_loadu_ps(scores + i));
    top = _mm512_reduce_max_ps(highest);
#endif
    for (; i < n; i++) top = fmaxf(top, scores[i]);
    i = 0;
#if QB_VNNI
    __m512 total = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(scores + i), _mm512_set1_ps(top)));
        _mm512_storeu_ps(scores + i, e);
        total = _mm512_add_ps(total, e);
    }
    sum = _mm512_reduce_add_ps(total);
#endif
    for (; i < n; i++) {
        scores[i] = expf(scores[i] - top);
        sum += scores[i];
    }
    const float inverse = 1.0f / sum;
    for (int64_t j = 0; j < n; j++) scores[j] *= inverse;
}

static inline float bf16_to_float(bf16 value) {
    const uint32_t bits = (uint32_t)value << 16;
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

#if QB_VNNI
/* 16 bf16 values widened to fp32. */
static inline __m512 load_bf16(const bf16 *at) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)at)), 16));
}
#endif

static float dot(const float *a, const bf16 *b, int64_t n) {
    int64_t i = 0;
    float sum = 0.0f;
#if QB_VNNI
    __m512 acc = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), load_bf16(b + i), acc);
    sum = _mm512_reduce_add_ps(acc);
#endif
    for (; i < n; i++) sum += a[i] * bf16_to_float(b[i]);
    return sum;
}

#if QB_VNNI
/* The sums of a, b, c and d's lanes, as [sum a, sum b, sum c, sum d]. */
static inline __m128 sum_four(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    const __m512 all = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(all), _mm512_extractf32x8_ps(all, 1));
    return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

#define HEADS_AT_ONCE 2 /* query heads sharing each widened key and value row */

/* Scores of n (<= HEADS_AT_ONCE) query heads against keys 0, 1, 2, ... four keys at a time
 * (one horizontal sum per four keys), each key row widened once for all n; returns how many
 * keys were scored (a multiple of 4). Head h's sums are those it would get alone. */
static inline __attribute__((always_inline)) int64_t scores_by_four(
    const float *queries, int n, const bf16 *keys, int64_t length, int64_t d, float *scores, int64_t stride) {
    __m512 q[HEADS_AT_ONCE][16];
    for (int h = 0; h < n; h++)
        for (int64_t j = 0; j < d / 16; j++) q[h][j] = _mm512_loadu_ps(queries + h * d + 16 * j);
    int64_t t = 0;
    for (; t + 4 <= length; t += 4) {
        __m512 acc[HEADS_AT_ONCE][4];
        for (int u = 0; u < 4; u++) {
            const bf16 *key = keys + (t + u) * d;
            __m512 k = load_bf16(key);
            for (int h = 0; h < n; h++) acc[h][u] = _mm512_mul_ps(q[h][0], k);
            for (int64_t j = 1; j < d / 16; j++) {
                k = load_bf16(key + 16 * j);
                for (int h = 0; h < n; h++) acc[h][u] = _mm512_fmadd_ps(q[h][j], k, acc[h][u]);
            }
        }
        for (int h = 0; h < n; h++) _mm_storeu_ps(scores + h * stride + t, sum_four(acc[h][0], acc[h][1], acc[h][2], acc[h][3]));
    }
    return t;
}

/* out[h] = sum over t of weights[h][t] * values[t] for n (<= HEADS_AT_ONCE) heads, each value
 * row widened once for all n; a head's output stays in registers over all positions. */
static inline __attribute__((always_inline)) void weighted_values(
    const float *weights, int n, const bf16 *values, int64_t length, int64_t d, int64_t stride, float *out) {
    __m512 acc[HEADS_AT_ONCE][16];
    for (int h = 0; h < n; h++)
        for (int64_t j = 0; j < d / 16; j++) acc[h][j] = _mm512_setzero_ps();
    for (int64_t t = 0; t < length; t++) {
        __m512 p[HEADS_AT_ONCE];
        for (int h = 0; h < n; h++) p[h] = _mm512_set1_ps(weights[h * stride + t]);
        for (int64_t j = 0; j < d / 16; j++) {
            const __m512 v = load_bf16(values + t * d + 16 * j);
            for (int h = 0; h < n; h++) acc[h][j] = _mm512_fmadd_ps(p[h], v, acc[h][j]);
        }
    }
    for (int h = 0; h < n; h++)
        for (int64_t j = 0; j < d / 16; j++) _mm512_storeu_ps(out + h * d + 16 * j, acc[h][j]);
}
#endif

void qb_attend_group(const float *queries, const bf16 *keys, const bf16 *values, int64_t length,
                     int64_t d, int64_t group, float *scores, float *out) {
#if QB_VNNI
    if (d % 16 == 0 && d <= 256) {
        for (int64_t g = 0; g < group; g += HEADS_AT_ONCE) {
            const int n = group - g >= HEADS_AT_ONCE ? HEADS_AT_ONCE : 1; /* HEADS_AT_ONCE is 2 */
            const int64_t done = n == HEADS_AT_ONCE
                ? scores_by_four(queries + g * d, HEADS_AT_ONCE, keys, length, d, scores + g * length, length)
                : scores_by_four(queries + g * d, 1, keys, length, d, scores + g * length, length);
            for (int h = 0; h < n; h++)
                for (int64_t t = done; t < length; t++)
                    scores[(g + h) * length + t] = dot(queries + (g + h) * d, keys + t * d, d);
        }
        for (int64_t g = 0; g < group; g++) softmax(scores + g * length, length);
        for (int64_t g = 0; g < group; g += HEADS_AT_ONCE) {
            if (group - g >= HEADS_AT_ONCE)
                weighted_values(scores + g * length, HEADS_AT_ONCE, values, length, d, length, out + g * d);
            else
                weighted_values(scores + g * length, 1, values, length, d, length, out + g * d);
        }
        return;
    }
#endif
    for (int64_t g = 0; g < group; g++)
        for (int64_t t = 0; t < length; t++) scores[g * length + t] = dot(queries + g * d, keys + t * d, d);
    for (int64_t g = 0; g < group; g++) softmax(scores + g * length, length);
    memset(out, 0, sizeof(float) * (size_t)(group * d));
    for (int64_t t = 0; t < length; t++)
        for (int64_t g = 0; g < group; g++) {
            const float p = scores[g * length + t];
            for (int64_t i = 0; i < d; i++) out[g * d + i] += p * bf16_to_float(values[t * d + i]);
        }
}
