/* One decode step (one new token) through every layer of a Llama-family decoder, in C.
 *
 * In torch a decode step is ~30 small ops per layer around the four matmuls; each costs
 * 5-10 us because the matmuls evict the caches, ~8 ms per token on Qwen3-0.6B, a third of
 * the step. Here the whole step runs in one OpenMP parallel region: the matmuls
 * (packed_linear.c's kernel) and attention are split between the threads, the small vector
 * work between them is done by one thread, with a barrier after each part.
 * Arithmetic follows native_model.py: fp32 activations, RMSNorm with the weight pre-scaled
 * by sqrt(n), the attention scale folded into the queries, rotate-half rotary with a
 * sign-folded sin. The KV cache [layers, kv_heads, capacity, head_dim] is bf16: at 8 chats
 * reading it costs as much memory traffic as the weights in fp32, and a kept conversation
 * takes half the memory. Keys and values are rounded to nearest even when stored (as torch's
 * conversion does for prompts) and widened to fp32 as they are read.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "packed_linear.h"

#if QB_VNNI
#include <immintrin.h>
#endif

typedef struct {
    int64_t hidden, heads, kv_heads, head_dim, intermediate, layers, bits; /* bits: 8 or 4 */
    float hidden_floor, head_floor; /* n * eps of the hidden and per-head RMSNorms */
} DecoderShape;

typedef struct {
    const float *attn_norm, *qk_norm, *mlp_norm; /* qk_norm: [heads + kv_heads, D], or NULL */
    const uint8_t *qkv, *out, *gate_up, *down;   /* packed weights */
    const uint16_t *qkv_scales, *out_scales, *gate_up_scales, *down_scales;
    const float *qkv_bias, *out_bias;            /* or NULL */
} DecoderLayer;

static void rms_norm(const float *x, const float *weight, int64_t n, float floor, float *out) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += x[i] * x[i];
    const float inverse = 1.0f / sqrtf(sum + floor);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * inverse * weight[i];
}

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

/* out[i] = silu(gate[i]) * up[i]. */
static void silu_mul(const float *gate, const float *up, int64_t n, float *out) {
    int64_t i = 0;
#if QB_VNNI
    for (; i + 16 <= n; i += 16) {
        const __m512 g = _mm512_loadu_ps(gate + i);
        const __m512 denominator = _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), g)));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_div_ps(g, denominator), _mm512_loadu_ps(up + i)));
    }
#endif
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

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

typedef uint16_t bf16; /* the top half of an fp32 */

static inline float bf16_to_float(bf16 value) {
    const uint32_t bits = (uint32_t)value << 16;
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

static inline bf16 float_to_bf16_rounded(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffff) > 0x7f800000) return 0x7fc0; /* NaN, as torch writes it */
    return (bf16)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16); /* round to nearest even */
}

static void store_bf16(const float *x, int64_t n, bf16 *out) {
    for (int64_t i = 0; i < n; i++) out[i] = float_to_bf16_rounded(x[i]);
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

/* Normalise (Qwen3) and rotate the query and key heads of one token, in place. */
static void position_heads(float *qk, int64_t rows, int64_t d, const float *norm, float floor,
                           const float *cos, const float *sin, float *scratch) {
    const int64_t half = d / 2;
    for (int64_t row = 0; row < rows; row++) {
        float *head = qk + row * d;
        if (norm) rms_norm(head, norm + row * d, d, floor, head);
        for (int64_t i = 0; i < d; i++) scratch[i] = head[(i + half) % d]; /* roll by d / 2 */
        for (int64_t i = 0; i < d; i++) head[i] = head[i] * cos[i] + scratch[i] * sin[i];
    }
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

/* One query's scores against keys 0, 1, 2, ... four at a time (one horizontal sum per four
 * keys instead of one per key); returns how many keys it scored (a multiple of 4). */
static int64_t scores_by_four(const float *query, const bf16 *keys, int64_t length, int64_t d, float *scores) {
    __m512 q[16];
    for (int64_t j = 0; j < d / 16; j++) q[j] = _mm512_loadu_ps(query + 16 * j);
    int64_t t = 0;
    for (; t + 4 <= length; t += 4) {
        __m512 acc[4];
        for (int u = 0; u < 4; u++) {
            const bf16 *key = keys + (t + u) * d;
            acc[u] = _mm512_mul_ps(q[0], load_bf16(key));
            for (int64_t j = 1; j < d / 16; j++) acc[u] = _mm512_fmadd_ps(q[j], load_bf16(key + 16 * j), acc[u]);
        }
        _mm_storeu_ps(scores + t, sum_four(acc[0], acc[1], acc[2], acc[3]));
    }
    return t;
}
#endif

/* The `group` query heads that share one KV head, over its positions 0..length-1: each key
 * and value row is read once for the group. scores: [group][length] scratch. */
static void attend_group(const float *queries, const bf16 *keys, const bf16 *values, int64_t length,
                         int64_t d, int64_t group, float *scores, float *out) {
    for (int64_t g = 0; g < group; g++) {
        int64_t t = 0;
#if QB_VNNI
        if (d % 16 == 0 && d <= 256) t = scores_by_four(queries + g * d, keys, length, d, scores + g * length);
#endif
        for (; t < length; t++) scores[g * length + t] = dot(queries + g * d, keys + t * d, d);
    }
    for (int64_t g = 0; g < group; g++) softmax(scores + g * length, length);
#if QB_VNNI
    if (d % 16 == 0 && d <= 256) { /* the head's output stays in registers over all positions */
        for (int64_t g = 0; g < group; g++) {
            __m512 acc[16];
            for (int64_t j = 0; j < d / 16; j++) acc[j] = _mm512_setzero_ps();
            for (int64_t t = 0; t < length; t++) {
                const __m512 p = _mm512_set1_ps(scores[g * length + t]);
                for (int64_t j = 0; j < d / 16; j++) acc[j] = _mm512_fmadd_ps(p, load_bf16(values + t * d + 16 * j), acc[j]);
            }
            for (int64_t j = 0; j < d / 16; j++) _mm512_storeu_ps(out + g * d + 16 * j, acc[j]);
        }
        return;
    }
#endif
    memset(out, 0, sizeof(float) * (size_t)(group * d));
    for (int64_t t = 0; t < length; t++)
        for (int64_t g = 0; g < group; g++) {
            const float p = scores[g * length + t];
            for (int64_t i = 0; i < d; i++) out[g * d + i] += p * bf16_to_float(values[t * d + i]);
        }
}

static void add_bias(float *x, const float *bias, int64_t n) {
    if (bias)
        for (int64_t i = 0; i < n; i++) x[i] += bias[i];
}

/* Where one sequence of the batch keeps its KV cache and its new token's rotation. */
typedef struct {
    bf16 *keys, *values;     /* [layers, kv_heads, capacity, head_dim] each */
    int64_t capacity, position; /* the new token goes to `position` */
    const float *cos, *sin;  /* [head_dim] at `position` (sin sign-folded) */
} SequenceSlot;

/* Scratch of one decode step: every buffer holds `batch` rows. */
typedef struct {
    float *normed, *projected, *attended, *scores, *scratch, *residual;
    Activations *activations; /* one per row: quantised by one thread, read by all */
    int64_t batch;
} StepScratch;

static void scratch_free(StepScratch *s) {
    free(s->normed); free(s->projected); free(s->attended); free(s->scores); free(s->scratch); free(s->residual);
    for (int64_t b = 0; s->activations && b < s->batch; b++) qb_activations_free(s->activations + b);
    free(s->activations);
}

static int scratch_alloc(StepScratch *s, const DecoderShape *shape, int64_t batch, int64_t longest) {
    const int64_t hidden = shape->hidden, d = shape->head_dim, inter = shape->intermediate;
    const int64_t q_size = shape->heads * d, qkv_rows = q_size + 2 * shape->kv_heads * d;
    const int64_t widest = qkv_rows > 2 * inter ? qkv_rows : 2 * inter;
    const int64_t widest_input = hidden > inter ? (hidden > q_size ? hidden : q_size) : (inter > q_size ? inter : q_size);
    const size_t rows = (size_t)batch;
    memset(s, 0, sizeof *s);
    s->batch = batch;
    s->normed = malloc(sizeof(float) * rows * (size_t)(hidden > inter ? hidden : inter));
    s->projected = malloc(sizeof(float) * rows * (size_t)widest);
    s->attended = malloc(sizeof(float) * rows * (size_t)q_size);
    s->scores = malloc(sizeof(float) * rows * (size_t)(shape->heads * longest));
    s->scratch = malloc(sizeof(float) * rows * (size_t)d);
    s->residual = malloc(sizeof(float) * rows * (size_t)hidden);
    s->activations = calloc(rows, sizeof(Activations));
    int failed = !s->normed || !s->projected || !s->attended || !s->scores || !s->scratch || !s->residual || !s->activations;
    for (int64_t b = 0; b < batch && !failed; b++) failed = qb_activations_alloc(s->activations + b, widest_input) != 0;
    if (failed) scratch_free(s);
    return failed ? -1 : 0;
}

/* x [batch, hidden]: each sequence's new token embedding in, its last hidden state (before
 * the final norm) out. Its keys and values are written at its slot's position. Each row's
 * arithmetic is the same whatever the batch, so a reply does not depend on its company.
 * Returns 0, or -1 when scratch memory cannot be had. */
int qb_decode_step(const DecoderShape *shape, const DecoderLayer *layers, int64_t batch,
                   float *x, const SequenceSlot *slots, int threads) {
    const int64_t hidden = shape->hidden, d = shape->head_dim, heads = shape->heads;
    const int64_t kv_heads = shape->kv_heads, group = heads / kv_heads;
    const int64_t q_size = heads * d, kv_size = kv_heads * d;
    const int64_t qkv_rows = q_size + 2 * kv_size, inter = shape->intermediate;
    const int64_t widest = qkv_rows > 2 * inter ? qkv_rows : 2 * inter;
    const int64_t normed_width = hidden > inter ? hidden : inter;
    const int bits = (int)shape->bits;
    int64_t longest = 1;
    for (int64_t b = 0; b < batch; b++)
        if (slots[b].position + 1 > longest) longest = slots[b].position + 1;
    StepScratch s;
    const int failed = scratch_alloc(&s, shape, batch, longest) != 0;
    Activations *act = s.activations;
#pragma omp parallel num_threads(threads) if (!failed)
    for (int64_t index = 0; index < (failed ? 0 : shape->layers); index++) {
        const DecoderLayer *layer = layers + index;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            rms_norm(x + b * hidden, layer->attn_norm, hidden, shape->hidden_floor, s.normed + b * normed_width);
            qb_quantize(s.normed + b * normed_width, hidden, bits, act + b);
        }
        qb_rows_dot_batch(layer->qkv, layer->qkv_scales, bits, act, batch, qkv_rows, hidden, s.projected, widest);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            const SequenceSlot *slot = slots + b;
            float *projected = s.projected + b * widest;
            const int64_t stride = kv_heads * slot->capacity * d;
            bf16 *layer_keys = slot->keys + index * stride, *layer_values = slot->values + index * stride;
            add_bias(projected, layer->qkv_bias, qkv_rows);
            position_heads(projected, heads + kv_heads, d, layer->qk_norm, shape->head_floor, slot->cos, slot->sin, s.scratch + b * d);
            for (int64_t h = 0; h < kv_heads; h++) {
                store_bf16(projected + q_size + h * d, d, layer_keys + (h * slot->capacity + slot->position) * d);
                store_bf16(projected + q_size + kv_size + h * d, d, layer_values + (h * slot->capacity + slot->position) * d);
            }
        }
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int64_t b = 0; b < batch; b++)
            for (int64_t kv = 0; kv < kv_heads; kv++) {
                const SequenceSlot *slot = slots + b;
                const int64_t stride = kv_heads * slot->capacity * d, h = kv * group;
                const bf16 *layer_keys = slot->keys + index * stride, *layer_values = slot->values + index * stride;
                attend_group(s.projected + b * widest + h * d, layer_keys + kv * slot->capacity * d,
                             layer_values + kv * slot->capacity * d, slot->position + 1, d, group,
                             s.scores + (b * heads + h) * longest, s.attended + b * q_size + h * d);
            }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) qb_quantize(s.attended + b * q_size, q_size, bits, act + b);
        qb_rows_dot_batch(layer->out, layer->out_scales, bits, act, batch, hidden, q_size, s.residual, hidden);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            float *row = x + b * hidden, *added = s.residual + b * hidden;
            add_bias(added, layer->out_bias, hidden);
            for (int64_t i = 0; i < hidden; i++) row[i] += added[i];
            rms_norm(row, layer->mlp_norm, hidden, shape->hidden_floor, s.normed + b * normed_width);
            qb_quantize(s.normed + b * normed_width, hidden, bits, act + b);
        }
        qb_rows_dot_batch(layer->gate_up, layer->gate_up_scales, bits, act, batch, 2 * inter, hidden, s.projected, widest);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            const float *projected = s.projected + b * widest;
            silu_mul(projected, projected + inter, inter, s.normed + b * normed_width);
            qb_quantize(s.normed + b * normed_width, inter, bits, act + b);
        }
        qb_rows_dot_batch(layer->down, layer->down_scales, bits, act, batch, hidden, inter, s.residual, hidden);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++)
            for (int64_t i = 0; i < hidden; i++) x[b * hidden + i] += s.residual[b * hidden + i];
    }
    if (!failed) scratch_free(&s);
    return failed ? -1 : 0;
}
