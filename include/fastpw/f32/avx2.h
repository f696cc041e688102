/*
 * fpw_f32_gemm_6x16__avx2: AVX2 + FMA microkernel family.
 *
 * Instructions: vbroadcastss, vfmadd231ps ymm, vmaskmovps loads for edge columns (plain
 * stores of halves, pairs and singles write them: fpw_avx2_store_lanes).
 * Registers: 6 rows x 2 ymm = 12 accumulators + 2 for the B row + 1 broadcast = 15 of
 * the 16 ymm registers.
 * Why 6x16: 12 independent FMA chains cover the FMA latency (4-5 cycles) on two FMA
 * pipes, which is the largest tile the 16-register file allows without spilling.
 * Edge tiles: AVX2 masked loads cost more than plain ones, so full-width loads (a full
 * tile, or a zero-padded packed panel) and masked loads are separate instances; mr < 6
 * and nr <= 8 get their own unrolled instances.
 */
#ifndef FASTPW_F32_AVX2_H
#define FASTPW_F32_AVX2_H

#include "../fastpw.h"
#include "../x86_common.h"

#if FPW_X86_64
#include <immintrin.h>

#define FPW_AVX2_MR 6
#define FPW_AVX2_NV 2 /* vectors of 8 floats per tile row */
#define FPW_AVX2_NR (8 * FPW_AVX2_NV)

/* Stores vector v of the MR accumulator rows as columns: column j (of the at most 8
 * that fall within `columns`) is the run c[j * c_cs], ..., c[j * c_cs + MR - 1]. An 8x8
 * transpose in registers (rows past MR are zero and never stored) turns 96 scalar
 * stores of a 6x16 tile into 32 plain ones. */
FPW_ALWAYS_INLINE FPW_AVX2_TARGET void fpw_avx2_store_columns(float* c, ptrdiff_t c_cs,
                                                              __m256 acc[FPW_AVX2_MR][FPW_AVX2_NV], int v,
                                                              const int MR, ptrdiff_t columns) {
    __m256 r[8];
    FPW_UNROLL for (int i = 0; i < 8; i++) r[i] = i < MR ? acc[i][v] : _mm256_setzero_ps();
    __m256 pair[8], quad[8], column[8];
    FPW_UNROLL for (int i = 0; i < 8; i += 2) {
        pair[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);     /* r_i[0] r_i+1[0] r_i[1] r_i+1[1] | [4] [5] */
        pair[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]); /* the same for [2] [3] | [6] [7] */
    }
    FPW_UNROLL for (int h = 0; h < 8; h += 4) {
        quad[h + 0] = _mm256_shuffle_ps(pair[h], pair[h + 2], 0x44);     /* rows h..h+3 of column 0 | 4 */
        quad[h + 1] = _mm256_shuffle_ps(pair[h], pair[h + 2], 0xEE);     /* column 1 | 5 */
        quad[h + 2] = _mm256_shuffle_ps(pair[h + 1], pair[h + 3], 0x44); /* column 2 | 6 */
        quad[h + 3] = _mm256_shuffle_ps(pair[h + 1], pair[h + 3], 0xEE); /* column 3 | 7 */
    }
    FPW_UNROLL for (int j = 0; j < 4; j++) {
        column[j] = _mm256_permute2f128_ps(quad[j], quad[j + 4], 0x20);
        column[j + 4] = _mm256_permute2f128_ps(quad[j], quad[j + 4], 0x31);
    }
    FPW_UNROLL for (int j = 0; j < 8; j++) {
        if (j < columns) fpw_avx2_store_lanes(c + (ptrdiff_t)j * c_cs, column[j], (size_t)MR, 0);
    }
}

/* Tiles first .. first + count - 1 of t's row of tiles (see n_tiles), all nr wide. */
FPW_ALWAYS_INLINE FPW_AVX2_TARGET void fpw_f32_tile_avx2(const fpw_f32_tile* t, const int MR, const int NV,
                                                         const int A_ROWS, const int FULL_LOADS,
                                                         const size_t first, const size_t count,
                                                         const size_t nr) {
    __m256i mask[FPW_AVX2_NV];
    const float* a_row[FPW_AVX2_MR];
    /* The tile's fields as locals: Python extensions build with -fno-strict-aliasing, so
     * every store to C would otherwise make the compiler reload them from *t. */
    const ptrdiff_t c_rs = t->c_rs, c_cs = t->c_cs;
    const size_t kc = t->kc;
    /* One line ahead: the next 16 floats of this channel, read by the tiles after it. */
    const int prefetch = !A_ROWS && t->a_prefetch;
    FPW_UNROLL for (int v = 0; v < NV; v++) mask[v] = fpw_avx2_lane_mask(nr, v);
    FPW_UNROLL for (int i = 0; i < MR; i++) a_row[i] = t->a + (ptrdiff_t)i * t->a_rs;
    for (size_t n = first; n < first + count; n++) {
        __m256 acc[FPW_AVX2_MR][FPW_AVX2_NV];
        float* const c = t->c + (ptrdiff_t)(n * FPW_AVX2_NR) * c_cs;
        const float* const bias_n = t->bias_on_rows || !t->bias ? t->bias : t->bias + n * FPW_AVX2_NR;
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                t->accumulate ? _mm256_maskload_ps(c + (ptrdiff_t)i * c_rs + 8 * v, mask[v])
                              : _mm256_setzero_ps();
        }
        const float* a = t->a;
        const float* b = t->b + (ptrdiff_t)n * t->b_ts;
        const ptrdiff_t a_cs = t->a_cs, b_rs = t->b_rs;
        for (size_t k = 0; k < kc; k++) {
            __m256 b_vec[FPW_AVX2_NV];
            FPW_UNROLL for (int v = 0; v < NV; v++) b_vec[v] =
                FULL_LOADS ? _mm256_loadu_ps(b + 8 * v) : _mm256_maskload_ps(b + 8 * v, mask[v]);
            if (prefetch) _mm_prefetch((const char*)(a + 16), _MM_HINT_T0);
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                const __m256 a_vec = _mm256_broadcast_ss(A_ROWS ? &a_row[i][k] : &a[i]);
                FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                    _mm256_fmadd_ps(a_vec, b_vec[v], acc[i][v]);
            }
            a += a_cs;
            b += b_rs;
        }
        if (t->finish && t->bias) {
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                FPW_UNROLL for (int v = 0; v < NV; v++) {
                    const __m256 bias = t->bias_on_rows ? _mm256_broadcast_ss(&bias_n[i])
                                                        : _mm256_maskload_ps(bias_n + 8 * v, mask[v]);
                    acc[i][v] = _mm256_add_ps(acc[i][v], bias);
                }
            }
        }
        if (t->finish && t->clamp) {
            /* max/min return their second operand when either is NaN: NaN propagates. */
            const __m256 lo = _mm256_set1_ps(t->lo), hi = _mm256_set1_ps(t->hi);
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                    _mm256_min_ps(hi, _mm256_max_ps(lo, acc[i][v]));
            }
        }
        if (c_cs == 1) {
            const int full_store = nr == (size_t)(8 * NV);
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                float* c_row = c + (ptrdiff_t)i * c_rs;
                FPW_UNROLL for (int v = 0; v < NV; v++) {
                    if (full_store)
                        _mm256_storeu_ps(c_row + 8 * v, acc[i][v]);
                    else
                        fpw_avx2_store_lanes(c_row, acc[i][v], nr, v);
                }
            }
        } else {
            /* The transposed orientation (c_rs == 1): column j of the tile is a run of MR
             * floats. */
            FPW_UNROLL for (int v = 0; v < NV; v++)
                fpw_avx2_store_columns(c + 8 * v * c_cs, c_cs, acc, v, MR, (ptrdiff_t)nr - 8 * v);
        }
    }
}

#define FPW_AVX2_NV_CASE(MR, NV)                                                                             \
    if (a_rows) {                                                                                            \
        if (full_loads)                                                                                      \
            fpw_f32_tile_avx2(t, MR, NV, 1, 1, first, count, nr);                                            \
        else                                                                                                 \
            fpw_f32_tile_avx2(t, MR, NV, 1, 0, first, count, nr);                                            \
    } else {                                                                                                 \
        if (full_loads)                                                                                      \
            fpw_f32_tile_avx2(t, MR, NV, 0, 1, first, count, nr);                                            \
        else                                                                                                 \
            fpw_f32_tile_avx2(t, MR, NV, 0, 0, first, count, nr);                                            \
    }

#define FPW_AVX2_CASE(MR)                                                                                    \
    case MR:                                                                                                 \
        if (nv == 2) {                                                                                       \
            FPW_AVX2_NV_CASE(MR, 2)                                                                          \
        } else {                                                                                             \
            FPW_AVX2_NV_CASE(MR, 1)                                                                          \
        }                                                                                                    \
        break;

/* `count` tiles of width nr from column tile `first` on. */
static FPW_AVX2_TARGET void fpw_f32_tiles_avx2(const fpw_f32_tile* t, size_t first, size_t count, size_t nr) {
    const int a_rows = t->a_rs != 1;
    const int nv = nr > 8 ? 2 : 1;
    const int full_loads = t->b_padded || nr == (size_t)(8 * nv);
    switch (t->mr) {
        FPW_AVX2_CASE(6)
        FPW_AVX2_CASE(5)
        FPW_AVX2_CASE(4)
        FPW_AVX2_CASE(3)
        FPW_AVX2_CASE(2)
        FPW_AVX2_CASE(1)
        default:
            break;
    }
}
#undef FPW_AVX2_CASE
#undef FPW_AVX2_NV_CASE

static FPW_AVX2_TARGET void fpw_f32_gemm_6x16__avx2(const fpw_f32_tile* t) {
    /* The full-width tiles in one loop, then a narrower last one. */
    const size_t full = t->n_tiles - (t->nr < FPW_AVX2_NR);
    if (full) fpw_f32_tiles_avx2(t, 0, full, FPW_AVX2_NR);
    if (t->nr < FPW_AVX2_NR) fpw_f32_tiles_avx2(t, full, 1, t->nr);
}

/* Peak-throughput probe: 12 independent FMA chains on registers only. Returns flops. */
static FPW_AVX2_TARGET double fpw_fma_peak_loop__avx2(long iterations) {
    __m256 acc[12];
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    FPW_UNROLL for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < iterations; n++) {
        FPW_UNROLL for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    }
    __m256 sum = acc[0];
    FPW_UNROLL for (int i = 1; i < 12; i++) sum = _mm256_add_ps(sum, acc[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    volatile float sink = lanes[0];
    (void)sink;
    return 12.0 * 8.0 * 2.0 * (double)iterations;
}

static const fpw_f32_ukernel fpw_f32_ukernel__avx2 =
    FPW_F32_UKERNEL(fpw_f32_gemm_6x16__avx2, FPW_AVX2_MR, FPW_AVX2_NR, 8, fpw_fma_peak_loop__avx2);

#endif /* FPW_X86_64 */
#endif /* FASTPW_F32_AVX2_H */
