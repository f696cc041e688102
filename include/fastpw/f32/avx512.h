/*
 * fpw_f32_gemm_12x32__avx512: AVX-512F microkernel family.
 *
 * Instructions: vbroadcastss (often folded into the FMA as {1to16}), vfmadd231ps zmm,
 * masked vmovups for edge columns (k-masks make partial loads and stores free, so there
 * is a single code path for full and edge tiles).
 * Registers: 12 rows x 2 zmm = 24 accumulators + 2 for the B row + 1 broadcast = 27 of
 * the 32 zmm registers.
 * Why 12x32: 24 independent FMA chains cover the 4-cycle FMA latency on cores with two
 * 512-bit FMA pipes (8 chains needed) with room to spare, and each step issues 24 FMAs
 * for 14 loads, inside every core's load bandwidth. NR = 32 keeps the NCHW pixel edge
 * waste small for the spatial sizes of real networks.
 * Edge tiles: mr < 12 and nr <= 16 get their own fully unrolled instances (selected by a
 * switch), so a 1-row or 16-column remainder does not pay for a 12x32 tile.
 * A row of column tiles (n_tiles) runs in one call: the full-width tiles in one loop,
 * then the narrower last one.
 */
#ifndef FASTPW_F32_AVX512_H
#define FASTPW_F32_AVX512_H

#include "../fastpw.h"
#include "../x86_common.h"

#if FPW_X86_64
#include <immintrin.h>

#define FPW_AVX512_MR 12
#define FPW_AVX512_NV 2 /* vectors of 16 floats per tile row */
#define FPW_AVX512_NR (16 * FPW_AVX512_NV)

/* Rows of A by base + scaled index: bases at rows 0, 3, 6 and 9 and A's row stride in
 * bytes times 1, 2, 4 or 8 reach each of 12 rows, so the loop holds 4 pointers and one
 * stride where 12 row pointers spilled to the stack (12x32 tiles of NHWC rows: 5% of
 * the kernel's time on AMD Zen 4). */
static const int fpw_avx512_row_base[FPW_AVX512_MR] = {0, 0, 0, 1, 0, 1, 2, 1, 0, 3, 2, 1};
static const int fpw_avx512_row_scale[FPW_AVX512_MR] = {0, 1, 2, 0, 4, 2, 0, 4, 8, 0, 4, 8};

/* Stores vector v of the MR accumulator rows as columns: column j (of the at most 16
 * that fall within `columns`) is the run c[j * c_cs], ..., c[j * c_cs + MR - 1]. A 16x16
 * transpose in registers (rows past MR are zero and never stored) turns the 192 scalar
 * loads and stores of a 12x16 half tile, through a copy on the stack, into 16 masked
 * stores. */
FPW_ALWAYS_INLINE FPW_AVX512_TARGET void fpw_avx512_store_columns(float* c, ptrdiff_t c_cs,
                                                                  __m512 acc[FPW_AVX512_MR][FPW_AVX512_NV],
                                                                  int v, const int MR, ptrdiff_t columns) {
    __m512 r[16], pair[16], quad[16];
    FPW_UNROLL for (int i = 0; i < 16; i++) r[i] = i < MR ? acc[i][v] : _mm512_setzero_ps();
    /* Within each 128-bit lane L: pair[i], pair[i + 1] interleave rows i and i + 1 ... */
    FPW_UNROLL for (int i = 0; i < 16; i += 2) {
        pair[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        pair[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* ... and quad[h + q] holds rows h .. h + 3 of column 4L + q. */
    FPW_UNROLL for (int h = 0; h < 16; h += 4) {
        quad[h + 0] = _mm512_shuffle_ps(pair[h], pair[h + 2], 0x44);
        quad[h + 1] = _mm512_shuffle_ps(pair[h], pair[h + 2], 0xEE);
        quad[h + 2] = _mm512_shuffle_ps(pair[h + 1], pair[h + 3], 0x44);
        quad[h + 3] = _mm512_shuffle_ps(pair[h + 1], pair[h + 3], 0xEE);
    }
    /* Column 4L + q gathers lane L of quad[q], quad[4 + q], quad[8 + q], quad[12 + q]. */
    const __mmask16 rows = (__mmask16)((1u << MR) - 1u);
    FPW_UNROLL for (int q = 0; q < 4; q++) {
        const __m512 low01 = _mm512_shuffle_f32x4(quad[q], quad[4 + q], 0x44); /* lanes 0, 1 of both */
        const __m512 low23 = _mm512_shuffle_f32x4(quad[q], quad[4 + q], 0xEE); /* lanes 2, 3 of both */
        const __m512 high01 = _mm512_shuffle_f32x4(quad[8 + q], quad[12 + q], 0x44);
        const __m512 high23 = _mm512_shuffle_f32x4(quad[8 + q], quad[12 + q], 0xEE);
        const __m512 column[4] = {
            _mm512_shuffle_f32x4(low01, high01, 0x88), /* L = 0 */
            _mm512_shuffle_f32x4(low01, high01, 0xDD), /* L = 1 */
            _mm512_shuffle_f32x4(low23, high23, 0x88), /* L = 2 */
            _mm512_shuffle_f32x4(low23, high23, 0xDD), /* L = 3 */
        };
        FPW_UNROLL for (int lane = 0; lane < 4; lane++) {
            const int j = 4 * lane + q;
            if (j < columns) _mm512_mask_storeu_ps(c + (ptrdiff_t)j * c_cs, rows, column[lane]);
        }
    }
}

/* Tiles first .. first + count - 1 of t's row of tiles (see n_tiles), all nr wide.
 * MR, NV and A_ROWS are compile-time constants at every call site: the loops unroll
 * completely and acc[][] lives in registers. A_ROWS selects A(i,c) = a[i*a_rs + c]
 * (rows) over A(i,c) = a[i + c*a_cs] (one pointer, unit stride across rows). */
FPW_ALWAYS_INLINE FPW_AVX512_TARGET void fpw_f32_tile_avx512(const fpw_f32_tile* t, const int MR,
                                                             const int NV, const int A_ROWS,
                                                             const size_t first, const size_t count,
                                                             const size_t nr) {
    __mmask16 mask[FPW_AVX512_NV];
    /* The tile's fields as locals: Python extensions build with -fno-strict-aliasing, so
     * every store to C would otherwise make the compiler reload them from *t. */
    const ptrdiff_t c_rs = t->c_rs, c_cs = t->c_cs, a_cs = t->a_cs, b_rs = t->b_rs;
    const ptrdiff_t a_rs_bytes = (ptrdiff_t)sizeof(float) * t->a_rs;
    const size_t kc = t->kc;
    /* Two lines ahead in this channel, read by the tiles after the next: the hardware
     * prefetchers follow too few of the Cg streams once x is not in L2 (squeezenet
     * 96->16 55x55 NCHW at batch 8 on AMD Zen 4: 26 GFLOP/s without the hint, 53 one
     * line ahead, 94 two lines ahead, 82 four). */
    const int prefetch = !A_ROWS && t->a_prefetch;
    FPW_UNROLL for (int v = 0; v < NV; v++) mask[v] = fpw_avx512_lane_mask(nr, v);
    for (size_t n = first; n < first + count; n++) {
        __m512 acc[FPW_AVX512_MR][FPW_AVX512_NV];
        float* const c = t->c + (ptrdiff_t)(n * FPW_AVX512_NR) * c_cs;
        const float* const bias_n = t->bias_on_rows || !t->bias ? t->bias : t->bias + n * FPW_AVX512_NR;
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                t->accumulate ? _mm512_maskz_loadu_ps(mask[v], c + (ptrdiff_t)i * c_rs + 16 * v)
                              : _mm512_setzero_ps();
        }
        const char* base[4];
        FPW_UNROLL for (int r = 0; r < 4; r++) base[r] = (const char*)t->a + (ptrdiff_t)(3 * r) * a_rs_bytes;
        const float* a = t->a;
        const float* b = t->b + (ptrdiff_t)n * t->b_ts;
        for (size_t k = 0; k < kc; k++) {
            __m512 b_vec[FPW_AVX512_NV];
            FPW_UNROLL for (int v = 0; v < NV; v++) b_vec[v] = _mm512_maskz_loadu_ps(mask[v], b + 16 * v);
            if (prefetch) _mm_prefetch((const char*)(a + 32), _MM_HINT_T0);
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                const float* a_i =
                    A_ROWS
                        ? (const float*)(base[fpw_avx512_row_base[i]] + fpw_avx512_row_scale[i] * a_rs_bytes)
                        : &a[i];
                const __m512 a_vec = _mm512_set1_ps(*a_i);
                FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                    _mm512_fmadd_ps(a_vec, b_vec[v], acc[i][v]);
            }
            if (A_ROWS) {
                FPW_UNROLL for (int r = 0; r < 4; r++) base[r] += sizeof(float);
            } else {
                a += a_cs;
            }
            b += b_rs;
        }
        if (t->finish && t->bias) {
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                FPW_UNROLL for (int v = 0; v < NV; v++) {
                    const __m512 bias = t->bias_on_rows ? _mm512_set1_ps(bias_n[i])
                                                        : _mm512_maskz_loadu_ps(mask[v], bias_n + 16 * v);
                    acc[i][v] = _mm512_add_ps(acc[i][v], bias);
                }
            }
        }
        if (t->finish && t->clamp) {
            /* max/min return their second operand when either is NaN: NaN propagates. */
            const __m512 lo = _mm512_set1_ps(t->lo), hi = _mm512_set1_ps(t->hi);
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                    _mm512_min_ps(hi, _mm512_max_ps(lo, acc[i][v]));
            }
        }
        if (c_cs == 1) {
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                FPW_UNROLL for (int v = 0; v < NV; v++)
                    _mm512_mask_storeu_ps(c + (ptrdiff_t)i * c_rs + 16 * v, mask[v], acc[i][v]);
            }
        } else {
            /* The transposed orientation (c_rs == 1): column j of the tile is a run of MR
             * floats. */
            FPW_UNROLL for (int v = 0; v < NV; v++)
                fpw_avx512_store_columns(c + 16 * v * c_cs, c_cs, acc, v, MR, (ptrdiff_t)nr - 16 * v);
        }
    }
}

#define FPW_AVX512_CASE(MR)                                                                                  \
    case MR:                                                                                                 \
        if (a_rows) {                                                                                        \
            if (nv == 2)                                                                                     \
                fpw_f32_tile_avx512(t, MR, 2, 1, first, count, nr);                                          \
            else                                                                                             \
                fpw_f32_tile_avx512(t, MR, 1, 1, first, count, nr);                                          \
        } else {                                                                                             \
            if (nv == 2)                                                                                     \
                fpw_f32_tile_avx512(t, MR, 2, 0, first, count, nr);                                          \
            else                                                                                             \
                fpw_f32_tile_avx512(t, MR, 1, 0, first, count, nr);                                          \
        }                                                                                                    \
        break;

/* `count` tiles of width nr from column tile `first` on. */
static FPW_AVX512_TARGET void fpw_f32_tiles_avx512(const fpw_f32_tile* t, size_t first, size_t count,
                                                   size_t nr) {
    const int a_rows = t->a_rs != 1;
    const int nv = nr > 16 ? 2 : 1;
    switch (t->mr) {
        FPW_AVX512_CASE(12)
        FPW_AVX512_CASE(11)
        FPW_AVX512_CASE(10)
        FPW_AVX512_CASE(9)
        FPW_AVX512_CASE(8)
        FPW_AVX512_CASE(7)
        FPW_AVX512_CASE(6)
        FPW_AVX512_CASE(5)
        FPW_AVX512_CASE(4)
        FPW_AVX512_CASE(3)
        FPW_AVX512_CASE(2)
        FPW_AVX512_CASE(1)
        default:
            break;
    }
}
#undef FPW_AVX512_CASE

static FPW_AVX512_TARGET void fpw_f32_gemm_12x32__avx512(const fpw_f32_tile* t) {
    /* The full-width tiles in one loop, then a narrower last one. */
    const size_t full = t->n_tiles - (t->nr < FPW_AVX512_NR);
    if (full) fpw_f32_tiles_avx512(t, 0, full, FPW_AVX512_NR);
    if (t->nr < FPW_AVX512_NR) fpw_f32_tiles_avx512(t, full, 1, t->nr);
}

/* Peak-throughput probe: 24 independent FMA chains on registers only. Returns flops. */
static FPW_AVX512_TARGET double fpw_fma_peak_loop__avx512(long iterations) {
    __m512 acc[24];
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    FPW_UNROLL for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iterations; n++) {
        FPW_UNROLL for (int i = 0; i < 24; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    }
    __m512 sum = acc[0];
    FPW_UNROLL for (int i = 1; i < 24; i++) sum = _mm512_add_ps(sum, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(sum);
    (void)sink;
    return 24.0 * 16.0 * 2.0 * (double)iterations;
}

static const fpw_f32_ukernel fpw_f32_ukernel__avx512 =
    FPW_F32_UKERNEL(fpw_f32_gemm_12x32__avx512, FPW_AVX512_MR, FPW_AVX512_NR, 16, fpw_fma_peak_loop__avx512);

#endif /* FPW_X86_64 */
#endif /* FASTPW_F32_AVX512_H */
