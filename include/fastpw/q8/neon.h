/*
 * fpw_q8_gemm_8x8__neon: exact int8 microkernel for every AArch64 CPU (PAIR16 format).
 *
 * Instructions: ld2 {v.8h, v.8h} splits the B row's int16 pairs into first and second
 * elements; smlal/smlal2 v.4s, v.4h/8h, v.h[lane] (vmlal_laneq_s16,
 * vmlal_high_laneq_s16) multiply them by one int16 of A and add the 32-bit products
 * into the accumulators: exact, and wrapping like the scalar kernel's int32 sums. A
 * comes as ldr q of four packed rows' pairs, or ldr s of one row's pair (rows mode).
 * The epilogue (shared with the dot-product kernel in neondot.h) uses scvtf, fmul,
 * fcvtns (round to nearest, ties to even, whatever the FPCR mode), xtn narrowing and
 * zip transposes.
 * Why widening multiply-accumulate by element: two smlal per 4 columns and pair, each
 * lane summing one product, is 4 multiply-adds per instruction and needs no reduction;
 * smull + smull2 of the interleaved pairs would need an addp and an add on top, 2 per
 * instruction. The pair split costs one ld2 per step, shared by all 8 rows.
 * Registers: 8 rows x 2 q = 16 accumulators + 2 for B + 2 for A (by-element 16-bit
 * operands must sit in v0-v15) = 20 of 32.
 * Why 8x8: smlal issues on one or two pipes with 4-cycle latency (a single cycle
 * between dependent accumulates), so 16 chains of two per step keep them busy; the
 * kernel is bound by multiply issue, not by the 3 loads per 32 smlal. 8 rows fill two
 * A vectors of a packed panel, and 8 columns keep the edge waste small for the pixel
 * counts of NCHW layers. A larger tile would not go faster, only waste more at edges.
 * Edge tiles: each mr <= 8 and 1 or 2 column vectors is its own unrolled instance; the
 * last columns of an unpadded B are loaded pair by pair (ld2 {v.h, v.h}[lane]).
 */
#ifndef FASTPW_Q8_NEON_H
#define FASTPW_Q8_NEON_H

#include "../fastpw.h"
#include "../neon_common.h"
#include "epilogue.h"

#if FPW_AARCH64
#include <arm_neon.h>

#define FPW_Q8_NEON_MR 8
#define FPW_Q8_NEON_NV 2 /* vectors of 4 int32 accumulators per tile row */
#define FPW_Q8_NEON_NR (4 * FPW_Q8_NEON_NV)

/* What the shared epilogue accepts: up to 8 rows (one zip transpose) and 16 columns. */
#define FPW_Q8_NEON_EPILOGUE_MR 8
#define FPW_Q8_NEON_EPILOGUE_NR 16

/* Store bytes [0, n) of v to p, n <= 16, in at most four stores; nothing past p + n - 1
 * is written. */
FPW_ALWAYS_INLINE void fpw_neon_store_bytes(uint8_t* p, uint8x16_t v, size_t n) {
    if (n >= 16) {
        vst1q_u8(p, v);
        return;
    }
    if (n & 8) {
        vst1_u8(p, vget_low_u8(v));
        p += 8;
        v = vextq_u8(v, v, 8);
    }
    if (n & 4) {
        const uint32_t x = vgetq_lane_u32(vreinterpretq_u32_u8(v), 0);
        memcpy(p, &x, sizeof x);
        p += 4;
        v = vextq_u8(v, v, 4);
    }
    if (n & 2) {
        const uint16_t x = vgetq_lane_u16(vreinterpretq_u16_u8(v), 0);
        memcpy(p, &x, sizeof x);
        p += 2;
        v = vextq_u8(v, v, 2);
    }
    if (n & 1) vst1q_lane_u8(p, v, 0);
}

/* The same for the bytes [0, n) of a 64-bit vector, n <= 8. */
FPW_ALWAYS_INLINE void fpw_neon_store_bytes8(uint8_t* p, uint8x8_t v, size_t n) {
    if (n >= 8) {
        vst1_u8(p, v);
        return;
    }
    if (n & 4) {
        const uint32_t x = vget_lane_u32(vreinterpret_u32_u8(v), 0);
        memcpy(p, &x, sizeof x);
        p += 4;
        v = vext_u8(v, v, 4);
    }
    if (n & 2) {
        const uint16_t x = vget_lane_u16(vreinterpret_u16_u8(v), 0);
        memcpy(p, &x, sizeof x);
        p += 2;
        v = vext_u8(v, v, 2);
    }
    if (n & 1) vst1_lane_u8(p, v, 0);
}

/* One 32-bit group at p (any alignment) in lane 0 of a 64-bit vector, zeros above: a
 * plain ldr s (any addressing mode), which the by-element multiplies read in place. A
 * 128-bit dup of it costs GCC an extra dup instruction on the vector pipes, and ld1r
 * takes only a base register. */
FPW_ALWAYS_INLINE FPW_NEON_ANY_TARGET uint32x2_t fpw_neon_load_u32_d(const uint8_t* p) {
    uint32_t x;
    memcpy(&x, p, sizeof x);
    return vcreate_u32((uint64_t)x);
}

/* In-register transpose of 8 rows of 16 bytes: afterwards d[k] holds column 2k in its
 * low 8 bytes and column 2k + 1 in its high 8 bytes (rows 0..7 in order). Three rounds
 * of zips, 24 instructions for 128 bytes. */
FPW_ALWAYS_INLINE void fpw_neon_transpose_8x16_u8(const uint8x16_t r[8], uint8x16_t d[8]) {
    uint16x8_t b[8];
    uint32x4_t c[8];
    FPW_UNROLL for (int k = 0; k < 4; k++) {
        b[2 * k] = vreinterpretq_u16_u8(vzip1q_u8(r[2 * k], r[2 * k + 1]));     /* columns 0..7 */
        b[2 * k + 1] = vreinterpretq_u16_u8(vzip2q_u8(r[2 * k], r[2 * k + 1])); /* columns 8..15 */
    }
    /* c[0..3]: rows 0-3 / 4-7 of columns 0-3 and 4-7; c[4..7]: the same for 8-15. */
    FPW_UNROLL for (int h = 0; h < 2; h++) {
        c[4 * h + 0] = vreinterpretq_u32_u16(vzip1q_u16(b[h], b[h + 2]));
        c[4 * h + 1] = vreinterpretq_u32_u16(vzip2q_u16(b[h], b[h + 2]));
        c[4 * h + 2] = vreinterpretq_u32_u16(vzip1q_u16(b[h + 4], b[h + 6]));
        c[4 * h + 3] = vreinterpretq_u32_u16(vzip2q_u16(b[h + 4], b[h + 6]));
    }
    FPW_UNROLL for (int h = 0; h < 2; h++) {
        d[4 * h + 0] = vreinterpretq_u8_u32(vzip1q_u32(c[4 * h + 0], c[4 * h + 2]));
        d[4 * h + 1] = vreinterpretq_u8_u32(vzip2q_u32(c[4 * h + 0], c[4 * h + 2]));
        d[4 * h + 2] = vreinterpretq_u8_u32(vzip1q_u32(c[4 * h + 1], c[4 * h + 3]));
        d[4 * h + 3] = vreinterpretq_u8_u32(vzip2q_u32(c[4 * h + 1], c[4 * h + 3]));
    }
}

/* The epilogue's constants, copied out of the tile once: read through `t`, the compiler
 * would reload them after every byte store (a char store may alias anything). */
typedef struct fpw_q8_neon_requant {
    int out_type, clamp, per_row;
    float32x4_t lo, hi;
    int32x4_t zero_point;
} fpw_q8_neon_requant;

/* One vector of 4 accumulators (bias added) through the epilogue, as fpw_q8_store_one
 * does it: the final values as int32 lanes (8-bit and int32 outputs) or float lanes
 * (float32 output). float(acc) * scale is one rounding each way, as in C. */
FPW_ALWAYS_INLINE int32x4_t fpw_q8_neon_finish(const fpw_q8_neon_requant* r, int32x4_t acc,
                                               float32x4_t scale) {
    if (r->out_type == FPW_Q8_OUT_S32) return acc;
    float32x4_t v = vmulq_f32(vcvtq_f32_s32(acc), scale);
    if (r->out_type == FPW_Q8_OUT_F32) {
        if (r->clamp) v = fpw_neon_clamp_f32(v, r->lo, r->hi);
        return vreinterpretq_s32_f32(v);
    }
    /* fcvtns rounds half to even like fpw_round_half_even (|v| <= 255 once clamped). */
    v = fpw_neon_clamp_f32(v, r->lo, r->hi);
    return vaddq_s32(vcvtnq_s32_f32(v), r->zero_point);
}

/* Finished lanes of tile row i: y[v] holds columns 4v..4v+3 for v < nv (others zero).
 * col_bias/col_scale: the per-column vectors, loaded once per tile. */
FPW_ALWAYS_INLINE void fpw_q8_neon_finish_row(const fpw_q8_tile* t, const fpw_q8_neon_requant* r,
                                              const int32_t* tile_row, size_t i, size_t nv,
                                              const int32x4_t col_bias[4], const float32x4_t col_scale[4],
                                              int32x4_t y[4]) {
    int32x4_t row_bias = vdupq_n_s32(0);
    float32x4_t row_scale = vdupq_n_f32(0.0f);
    if (r->per_row) {
        if (t->bias) row_bias = vdupq_n_s32(t->bias[i]);
        if (r->out_type != FPW_Q8_OUT_S32) row_scale = vdupq_n_f32(t->scale[i]);
    }
    FPW_UNROLL for (int v = 0; v < 4; v++) {
        if ((size_t)v < nv) {
            /* vaddq_s32 wraps, as the scalar kernel's bias add does. */
            const int32x4_t acc = vaddq_s32(vld1q_s32(tile_row + 4 * v), r->per_row ? row_bias : col_bias[v]);
            y[v] = fpw_q8_neon_finish(r, acc, r->per_row ? row_scale : col_scale[v]);
        } else {
            y[v] = vdupq_n_s32(0);
        }
    }
}

/* 16 finished int32 lanes to 16 bytes. xtn truncates, which is exactly the (uint8_t) or
 * (int8_t) cast of the scalar kernel (the same bits for U8 and S8); the clamp already
 * put every value in range, so saturation would change nothing there. */
FPW_ALWAYS_INLINE uint8x16_t fpw_q8_neon_narrow(const int32x4_t y[4]) {
    const int16x8_t low = vmovn_high_s32(vmovn_s32(y[0]), y[1]);
    const int16x8_t high = vmovn_high_s32(vmovn_s32(y[2]), y[3]);
    return vreinterpretq_u8_s8(vmovn_high_s16(vmovn_s16(low), high));
}

/* Bias, requantization and stores for a finished tile of accumulators: `tile` holds mr
 * rows of tile_rs int32 (tile_rs a multiple of 4, nr <= tile_rs <= 16, mr <= 8). Both
 * NEON int8 kernels end here, out of line: keeping the output-type cases out of the
 * kernels lets their accumulators stay in registers. */
static __attribute__((noinline)) void fpw_q8_neon_epilogue(const fpw_q8_tile* t, const int32_t* tile,
                                                           size_t tile_rs) {
    const fpw_q8_neon_requant r = {
        .out_type = t->out_type,
        .clamp = t->clamp,
        .per_row = t->per_row,
        .lo = vdupq_n_f32(t->lo),
        .hi = vdupq_n_f32(t->hi),
        .zero_point = vdupq_n_s32(t->zero_point),
    };
    const size_t mr = t->mr, nr = t->nr, nv = (nr + 3) / 4;
    const ptrdiff_t c_rs = t->c_rs, c_cs = t->c_cs;
    const int bytes_out = r.out_type == FPW_Q8_OUT_U8 || r.out_type == FPW_Q8_OUT_S8;
    /* Per-column bias and scale: lanes past nr are never read. No scale is read for
     * int32 output, and a NULL bias counts as zeros. */
    int32x4_t col_bias[4];
    float32x4_t col_scale[4];
    FPW_UNROLL for (int v = 0; v < 4; v++) {
        col_bias[v] = vdupq_n_s32(0);
        col_scale[v] = vdupq_n_f32(0.0f);
        if (r.per_row || (size_t)v >= nv) continue;
        const size_t lanes = nr - 4 * (size_t)v < 4 ? nr - 4 * (size_t)v : 4;
        if (t->bias) col_bias[v] = vreinterpretq_s32_u32(fpw_neon_load_lanes32(t->bias + 4 * v, lanes));
        if (r.out_type != FPW_Q8_OUT_S32)
            col_scale[v] = vreinterpretq_f32_u32(fpw_neon_load_lanes32(t->scale + 4 * v, lanes));
    }

    if (c_cs == 1) {
        for (size_t i = 0; i < mr; i++) {
            int32x4_t y[4];
            fpw_q8_neon_finish_row(t, &r, tile + i * tile_rs, i, nv, col_bias, col_scale, y);
            if (bytes_out) {
                fpw_neon_store_bytes((uint8_t*)t->c + (ptrdiff_t)i * c_rs, fpw_q8_neon_narrow(y), nr);
            } else { /* int32 and float32 lanes are both 32-bit */
                int32_t* c_row = (int32_t*)t->c + (ptrdiff_t)i * c_rs;
                FPW_UNROLL for (int v = 0; v < 4; v++) {
                    if ((size_t)v < nv)
                        fpw_neon_store_lanes32(c_row + 4 * v, vreinterpretq_u32_s32(y[v]),
                                               nr - 4 * (size_t)v < 4 ? nr - 4 * (size_t)v : 4);
                }
            }
        }
    } else if (bytes_out && c_rs == 1) {
        /* Transposed bytes (NCHW with pixels as rows): the tile narrows to 16-byte rows,
         * is transposed in registers, and each output channel's run of mr pixels goes
         * out in one to three stores. Byte-by-byte stores would flood the store queue
         * (the x86 kernels measured half the speed on 7x7 NCHW layers that way). */
        uint8x16_t rows[8], columns[8];
        FPW_UNROLL for (int i = 0; i < 8; i++) {
            if ((size_t)i < mr) {
                int32x4_t y[4];
                fpw_q8_neon_finish_row(t, &r, tile + (size_t)i * tile_rs, (size_t)i, nv, col_bias, col_scale,
                                       y);
                rows[i] = fpw_q8_neon_narrow(y);
            } else {
                rows[i] = vdupq_n_u8(0);
            }
        }
        fpw_neon_transpose_8x16_u8(rows, columns);
        FPW_UNROLL for (int j = 0; j < 16; j++) {
            if ((size_t)j >= nr) break;
            const uint8x8_t column = (j & 1) ? vget_high_u8(columns[j / 2]) : vget_low_u8(columns[j / 2]);
            fpw_neon_store_bytes8((uint8_t*)t->c + (ptrdiff_t)j * c_cs, column, mr);
        }
    } else {
        /* Other transposed outputs: finish into a row-major buffer, then scatter. */
        union {
            uint8_t bytes[FPW_Q8_NEON_EPILOGUE_MR][FPW_Q8_NEON_EPILOGUE_NR];
            int32_t words[FPW_Q8_NEON_EPILOGUE_MR][FPW_Q8_NEON_EPILOGUE_NR];
        } finished;
        for (size_t i = 0; i < mr; i++) {
            int32x4_t y[4];
            fpw_q8_neon_finish_row(t, &r, tile + i * tile_rs, i, nv, col_bias, col_scale, y);
            if (bytes_out) {
                vst1q_u8(finished.bytes[i], fpw_q8_neon_narrow(y));
            } else {
                FPW_UNROLL for (int v = 0; v < 4; v++) vst1q_s32(&finished.words[i][4 * v], y[v]);
            }
        }
        fpw_q8_store_transposed(t, bytes_out ? (const void*)finished.bytes : (const void*)finished.words,
                                FPW_Q8_NEON_EPILOGUE_NR);
    }
}

/* acc + b * a[lane] (4 lanes of int16 widened to int32), and the same on the high half
 * of b. Lanes must be immediates: the switches fold once the unrolled callers make them
 * constants, and keep -O0 builds compiling. */
FPW_ALWAYS_INLINE int32x4_t fpw_neon_mlal_lane(int32x4_t acc, int16x4_t b, int16x8_t a, int lane) {
    switch (lane) {
        case 0:
            return vmlal_laneq_s16(acc, b, a, 0);
        case 1:
            return vmlal_laneq_s16(acc, b, a, 1);
        case 2:
            return vmlal_laneq_s16(acc, b, a, 2);
        case 3:
            return vmlal_laneq_s16(acc, b, a, 3);
        case 4:
            return vmlal_laneq_s16(acc, b, a, 4);
        case 5:
            return vmlal_laneq_s16(acc, b, a, 5);
        case 6:
            return vmlal_laneq_s16(acc, b, a, 6);
        default:
            return vmlal_laneq_s16(acc, b, a, 7);
    }
}

FPW_ALWAYS_INLINE int32x4_t fpw_neon_mlal_high_lane(int32x4_t acc, int16x8_t b, int16x8_t a, int lane) {
    switch (lane) {
        case 0:
            return vmlal_high_laneq_s16(acc, b, a, 0);
        case 1:
            return vmlal_high_laneq_s16(acc, b, a, 1);
        case 2:
            return vmlal_high_laneq_s16(acc, b, a, 2);
        case 3:
            return vmlal_high_laneq_s16(acc, b, a, 3);
        case 4:
            return vmlal_high_laneq_s16(acc, b, a, 4);
        case 5:
            return vmlal_high_laneq_s16(acc, b, a, 5);
        case 6:
            return vmlal_high_laneq_s16(acc, b, a, 6);
        default:
            return vmlal_high_laneq_s16(acc, b, a, 7);
    }
}

/* Pairs [0, n) of a PAIR16 B row, split into first (val[0]) and second (val[1])
 * elements, zeros above; n < 8. Lane loads, so nothing past pair n - 1 is read. */
FPW_ALWAYS_INLINE int16x8x2_t fpw_q8_neon_load_pairs(const int16_t* p, size_t n) {
    int16x8x2_t r = {{vdupq_n_s16(0), vdupq_n_s16(0)}};
    switch (n) {
        case 7:
            r = vld2q_lane_s16(p + 12, r, 6);
            /* fall through */
        case 6:
            r = vld2q_lane_s16(p + 10, r, 5);
            /* fall through */
        case 5:
            r = vld2q_lane_s16(p + 8, r, 4);
            /* fall through */
        case 4:
            r = vld2q_lane_s16(p + 6, r, 3);
            /* fall through */
        case 3:
            r = vld2q_lane_s16(p + 4, r, 2);
            /* fall through */
        case 2:
            r = vld2q_lane_s16(p + 2, r, 1);
            /* fall through */
        case 1:
            r = vld2q_lane_s16(p, r, 0);
            /* fall through */
        default:
            break;
    }
    return r;
}

/* PAIR16: A(i, c) is the int16 pair at a + i*a_rs + c*a_cs, B(c, j) the pair at
 * b + c*b_rs + 4j, acc(i, j) += A0*B0 + A1*B1 (a_tail, a_is_data and a_flip_sign are
 * DOT4 matters; the scalar PAIR16 kernel ignores them too). A_ROWS: one ldr s per row and
 * step. Otherwise a_rs == 4: the pairs of rows 4q..4q+3 are 16 consecutive bytes, one
 * ldr q (never past row mr - 1: rows past the last full four are loaded one by one). */
FPW_ALWAYS_INLINE void fpw_q8_tile_neon(const fpw_q8_tile* t, const int MR, const int NV, const int A_ROWS) {
    int32x4_t acc[FPW_Q8_NEON_MR][FPW_Q8_NEON_NV];
    FPW_UNROLL for (int i = 0; i < MR; i++) {
        FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = vdupq_n_s32(0);
    }
    const size_t nr = t->nr;
    const int full_loads = t->b_padded || nr == (size_t)(4 * NV);
    const uint8_t* a = t->a;
    const uint8_t* b = t->b;
    const uint8_t* a_row[FPW_Q8_NEON_MR];
    FPW_UNROLL for (int i = 0; i < MR; i++) a_row[i] = t->a + (ptrdiff_t)i * t->a_rs;
    const ptrdiff_t a_cs = t->a_cs, b_rs = t->b_rs;
    ptrdiff_t a_offset = 0;
    for (size_t k = 0; k < t->kc; k++) {
        int16x8x2_t b_pairs;
        if (!full_loads) {
            b_pairs = fpw_q8_neon_load_pairs((const int16_t*)b, nr);
        } else if (NV == 2) {
            b_pairs = vld2q_s16((const int16_t*)b);
        } else {
            const int16x4x2_t half = vld2_s16((const int16_t*)b);
            b_pairs.val[0] = vcombine_s16(half.val[0], half.val[0]);
            b_pairs.val[1] = vcombine_s16(half.val[1], half.val[1]);
        }
        int16x8_t a_quad[FPW_Q8_NEON_MR / 4];
        if (!A_ROWS) {
            FPW_UNROLL for (int q = 0; q < MR / 4; q++) a_quad[q] = vld1q_s16((const int16_t*)(a + 16 * q));
        }
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            if (A_ROWS || i >= MR / 4 * 4) {
                const int16x4_t a_pair =
                    vreinterpret_s16_u32(fpw_neon_load_u32_d(A_ROWS ? a_row[i] + a_offset : a + 4 * i));
                acc[i][0] = vmlal_lane_s16(acc[i][0], vget_low_s16(b_pairs.val[0]), a_pair, 0);
                acc[i][0] = vmlal_lane_s16(acc[i][0], vget_low_s16(b_pairs.val[1]), a_pair, 1);
                if (NV == 2) {
                    acc[i][1] = vmlal_high_lane_s16(acc[i][1], b_pairs.val[0], a_pair, 0);
                    acc[i][1] = vmlal_high_lane_s16(acc[i][1], b_pairs.val[1], a_pair, 1);
                }
            } else {
                const int16x8_t a_vec = a_quad[i / 4];
                const int lane = 2 * (i % 4);
                acc[i][0] = fpw_neon_mlal_lane(acc[i][0], vget_low_s16(b_pairs.val[0]), a_vec, lane);
                acc[i][0] = fpw_neon_mlal_lane(acc[i][0], vget_low_s16(b_pairs.val[1]), a_vec, lane + 1);
                if (NV == 2) {
                    acc[i][1] = fpw_neon_mlal_high_lane(acc[i][1], b_pairs.val[0], a_vec, lane);
                    acc[i][1] = fpw_neon_mlal_high_lane(acc[i][1], b_pairs.val[1], a_vec, lane + 1);
                }
            }
        }
        a += a_cs;
        a_offset += a_cs;
        b += b_rs;
    }
    int32_t tile[FPW_Q8_NEON_MR][FPW_Q8_NEON_NR] __attribute__((aligned(16)));
    FPW_UNROLL for (int i = 0; i < MR; i++) {
        FPW_UNROLL for (int v = 0; v < NV; v++) vst1q_s32(&tile[i][4 * v], acc[i][v]);
    }
    fpw_q8_neon_epilogue(t, &tile[0][0], FPW_Q8_NEON_NR);
}

#define FPW_Q8_NEON_CASE(MR)                                                                                 \
    case MR:                                                                                                 \
        if (a_rows) {                                                                                        \
            if (nv == 2)                                                                                     \
                fpw_q8_tile_neon(t, MR, 2, 1);                                                               \
            else                                                                                             \
                fpw_q8_tile_neon(t, MR, 1, 1);                                                               \
        } else {                                                                                             \
            if (nv == 2)                                                                                     \
                fpw_q8_tile_neon(t, MR, 2, 0);                                                               \
            else                                                                                             \
                fpw_q8_tile_neon(t, MR, 1, 0);                                                               \
        }                                                                                                    \
        break;

static void fpw_q8_gemm_8x8__neon(const fpw_q8_tile* t) {
    const int a_rows = t->a_rs != 4;
    const int nv = t->nr > 4 ? 2 : 1;
    switch (t->mr) {
        FPW_Q8_NEON_CASE(8)
        FPW_Q8_NEON_CASE(7)
        FPW_Q8_NEON_CASE(6)
        FPW_Q8_NEON_CASE(5)
        FPW_Q8_NEON_CASE(4)
        FPW_Q8_NEON_CASE(3)
        FPW_Q8_NEON_CASE(2)
        FPW_Q8_NEON_CASE(1)
        default:
            break;
    }
}
#undef FPW_Q8_NEON_CASE

/* Peak-throughput probe: the kernel's smlal on 16 independent chains in registers (smlal
 * accumulates in place, so it cannot be hoisted). Returns ops: 4 products per smlal, 2
 * ops each. */
static double fpw_q8_peak_loop__neon(long iterations) {
    int32x4_t acc[16];
    const int16x4_t a = vdup_n_s16(3), b = vdup_n_s16(-5);
    FPW_UNROLL for (int i = 0; i < 16; i++) acc[i] = vdupq_n_s32(i);
    for (long n = 0; n < iterations; n++) {
        FPW_UNROLL for (int i = 0; i < 16; i++) acc[i] = vmlal_s16(acc[i], a, b);
    }
    int32x4_t sum = acc[0];
    FPW_UNROLL for (int i = 1; i < 16; i++) sum = vaddq_s32(sum, acc[i]);
    volatile int sink = vaddvq_s32(sum);
    (void)sink;
    return 16.0 * 4.0 * 2.0 * (double)iterations;
}

static const fpw_q8_ukernel fpw_q8_ukernel__neon = FPW_Q8_UKERNEL(
    fpw_q8_gemm_8x8__neon, FPW_Q8_NEON_MR, FPW_Q8_NEON_NR, 4, FPW_Q8_PAIR16, 0, fpw_q8_peak_loop__neon);

#endif /* FPW_AARCH64 */
#endif /* FASTPW_Q8_NEON_H */
