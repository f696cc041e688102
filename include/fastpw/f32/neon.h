/*
 * fpw_f32_gemm_8x12__neon: AArch64 Advanced SIMD (NEON) float32 microkernel family.
 *
 * Instructions: ldr q of four packed A values feeding fmla v.4s, v.4s, v.s[lane]
 * (vfmaq_laneq_f32: the broadcast is free inside the FMA), ldr s + fmla by element for A
 * rows (NHWC) and for the rows of a packed panel past the last full group of four, ldr q
 * for B, and lane loads/stores (ld1/st1 {v.s}[n]) for the last partial vector of an
 * unpadded B, bias or C row. Armv8.0 only: every AArch64 CPU runs it.
 * Registers: 8 rows x 3 q = 24 accumulators + 3 for the B row + 2 for A = 29 of the 32
 * v registers.
 * Why 8x12: fmla has a 4-cycle latency and cores issue two (Cortex-A76, Neoverse N1) to
 * four (Neoverse V1/V2) of them per cycle, so up to 16 independent chains are needed; 24
 * cover that on every core with room to spare. Each step issues 24 FMAs for 5 vector
 * loads (2 A + 3 B) from packed panels, far inside two loads per cycle. 8 rows fill
 * exactly two A vectors of a packed panel. The wider-than-tall shape is chosen for A
 * rows, which cost one scalar load per row: 8 + 3 loads per 24 FMAs, where 12x8 would
 * need 12 + 2. 8x16 (32 accumulators) leaves no register for B.
 * Edge tiles: every mr <= 8 and 1, 2 or 3 column vectors get their own unrolled
 * instance; a partial last vector of B is loaded lane by lane unless B is padded.
 * Clamp: compare and select (fcmgt + bsl) instead of fmax/fmin, so results are bitwise
 * those of the scalar kernel and of x86 maxps(lo, y)/minps(hi, y): a NaN y propagates,
 * and -0.0 is kept at lo == 0, where fmax would return +0.0. Two instructions more per
 * vector, once per tile.
 */
#ifndef FASTPW_F32_NEON_H
#define FASTPW_F32_NEON_H

#include "../fastpw.h"
#include "../neon_common.h"

#if FPW_AARCH64
#include <arm_neon.h>

#define FPW_NEON_MR 8
#define FPW_NEON_NV 3 /* vectors of 4 floats per tile row */
#define FPW_NEON_NR (4 * FPW_NEON_NV)

/* acc + b * a[lane], one rounding. The lane must be an immediate: the switch folds away
 * once the caller's unrolled loops make it a constant, and keeps -O0 builds compiling. */
FPW_ALWAYS_INLINE float32x4_t fpw_neon_fma_lane(float32x4_t acc, float32x4_t b, float32x4_t a, int lane) {
    switch (lane) {
        case 0:
            return vfmaq_laneq_f32(acc, b, a, 0);
        case 1:
            return vfmaq_laneq_f32(acc, b, a, 1);
        case 2:
            return vfmaq_laneq_f32(acc, b, a, 2);
        default:
            return vfmaq_laneq_f32(acc, b, a, 3);
    }
}

/* MR, NV and A_ROWS are compile-time constants at every call site, so the loops unroll
 * completely and acc[][] lives in registers. A_ROWS: A(i, c) = a[i*a_rs + c*a_cs] read
 * one float per row (NHWC pixel rows, a_cs == 1). Otherwise a_rs == 1: the MR values of
 * a step are consecutive, loaded four at a time (never past row mr - 1). Both forms add
 * fma(A(i, c), B(c, j), acc) for c = 0, 1, ..., so every mode and every tile cut gives
 * bitwise the same results. */
FPW_ALWAYS_INLINE void fpw_f32_tile_neon(const fpw_f32_tile* t, const int MR, const int NV,
                                         const int A_ROWS) {
    float32x4_t acc[FPW_NEON_MR][FPW_NEON_NV];
    const size_t nr = t->nr;
    const size_t last = nr - 4 * (size_t)(NV - 1); /* columns in the last vector, 1..4 */
    const ptrdiff_t c_rs = t->c_rs, c_cs = t->c_cs;
    if (!t->accumulate) {
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = vdupq_n_f32(0.0f);
        }
    } else if (c_cs == 1) {
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            const float* c_row = t->c + (ptrdiff_t)i * c_rs;
            FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                v < NV - 1 ? vld1q_f32(c_row + 4 * v)
                           : vreinterpretq_f32_u32(fpw_neon_load_lanes32(c_row + 4 * v, last));
        }
    } else {
        float tile[FPW_NEON_MR][FPW_NEON_NR] = {{0.0f}};
        for (size_t j = 0; j < nr; j++) {
            const float* c_col = t->c + (ptrdiff_t)j * c_cs;
            for (int i = 0; i < MR; i++) tile[i][j] = c_col[(ptrdiff_t)i * c_rs];
        }
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = vld1q_f32(&tile[i][4 * v]);
        }
    }

    /* Full vectors of B when the panel is padded or nr fills them; else the last one is
     * loaded lane by lane, so no column at or past nr is read. The test is loop
     * invariant: one predicted branch per step, cheaper than twice the instances. */
    const int full_loads = t->b_padded || last == 4;
    const float* a = t->a;
    const float* b = t->b;
    const float* a_row[FPW_NEON_MR];
    FPW_UNROLL for (int i = 0; i < MR; i++) a_row[i] = t->a + (ptrdiff_t)i * t->a_rs;
    const ptrdiff_t a_cs = t->a_cs, b_rs = t->b_rs;
    ptrdiff_t a_offset = 0;
    for (size_t k = 0; k < t->kc; k++) {
        float32x4_t b_vec[FPW_NEON_NV];
        FPW_UNROLL for (int v = 0; v < NV; v++) b_vec[v] =
            (v < NV - 1 || full_loads) ? vld1q_f32(b + 4 * v)
                                       : vreinterpretq_f32_u32(fpw_neon_load_lanes32(b + 4 * v, last));
        if (A_ROWS) {
            /* GCC's pre-allocation scheduler hoists all MR scalar loads to the top of the
             * step, and 8 of them on top of 24 accumulators and 3 B vectors spill two
             * accumulators every step. The empty asm makes row i's offset depend on row
             * i - 1's last FMA, so one A value is live at a time (out-of-order cores run
             * ahead regardless; in-order ones wait out one load per row). */
            ptrdiff_t offset = a_offset;
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                if (i >= 1) __asm__("" : "+r"(offset) : "w"(acc[i - 1][NV - 1]));
                const float a_value = a_row[i][offset];
                FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = vfmaq_n_f32(acc[i][v], b_vec[v], a_value);
            }
            a_offset += a_cs;
        } else {
            float32x4_t a_vec[FPW_NEON_MR / 4];
            FPW_UNROLL for (int q = 0; q < MR / 4; q++) a_vec[q] = vld1q_f32(a + 4 * q);
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                if (i < MR / 4 * 4) {
                    FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                        fpw_neon_fma_lane(acc[i][v], b_vec[v], a_vec[i / 4], i % 4);
                } else {
                    const float a_value = a[i];
                    FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                        vfmaq_n_f32(acc[i][v], b_vec[v], a_value);
                }
            }
            a += a_cs;
        }
        b += b_rs;
    }

    if (t->finish && t->bias) {
        if (t->bias_on_rows) {
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                const float32x4_t bias = vdupq_n_f32(t->bias[i]);
                FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = vaddq_f32(acc[i][v], bias);
            }
        } else {
            float32x4_t bias[FPW_NEON_NV];
            FPW_UNROLL for (int v = 0; v < NV; v++) bias[v] =
                v < NV - 1 ? vld1q_f32(t->bias + 4 * v)
                           : vreinterpretq_f32_u32(fpw_neon_load_lanes32(t->bias + 4 * v, last));
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = vaddq_f32(acc[i][v], bias[v]);
            }
        }
    }
    if (t->finish && t->clamp) {
        const float32x4_t lo = vdupq_n_f32(t->lo), hi = vdupq_n_f32(t->hi);
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = fpw_neon_clamp_f32(acc[i][v], lo, hi);
        }
    }
    if (c_cs == 1) {
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            float* c_row = t->c + (ptrdiff_t)i * c_rs;
            FPW_UNROLL for (int v = 0; v < NV; v++) {
                if (v < NV - 1)
                    vst1q_f32(c_row + 4 * v, acc[i][v]);
                else
                    fpw_neon_store_lanes32(c_row + 4 * v, vreinterpretq_u32_f32(acc[i][v]), last);
            }
        }
    } else {
        /* Transposed store: column j of the tile is a run of mr floats when c_rs == 1. */
        float tile[FPW_NEON_MR][FPW_NEON_NR];
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            FPW_UNROLL for (int v = 0; v < NV; v++) vst1q_f32(&tile[i][4 * v], acc[i][v]);
        }
        const size_t columns = nr < (size_t)(4 * NV) ? nr : (size_t)(4 * NV); /* nr; tells GCC the bound */
        for (size_t j = 0; j < columns; j++) {
            float* c_col = t->c + (ptrdiff_t)j * c_cs;
            for (int i = 0; i < MR; i++) c_col[(ptrdiff_t)i * c_rs] = tile[i][j];
        }
    }
}

#define FPW_NEON_CASE(MR)                                                                                    \
    case MR:                                                                                                 \
        if (a_rows) {                                                                                        \
            if (nv == 3)                                                                                     \
                fpw_f32_tile_neon(t, MR, 3, 1);                                                              \
            else if (nv == 2)                                                                                \
                fpw_f32_tile_neon(t, MR, 2, 1);                                                              \
            else                                                                                             \
                fpw_f32_tile_neon(t, MR, 1, 1);                                                              \
        } else {                                                                                             \
            if (nv == 3)                                                                                     \
                fpw_f32_tile_neon(t, MR, 3, 0);                                                              \
            else if (nv == 2)                                                                                \
                fpw_f32_tile_neon(t, MR, 2, 0);                                                              \
            else                                                                                             \
                fpw_f32_tile_neon(t, MR, 1, 0);                                                              \
        }                                                                                                    \
        break;

static void fpw_f32_gemm_8x12__neon_one(const fpw_f32_tile* t) {
    const int a_rows = t->a_rs != 1;
    const int nv = t->nr > 8 ? 3 : t->nr > 4 ? 2 : 1;
    switch (t->mr) {
        FPW_NEON_CASE(8)
        FPW_NEON_CASE(7)
        FPW_NEON_CASE(6)
        FPW_NEON_CASE(5)
        FPW_NEON_CASE(4)
        FPW_NEON_CASE(3)
        FPW_NEON_CASE(2)
        FPW_NEON_CASE(1)
        default:
            break;
    }
}

static void fpw_f32_gemm_8x12__neon(const fpw_f32_tile* t) {
    fpw_f32_each_tile(t, FPW_NEON_NR, fpw_f32_gemm_8x12__neon_one);
}
#undef FPW_NEON_CASE

/* Peak-throughput probe: 24 independent FMA chains on registers only (the tile's
 * accumulator count; 16 are enough for four 4-cycle pipes). The accumulator is the
 * addend, so each step is one fmla in place. Returns flops. */
static double fpw_fma_peak_loop__neon(long iterations) {
    float32x4_t acc[24];
    const float32x4_t x = vdupq_n_f32(0.999999f), y = vdupq_n_f32(1e-7f);
    FPW_UNROLL for (int i = 0; i < 24; i++) acc[i] = vdupq_n_f32((float)i);
    for (long n = 0; n < iterations; n++) {
        FPW_UNROLL for (int i = 0; i < 24; i++) acc[i] = vfmaq_f32(acc[i], x, y);
    }
    float32x4_t sum = acc[0];
    FPW_UNROLL for (int i = 1; i < 24; i++) sum = vaddq_f32(sum, acc[i]);
    volatile float sink = vaddvq_f32(sum);
    (void)sink;
    return 24.0 * 4.0 * 2.0 * (double)iterations;
}

static const fpw_f32_ukernel fpw_f32_ukernel__neon =
    FPW_F32_UKERNEL(fpw_f32_gemm_8x12__neon, FPW_NEON_MR, FPW_NEON_NR, 4, fpw_fma_peak_loop__neon);

#endif /* FPW_AARCH64 */
#endif /* FASTPW_F32_NEON_H */
