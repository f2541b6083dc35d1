/* A prompt chunk's causal attention over the bf16 KV cache, in C.
 *
 * A chunk is many queries over the same keys: a matrix product. Scoring one query at a time
 * in fp32 (the decode step's kernel) took 12-12.6 ms a layer on 2 cores (Xeon, Zen 5) for
 * 133 new tokens over a 1,459-token history, most of a long chat's next-turn TTFT; this takes
 * 8.5 ms on the Xeon and 6.4 on Zen 5. Here 32 query rows (the chunk's positions
 * times the query heads of one KV head) form a tile, and both products use bf16 pair dot
 * products summed in fp32 (vdpbf16ps: twice the multiply rate of fp32 FMAs on Zen 5; a Xeon
 * with AMX has half, and takes torch's SDPA instead, see model.py):
 * - scores: the tile's queries, rounded to bf16 and packed in pairs, against each key's
 *   pairs read straight from the cache;
 * - softmax over a row's whole history in fp32 (no online rescaling, so a row's result does
 *   not depend on how its keys are blocked or which chunk brought it);
 * - the probabilities, rounded to bf16 as torch's bf16 attention rounds them, weight the
 *   values, packed two keys at a time once per chunk and KV head.
 * Each row's numbers depend only on its query and the cache, never on the rest of the
 * batch. CPUs without AVX512-BF16 run the decode step's kernel for each query instead.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"

/* Each (position, KV head) pair as its decode step computes it: queries in fp32. */
static int per_query(const float *queries, const bf16 *keys, const bf16 *values, int64_t heads,
                     int64_t kv_heads, int64_t d, int64_t capacity, int64_t start, int64_t count,
                     float *out, int threads) {
    const int64_t group = heads / kv_heads, longest = start + count;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *scores = malloc(sizeof(float) * (size_t)(group * longest));
        if (!scores) {
#pragma omp atomic write
            failed = 1;
        }
        /* later positions attend further: small dynamic chunks keep the threads even */
#pragma omp for schedule(dynamic, 4) collapse(2)
        for (int64_t t = 0; t < count; t++)
            for (int64_t kv = 0; kv < kv_heads; kv++)
                if (scores)
                    qb_attend_group(queries + (t * heads + kv * group) * d, keys + kv * capacity * d,
                                    values + kv * capacity * d, start + t + 1, d, group, scores,
                                    out + (t * heads + kv * group) * d);
        free(scores);
    }
    return failed ? -1 : 0;
}

#if QB_BF16
#define LANES 32     /* query rows in a tile: two vectors */
#define KEY_BLOCK 8  /* keys scored at once (16 accumulators) */
#define DIM_BLOCK 8  /* output dimensions summed at once (16 accumulators) */
#define MAX_DIM 256  /* the tile's packed queries live on the stack */

typedef struct {
    const float *queries; /* [count, heads, d] fp32 */
    const bf16 *keys, *values; /* [kv_heads, capacity, d] */
    int64_t heads, group, d, capacity, start, count;
    int64_t pairs; /* key pairs of the whole chunk's history */
    bf16 *packed; /* values by head: [d / DIM_BLOCK][pairs][DIM_BLOCK][2 keys] */
    float *out; /* [count, heads * d] */
} Chunk;

/* One 32-bit pair broadcast to every lane. */
static inline __m512bh broadcast_pair(const bf16 *at) {
    int32_t bits;
    memcpy(&bits, at, sizeof bits);
    return (__m512bh)_mm512_set1_epi32(bits);
}

static inline __m512bh load_pairs(const bf16 *at) { return (__m512bh)_mm512_loadu_si512(at); }

/* Keys 2p and 2p + 1 of head h interleaved, DIM_BLOCK dimensions at a time (the last odd
 * key pairs with zeros). */
static void pack_value_pair(const Chunk *c, int64_t h, int64_t p) {
    const int64_t d = c->d, length = c->start + c->count;
    const bf16 *first = c->values + (h * c->capacity + 2 * p) * d;
    const bf16 *second = 2 * p + 1 < length ? first + d : NULL;
    bf16 *head = c->packed + h * d * c->pairs * 2;
    for (int64_t b = 0; b < d / DIM_BLOCK; b++) {
        bf16 *to = head + (b * c->pairs + p) * DIM_BLOCK * 2;
        for (int64_t j = 0; j < DIM_BLOCK; j++) {
            to[2 * j] = first[b * DIM_BLOCK + j];
            to[2 * j + 1] = second ? second[b * DIM_BLOCK + j] : 0;
        }
    }
}

/* scores[u][lane] for `count` (<= KEY_BLOCK) keys: the tile's packed queries [d / 2][LANES][2]
 * against each key's dimension pairs. */
static inline __attribute__((always_inline)) void score_keys(const bf16 *queries, const bf16 *keys,
                                                             int64_t d, int count, float *scores) {
    __m512 acc[KEY_BLOCK][2];
    for (int u = 0; u < count; u++) acc[u][0] = acc[u][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < d / 2; k++) {
        const __m512bh low = load_pairs(queries + k * LANES * 2);
        const __m512bh high = load_pairs(queries + k * LANES * 2 + 32);
        for (int u = 0; u < count; u++) {
            const __m512bh key = broadcast_pair(keys + u * d + 2 * k);
            acc[u][0] = _mm512_dpbf16_ps(acc[u][0], low, key);
            acc[u][1] = _mm512_dpbf16_ps(acc[u][1], high, key);
        }
    }
    for (int u = 0; u < count; u++) {
        _mm512_storeu_ps(scores + u * LANES, acc[u][0]);
        _mm512_storeu_ps(scores + u * LANES + 16, acc[u][1]);
    }
}

/* Lanes whose position comes before key n: they must not see it. */
static inline __mmask16 hidden_from(__m512i positions, int64_t n) {
    return _mm512_cmplt_epi32_mask(positions, _mm512_set1_epi32((int32_t)n));
}

/* The tile's rows: softmax of scores [length][LANES] -> bf16 probabilities in key pairs
 * [pairs][LANES][2]; returns each lane's 1 / (sum of its rounded probabilities). */
static void probabilities(const float *scores, const __m512i positions[2], int64_t first_position,
                          int64_t length, bf16 *probs, __m512 inverse[2]) {
    for (int v = 0; v < 2; v++) {
        __m512 top = _mm512_set1_ps(-INFINITY);
        for (int64_t n = 0; n < length; n++) {
            const __mmask16 seen = n > first_position ? ~hidden_from(positions[v], n) : 0xffff;
            top = _mm512_mask_max_ps(top, seen, top, _mm512_loadu_ps(scores + n * LANES + 16 * v));
        }
        __m512 sum = _mm512_setzero_ps();
        for (int64_t p = 0; 2 * p < length; p++) {
            __m512i pair = _mm512_setzero_si512();
            for (int u = 0; u < 2 && 2 * p + u < length; u++) {
                const int64_t n = 2 * p + u;
                const __mmask16 seen = n > first_position ? ~hidden_from(positions[v], n) : 0xffff;
                const __m512 e = _mm512_maskz_mov_ps(
                    seen, exp512(_mm512_sub_ps(_mm512_loadu_ps(scores + n * LANES + 16 * v), top)));
                const __m512i rounded = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(e));
                sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(rounded, 16)));
                pair = _mm512_or_si512(pair, u ? _mm512_slli_epi32(rounded, 16) : rounded);
            }
            _mm512_storeu_si512(probs + (p * LANES + 16 * v) * 2, pair);
        }
        inverse[v] = _mm512_div_ps(_mm512_set1_ps(1.0f), sum);
    }
}

/* One tile: rows first_row .. first_row + 31 of head h's (position, query head) rows. */
static void attend_tile(const Chunk *c, int64_t h, int64_t first_row, float *scores, bf16 *probs) {
    const int64_t d = c->d, rows = c->count * c->group;
    const int64_t lanes = rows - first_row < LANES ? rows - first_row : LANES;
    bf16 queries[MAX_DIM / 2 * LANES * 2]; /* [d / 2][LANES][2] */
    int32_t position[LANES];
    for (int64_t l = 0; l < LANES; l++) {
        const int64_t row = first_row + (l < lanes ? l : lanes - 1); /* padding repeats a row */
        const int64_t t = row / c->group, g = row % c->group;
        const float *q = c->queries + (t * c->heads + h * c->group + g) * d;
        position[l] = (int32_t)(c->start + t);
        for (int64_t i = 0; i < d; i++) queries[(i / 2 * LANES + l) * 2 + i % 2] = float_to_bf16_rounded(q[i]);
    }
    const int64_t first_position = position[0], length = position[LANES - 1] + 1;
    const __m512i positions[2] = {_mm512_loadu_si512(position), _mm512_loadu_si512(position + 16)};
    const bf16 *keys = c->keys + h * c->capacity * d;
    int64_t n = 0;
    for (; n + KEY_BLOCK <= length; n += KEY_BLOCK) score_keys(queries, keys + n * d, d, KEY_BLOCK, scores + n * LANES);
    for (; n < length; n++) score_keys(queries, keys + n * d, d, 1, scores + n * LANES);
    __m512 inverse[2];
    probabilities(scores, positions, first_position, length, probs, inverse);
    const bf16 *packed = c->packed + h * d * c->pairs * 2;
    for (int64_t b = 0; b < d / DIM_BLOCK; b++) {
        const bf16 *block = packed + b * c->pairs * DIM_BLOCK * 2;
        __m512 acc[DIM_BLOCK][2];
        for (int j = 0; j < DIM_BLOCK; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
        for (int64_t p = 0; 2 * p < length; p++) {
            const __m512bh low = load_pairs(probs + p * LANES * 2), high = load_pairs(probs + p * LANES * 2 + 32);
            for (int j = 0; j < DIM_BLOCK; j++) {
                const __m512bh value = broadcast_pair(block + (p * DIM_BLOCK + j) * 2);
                acc[j][0] = _mm512_dpbf16_ps(acc[j][0], low, value);
                acc[j][1] = _mm512_dpbf16_ps(acc[j][1], high, value);
            }
        }
        float result[DIM_BLOCK][LANES];
        for (int j = 0; j < DIM_BLOCK; j++) {
            _mm512_storeu_ps(result[j], _mm512_mul_ps(acc[j][0], inverse[0]));
            _mm512_storeu_ps(result[j] + 16, _mm512_mul_ps(acc[j][1], inverse[1]));
        }
        for (int64_t l = 0; l < lanes; l++) {
            const int64_t row = first_row + l, t = row / c->group, g = row % c->group;
            float *o = c->out + (t * c->heads + h * c->group + g) * d + b * DIM_BLOCK;
            for (int j = 0; j < DIM_BLOCK; j++) o[j] = result[j][l];
        }
    }
}

/* Every head's values packed, then its tiles shared out between the threads. */
static int tiled(const Chunk *chunk, int64_t kv_heads, int threads) {
    const int64_t longest = chunk->start + chunk->count;
    const int64_t tiles = (chunk->count * chunk->group + LANES - 1) / LANES;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t item = 0; item < kv_heads * chunk->pairs; item++)
            pack_value_pair(chunk, item / chunk->pairs, item % chunk->pairs);
        float *scores = malloc(sizeof(float) * (size_t)(longest * LANES));
        bf16 *probs = malloc(sizeof(bf16) * (size_t)(chunk->pairs * LANES * 2));
        if (!scores || !probs) {
#pragma omp atomic write
            failed = 1;
        }
        /* later tiles attend further: one tile at a time keeps the threads even */
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < kv_heads * tiles; item++)
            if (scores && probs) attend_tile(chunk, item / tiles, item % tiles * LANES, scores, probs);
        free(scores);
        free(probs);
    }
    return failed ? -1 : 0;
}
#endif

/* A prompt chunk's causal attention: queries [count, heads, d] (fp32, rotated, scaled) at
 * positions start..start + count - 1, over one layer's cache keys and values [kv_heads,
 * capacity, d] that already hold the chunk's own -> out [count, heads * d]. Returns 0, or -1
 * when scratch memory cannot be had. */
int qb_prompt_attention(const float *queries, const bf16 *keys, const bf16 *values, int64_t heads,
                        int64_t kv_heads, int64_t d, int64_t capacity, int64_t start, int64_t count,
                        float *out, int threads) {
#if QB_BF16
    if (d % DIM_BLOCK == 0 && d <= MAX_DIM) {
        const int64_t pairs = (start + count + 1) / 2;
        bf16 *packed = malloc(sizeof(bf16) * (size_t)(kv_heads * d * pairs * 2));
        if (!packed) return -1;
        const Chunk chunk = {queries, keys, values, heads, heads / kv_heads, d, capacity,
                             start, count, pairs, packed, out};
        const int status = tiled(&chunk, kv_heads, threads);
        free(packed);
        return status;
    }
#endif
    return per_query(queries, keys, values, heads, kv_heads, d, capacity, start, count, out, threads);
}

/* The same attention one query at a time on every CPU (benchmarks/prompt_attention.py sets
 * it beside the tiles). */
int qb_prompt_attention_per_query(const float *queries, const bf16 *keys, const bf16 *values,
                                  int64_t heads, int64_t kv_heads, int64_t d, int64_t capacity,
                                  int64_t start, int64_t count, float *out, int threads) {
    return per_query(queries, keys, values, heads, kv_heads, d, capacity, start, count, out, threads);
}
