/* One decode step (one new token) through every layer of a Llama-family decoder, in C.
 *
 * In torch a decode step is ~30 small ops per layer around the four matmuls; each costs
 * 5-10 us because the matmuls evict the caches, ~8 ms per token on Qwen3-0.6B, a third of
 * the step. Here the whole step runs in one OpenMP parallel region: the matmuls
 * (packed_linear.c's kernel) and attention are split between the threads, the small vector
 * work between them is done by one thread, with a barrier after each part.
 * Arithmetic follows model.py: fp32 activations, RMSNorm with the weight pre-scaled
 * by sqrt(n), the attention scale folded into the queries, rotate-half rotary with a
 * sign-folded sin. The KV cache [layers, kv_heads, capacity, head_dim] is bf16: in fp32, eight
 * chats' caches were as many bytes per step as the weights, and a kept conversation took
 * twice the memory. Keys and values are rounded to nearest even when stored (as torch's
 * conversion does for prompts) and widened to fp32 as they are read.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "packed_linear.h"

#if QB_VNNI
#include <immintrin.h>
#endif

typedef struct {
    int64_t hidden, heads, kv_heads, head_dim, intermediate, layers;
    float hidden_floor, head_floor; /* n * eps of the hidden and per-head RMSNorms */
} DecoderShape;

typedef struct {
    const float *attn_norm, *qk_norm, *mlp_norm; /* qk_norm: [heads + kv_heads, D], or NULL */
    const uint8_t *qkv, *out, *gate_up, *down;   /* packed weights */
    const uint16_t *qkv_scales, *out_scales, *gate_up_scales, *down_scales;
    const float *qkv_bias, *out_bias;            /* or NULL */
    /* 8 or 4 each: a GGUF file mixes them (Q4_K_M keeps some matrices in 6 bits, here 8) */
    int64_t qkv_bits, out_bits, gate_up_bits, down_bits;
} DecoderLayer;

static void rms_norm(const float *x, const float *weight, int64_t n, float floor, float *out) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += x[i] * x[i];
    const float inverse = 1.0f / sqrtf(sum + floor);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * inverse * weight[i];
}

/* Prompt rows x [rows, n] RMS-normalised as the decode step does, rounded to bf16 for the
 * prompt's matmul (torch's norm took 4 broadcast ops and a conversion per row block). */
void qb_rms_norm_rows(const float *x, int64_t rows, int64_t n, const float *weight, float floor,
                      bf16 *out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        float sum = 0.0f;
        for (int64_t i = 0; i < n; i++) sum += row[i] * row[i];
        const float inverse = 1.0f / sqrtf(sum + floor);
        for (int64_t i = 0; i < n; i++) out[r * n + i] = float_to_bf16_rounded(row[i] * inverse * weight[i]);
    }
}

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

static void store_bf16(const float *x, int64_t n, bf16 *out) {
    for (int64_t i = 0; i < n; i++) out[i] = float_to_bf16_rounded(x[i]);
}

/* Normalise (Qwen3) and rotate the query and key heads of one token, in place. */
static void position_heads(float *qk, int64_t rows, int64_t d, const float *norm, float floor,
                           const float *cos, const float *sin, float *scratch) {
    const int64_t half = d / 2;
    for (int64_t row = 0; row < rows; row++) {
        float *head = qk + row * d;
        if (norm) rms_norm(head, norm + row * d, d, floor, head);
        for (int64_t i = 0; i < half; i++) { /* roll by d / 2 (two loops: no division) */
            scratch[i] = head[i + half];
            scratch[i + half] = head[i];
        }
        for (int64_t i = 0; i < d; i++) head[i] = head[i] * cos[i] + scratch[i] * sin[i];
    }
}

/* A prompt chunk's query and key heads [tokens, heads + kv_heads, head_dim], normalised (Qwen3)
 * and rotated in place, token t by cos and sin [tokens, head_dim]: what the decode step does
 * for its one token. torch took ~6 ms a layer for 800 tokens in small broadcast ops. Returns
 * 0, or -1 when scratch memory cannot be had. */
int qb_position_heads(const DecoderShape *shape, const DecoderLayer *layer, float *qk, int64_t tokens,
                      const float *cos, const float *sin, int threads) {
    const int64_t d = shape->head_dim, rows = shape->heads + shape->kv_heads;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *scratch = malloc(sizeof(float) * (size_t)d);
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tokens; t++)
            if (scratch)
                position_heads(qk + t * rows * d, rows, d, layer->qk_norm, shape->head_floor, cos + t * d, sin + t * d, scratch);
        free(scratch);
    }
    return failed ? -1 : 0;
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
    if (s->activations && s->activations->high) qb_activations_free_rows(s->activations);
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
    if (!failed) failed = qb_activations_alloc_rows(s->activations, batch, widest_input) != 0;
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
            qb_quantize(s.normed + b * normed_width, hidden, (int)layer->qkv_bits, act + b);
        }
        qb_rows_dot_batch(layer->qkv, layer->qkv_scales, (int)layer->qkv_bits, act, batch, qkv_rows, hidden, s.projected, widest);
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
                qb_attend_group(s.projected + b * widest + h * d, layer_keys + kv * slot->capacity * d,
                             layer_values + kv * slot->capacity * d, slot->position + 1, d, group,
                             s.scores + (b * heads + h) * longest, s.attended + b * q_size + h * d);
            }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) qb_quantize(s.attended + b * q_size, q_size, (int)layer->out_bits, act + b);
        qb_rows_dot_batch(layer->out, layer->out_scales, (int)layer->out_bits, act, batch, hidden, q_size, s.residual, hidden);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            float *row = x + b * hidden, *added = s.residual + b * hidden;
            add_bias(added, layer->out_bias, hidden);
            for (int64_t i = 0; i < hidden; i++) row[i] += added[i];
            rms_norm(row, layer->mlp_norm, hidden, shape->hidden_floor, s.normed + b * normed_width);
            qb_quantize(s.normed + b * normed_width, hidden, (int)layer->gate_up_bits, act + b);
        }
        qb_rows_dot_batch(layer->gate_up, layer->gate_up_scales, (int)layer->gate_up_bits, act, batch, 2 * inter, hidden, s.projected, widest);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            const float *projected = s.projected + b * widest;
            silu_mul(projected, projected + inter, inter, s.normed + b * normed_width);
            qb_quantize(s.normed + b * normed_width, inter, (int)layer->down_bits, act + b);
        }
        qb_rows_dot_batch(layer->down, layer->down_scales, (int)layer->down_bits, act, batch, hidden, inter, s.residual, hidden);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++)
            for (int64_t i = 0; i < hidden; i++) x[b * hidden + i] += s.residual[b * hidden + i];
    }
    if (!failed) scratch_free(&s);
    return failed ? -1 : 0;
}
