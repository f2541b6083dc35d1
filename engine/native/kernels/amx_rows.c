/* A batch's activation rows times packed int8 weights on AMX tiles (Intel Xeon, 4th
 * generation on).
 *
 * With VNNI, every activation row costs two vpdpbusd per 64 weight bytes (its 15 bits split
 * in a high and a low byte): a batch of 8 made the decode step bound by multiply-adds, not by
 * reading the weights (on a 2-core Xeon, 55-66 ms a step against 27.6 ms for one row). One
 * tile multiply (tdpbsud) takes a whole block for all rows: the activations (signed, rows
 * `stride` bytes apart) times a block of weights (unsigned, already in the tile's layout:
 * 8 quads of 16 rows), summed exactly in int32. The sums then go through the same steps as
 * tile_dot's, in the same order, so a row's result is the same to the bit as with VNNI and
 * as alone.
 */
#include <stdint.h>
#include <string.h>

#include "packed_linear.h"

#if QB_AMX
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TILE 16  /* weight rows of a packed tile: a tile multiply's columns */
#define BLOCK 32 /* weights per scale: a tile multiply's depth */
#define MOST_ROWS 16 /* activation rows a tile holds */
#define PREFETCH_BLOCKS 4 /* how far ahead the weights are fetched */

static int granted; /* Linux lent this process the tile registers */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} TileConfig;
#endif

/* Ask Linux for the AMX tile registers (ARCH_REQ_XCOMP_PERM for XTILEDATA); returns whether
 * they may be used. Called once when the library loads. */
int qb_amx_enable(void) {
#if QB_AMX
    granted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    return granted;
#else
    return 0;
#endif
}

int qb_amx_granted(void) {
#if QB_AMX
    return granted;
#else
    return 0;
#endif
}

int qb_amx_takes(int bits, const Activations *a, int64_t batch) {
#if QB_AMX
    /* one row alone is bound by reading the weights: VNNI does as well without the set-up */
    return granted && bits == 8 && batch >= 2 && batch <= MOST_ROWS && a->stride > 0;
#else
    (void)bits; (void)a; (void)batch;
    return 0;
#endif
}

void qb_amx_begin(int64_t batch) {
#if QB_AMX
    TileConfig config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 4; t++) config.rows[t] = (uint8_t)batch;
    config.bytes_per_row[0] = config.bytes_per_row[1] = TILE * 4; /* sums: high, low parts */
    config.bytes_per_row[2] = config.bytes_per_row[3] = BLOCK;    /* activations: high, low */
    config.rows[4] = BLOCK / 4;                                   /* weights: quads of rows */
    config.bytes_per_row[4] = TILE * 4;
    /* GCC 12's _tile_loadconfig tells the compiler it reads only 8 bytes: without this the
     * stores above are dropped as dead and ldtilecfg faults on a half-written config */
    __asm__ volatile("" : : "r"(&config) : "memory");
    _tile_loadconfig(&config);
#else
    (void)batch;
#endif
}

void qb_amx_tile_rows(const uint8_t *packed, const uint16_t *packed_scales, const Activations *a,
                      int64_t batch, int64_t tile, int64_t k, float *y, int64_t y_stride) {
#if QB_AMX
    const int64_t blocks = k / BLOCK;
    const uint8_t *codes = packed + tile * blocks * TILE * BLOCK;
    const uint16_t *scales = packed_scales + tile * blocks * TILE;
    int32_t high[MOST_ROWS][TILE], low[MOST_ROWS][TILE];
    __m512 acc[MOST_ROWS];
    for (int64_t i = 0; i < batch; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        /* tile loads do not wake the hardware prefetcher: without this they wait on memory */
        for (int64_t line = 0; line < TILE * BLOCK; line += 64)
            _mm_prefetch((const char *)codes + (b + PREFETCH_BLOCKS) * TILE * BLOCK + line, _MM_HINT_T0);
        _tile_zero(0);
        _tile_zero(1);
        _tile_loadd(4, codes + b * TILE * BLOCK, TILE * 4);
        _tile_loadd(2, a->high + b * BLOCK, a->stride);
        _tile_loadd(3, a->low + b * BLOCK, a->stride);
        _tile_dpbsud(0, 2, 4);
        _tile_dpbsud(1, 3, 4);
        _tile_stored(0, high, TILE * 4);
        _tile_stored(1, low, TILE * 4);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + b * TILE)));
        for (int64_t i = 0; i < batch; i++) { /* tile_dot's steps, in its order */
            __m512i dots = _mm512_add_epi32(_mm512_slli_epi32(_mm512_loadu_si512(high[i]), 7), _mm512_loadu_si512(low[i]));
            dots = _mm512_sub_epi32(dots, _mm512_set1_epi32(128 * a[i].block_sums[b]));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), d, acc[i]);
        }
    }
    for (int64_t i = 0; i < batch; i++)
        _mm512_storeu_ps(y + i * y_stride + tile * TILE, _mm512_mul_ps(acc[i], _mm512_set1_ps(a[i].scale)));
#else
    (void)packed; (void)packed_scales; (void)a; (void)batch; (void)tile; (void)k; (void)y; (void)y_stride;
#endif
}

void qb_amx_end(void) {
#if QB_AMX
    _tile_release();
#endif
}
