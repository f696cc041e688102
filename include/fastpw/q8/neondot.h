/*
 * fpw_q8_gemm_8x12__neondot: int8 microkernel for the Armv8.2 dot product (DOT4 format).
 *
 * Instructions: sdot v.4s, v.16b, v.4b[lane] (vdotq_laneq_s32: each int32 lane adds the
 * four int8 x int8 products of one column's group with one row's group: exact, no
 * saturating intermediate), ldr q of four packed rows' groups or ldr s of one row's group
 * (rows mode), ldr q / lane loads of B; the epilogue is neon.h's (scvtf, fmul, fcvtns,
 * xtn, zip transposes).
 * Both sdot operands are signed, unlike vpdpbusd: A's bytes are read as int8 (after the
 * XOR 0x80 of a_flip_sign, which turns uint8 activations into x - 128), and the plan
 * folds +128 * sum(w) into the bias. a_is_data only says which side holds the
 * activations; the arithmetic is the same either way.
 * Registers: 8 rows x 3 q = 24 accumulators + 3 for B + 2 for A = 29 of 32.
 * Why 8x12: the float32 kernel's reasoning. sdot has a 2-3 cycle latency on two (A76,
 * N1) to four (V1) pipes, so 24 independent chains hide it everywhere; each step
 * issues 24 sdot for 5 loads from packed panels, or 8 + 3 for NHWC rows read in place
 * (12x8 would need 12 + 2).
 * Target: only the functions that execute sdot carry the dot-product target, so this
 * header is safe in a baseline Armv8.0 build; the caller checks HWCAP_ASIMDDP.
 */
#ifndef FASTPW_Q8_NEONDOT_H
#define FASTPW_Q8_NEONDOT_H

#include "../fastpw.h"
#include "../neon_common.h"
#include "epilogue.h"
#include "neon.h"

#if FPW_AARCH64
#include <arm_neon.h>

/* GCC 12's arm_neon.h declares the vdotq_* intrinsics under
 * `target("arch=armv8.2-a+dotprod")`, and an always_inline function inlines only into one
 * whose target includes all of its own: "+dotprod" alone fails on an Armv8.0 build
 * ("target specific option mismatch"), so GCC gets the "arch=" form. That form replaces
 * the build's architecture for these functions, which is why the baseline helpers they
 * inline carry FPW_NEON_ANY_TARGET (see neon_common.h). */
#if defined(__ARM_FEATURE_DOTPROD)
#define FPW_Q8_NEONDOT_TARGET /* the whole build has it */
#elif defined(__clang__)
#define FPW_Q8_NEONDOT_TARGET __attribute__((target("dotprod")))
#else
#define FPW_Q8_NEONDOT_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

#define FPW_Q8_NEONDOT_MR 8
#define FPW_Q8_NEONDOT_NV 3 /* vectors of 4 int32 accumulators (4 groups of B) per row */
#define FPW_Q8_NEONDOT_NR (4 * FPW_Q8_NEONDOT_NV)

/* acc + dot(b's groups, a's group `lane`). The lane must be an immediate: the switch
 * folds once the unrolled callers make it a constant, and keeps -O0 builds compiling. */
FPW_ALWAYS_INLINE FPW_Q8_NEONDOT_TARGET int32x4_t fpw_neondot_lane(int32x4_t acc, int8x16_t b, int8x16_t a,
                                                                   int lane) {
    switch (lane) {
        case 0:
            return vdotq_laneq_s32(acc, b, a, 0);
        case 1:
            return vdotq_laneq_s32(acc, b, a, 1);
        case 2:
            return vdotq_laneq_s32(acc, b, a, 2);
        default:
            return vdotq_laneq_s32(acc, b, a, 3);
    }
}

/* DOT4: A(i, c) is the group at a + i*a_rs + c*a_cs, B(c, j) the group at
 * b + c*b_rs + 4j. A_ROWS: one ldr s per row and step (NHWC pixel rows read in place).
 * Otherwise a_rs == 4: the groups of rows 4q..4q+3 are 16 consecutive bytes, one ldr q
 * (never past row mr - 1: rows past the last full four are loaded one by one). FLIP:
 * XOR A's bytes with 0x80.
 * A partial last group (a_tail bytes, NHWC rows whose channel count is not a multiple
 * of 4) runs as a second pass of the same loop over a padded copy of those bytes: one
 * loop nest keeps the accumulators in registers. The copy is padded with bytes that
 * are 0 after the flip, so the result does not depend on B's padding either. */
FPW_ALWAYS_INLINE FPW_Q8_NEONDOT_TARGET void fpw_q8_tile_neondot(const fpw_q8_tile* t, const int MR,
                                                                 const int NV, const int A_ROWS,
                                                                 const int FLIP) {
    int32x4_t acc[FPW_Q8_NEONDOT_MR][FPW_Q8_NEONDOT_NV];
    FPW_UNROLL for (int i = 0; i < MR; i++) {
        FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = vdupq_n_s32(0);
    }
    const int8x16_t sign_bits = vdupq_n_s8((int8_t)-128);
    const size_t nr = t->nr;
    const size_t last = nr - 4 * (size_t)(NV - 1); /* columns in the last vector, 1..4 */
    const int full_loads = t->b_padded || last == 4;
    const uint8_t* a = t->a;
    const uint8_t* b = t->b;
    ptrdiff_t a_rs = t->a_rs;
    const ptrdiff_t a_cs = t->a_cs, b_rs = t->b_rs;
    uint32_t tail[FPW_Q8_NEONDOT_MR] __attribute__((aligned(16)));
    size_t steps = t->kc;
    for (int pass = 0; pass < 2; pass++) {
        const uint8_t* a_row[FPW_Q8_NEONDOT_MR];
        FPW_UNROLL for (int i = 0; i < MR; i++) a_row[i] = a + (ptrdiff_t)i * a_rs;
        ptrdiff_t a_offset = 0;
        for (size_t k = 0; k < steps; k++) {
            int8x16_t b_vec[FPW_Q8_NEONDOT_NV];
            FPW_UNROLL for (int v = 0; v < NV; v++) b_vec[v] =
                (v < NV - 1 || full_loads) ? vld1q_s8((const int8_t*)b + 16 * v)
                                           : vreinterpretq_s8_u32(fpw_neon_load_lanes32(b + 16 * v, last));
            if (A_ROWS) {
                /* As in the float32 kernel: without the empty asm, GCC's pre-allocation
                 * scheduler hoists all 8 row loads above the sdot and spills. Row i's
                 * offset depends on row i - 1's last sdot, so one A value is live. */
                ptrdiff_t offset = a_offset;
                FPW_UNROLL for (int i = 0; i < MR; i++) {
                    if (i >= 1) __asm__("" : "+r"(offset) : "w"(acc[i - 1][NV - 1]));
                    int8x8_t a_group = vreinterpret_s8_u32(fpw_neon_load_u32_d(a_row[i] + offset));
                    if (FLIP) a_group = veor_s8(a_group, vget_low_s8(sign_bits));
                    FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                        vdotq_lane_s32(acc[i][v], b_vec[v], a_group, 0);
                }
                a_offset += a_cs;
            } else {
                int8x16_t a_quad[FPW_Q8_NEONDOT_MR / 4];
                FPW_UNROLL for (int q = 0; q < MR / 4; q++) {
                    a_quad[q] = vld1q_s8((const int8_t*)a + 16 * q);
                    if (FLIP) a_quad[q] = veorq_s8(a_quad[q], sign_bits);
                }
                FPW_UNROLL for (int i = 0; i < MR; i++) {
                    if (i < MR / 4 * 4) {
                        FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                            fpw_neondot_lane(acc[i][v], b_vec[v], a_quad[i / 4], i % 4);
                    } else {
                        int8x8_t a_group = vreinterpret_s8_u32(fpw_neon_load_u32_d(a + 4 * i));
                        if (FLIP) a_group = veor_s8(a_group, vget_low_s8(sign_bits));
                        FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                            vdotq_lane_s32(acc[i][v], b_vec[v], a_group, 0);
                    }
                }
                a += a_cs;
            }
            b += b_rs;
        }
        if (pass == 1 || t->a_tail == 0) break;
        /* The partial group follows the kc full ones: at a_row[i] + kc*a_cs in rows mode,
         * at a + 4i (a already advanced by kc*a_cs) in packed mode. B's group row kc is
         * next in b. Only a_tail bytes are read. */
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            /* Byte by byte: a memcpy of a_tail bytes would be a library call, and a call
             * spills every accumulator. */
            const uint8_t* src = A_ROWS ? a_row[i] + a_offset : a + 4 * i;
            uint8_t group[4] = {0, 0, 0, 0};
            if (FLIP) memset(group, 0x80, sizeof group);
            group[0] = src[0];
            if (t->a_tail > 1) group[1] = src[1];
            if (t->a_tail > 2) group[2] = src[2];
            memcpy(&tail[i], group, sizeof group);
        }
        a = (const uint8_t*)tail;
        a_rs = 4;
        steps = 1;
    }
    int32_t tile[FPW_Q8_NEONDOT_MR][FPW_Q8_NEONDOT_NR] __attribute__((aligned(16)));
    FPW_UNROLL for (int i = 0; i < MR; i++) {
        FPW_UNROLL for (int v = 0; v < NV; v++) vst1q_s32(&tile[i][4 * v], acc[i][v]);
    }
    fpw_q8_neon_epilogue(t, &tile[0][0], FPW_Q8_NEONDOT_NR);
}

/* Three arrangements: NHWC rows read in place, with or without the flip (uint8 or int8
 * activations), and packed panels (weights, or NCHW activations the packer already
 * flipped). A flip on packed A never comes from the plan; rows mode serves it (it reads
 * any a_rs) rather than a fourth set of instances. */
#define FPW_Q8_NEONDOT_MODES(MR, NV)                                                                         \
    if (!a_rows)                                                                                             \
        fpw_q8_tile_neondot(t, MR, NV, 0, 0);                                                                \
    else if (flip)                                                                                           \
        fpw_q8_tile_neondot(t, MR, NV, 1, 1);                                                                \
    else                                                                                                     \
        fpw_q8_tile_neondot(t, MR, NV, 1, 0);

#define FPW_Q8_NEONDOT_CASE(MR)                                                                              \
    case MR:                                                                                                 \
        if (nv == 3) {                                                                                       \
            FPW_Q8_NEONDOT_MODES(MR, 3)                                                                      \
        } else if (nv == 2) {                                                                                \
            FPW_Q8_NEONDOT_MODES(MR, 2)                                                                      \
        } else {                                                                                             \
            FPW_Q8_NEONDOT_MODES(MR, 1)                                                                      \
        }                                                                                                    \
        break;

static FPW_Q8_NEONDOT_TARGET void fpw_q8_gemm_8x12__neondot(const fpw_q8_tile* t) {
    const int flip = t->a_flip_sign;
    const int a_rows = t->a_rs != 4 || flip;
    const int nv = t->nr > 8 ? 3 : t->nr > 4 ? 2 : 1;
    switch (t->mr) {
        FPW_Q8_NEONDOT_CASE(8)
        FPW_Q8_NEONDOT_CASE(7)
        FPW_Q8_NEONDOT_CASE(6)
        FPW_Q8_NEONDOT_CASE(5)
        FPW_Q8_NEONDOT_CASE(4)
        FPW_Q8_NEONDOT_CASE(3)
        FPW_Q8_NEONDOT_CASE(2)
        FPW_Q8_NEONDOT_CASE(1)
        default:
            break;
    }
}
#undef FPW_Q8_NEONDOT_CASE
#undef FPW_Q8_NEONDOT_MODES

/* Peak-throughput probe: 24 independent sdot chains in registers, the tile's accumulator
 * count. Returns ops: 16 products per sdot, 2 ops each. */
static FPW_Q8_NEONDOT_TARGET double fpw_q8_peak_loop__neondot(long iterations) {
    int32x4_t acc[24];
    const int8x16_t a = vdupq_n_s8(3), b = vdupq_n_s8(-5);
    FPW_UNROLL for (int i = 0; i < 24; i++) acc[i] = vdupq_n_s32(i);
    for (long n = 0; n < iterations; n++) {
        FPW_UNROLL for (int i = 0; i < 24; i++) acc[i] = vdotq_s32(acc[i], a, b);
    }
    int32x4_t sum = acc[0];
    FPW_UNROLL for (int i = 1; i < 24; i++) sum = vaddq_s32(sum, acc[i]);
    volatile int sink = vaddvq_s32(sum);
    (void)sink;
    return 24.0 * 16.0 * 2.0 * (double)iterations;
}

/* sdot reads int8 activations: uint8 ones are flipped. */
static const fpw_q8_ukernel fpw_q8_ukernel__neondot =
    FPW_Q8_UKERNEL(fpw_q8_gemm_8x12__neondot, FPW_Q8_NEONDOT_MR, FPW_Q8_NEONDOT_NR, 4, FPW_Q8_DOT4, 1,
                   fpw_q8_peak_loop__neondot);

#endif /* FPW_AARCH64 */
#endif /* FASTPW_Q8_NEONDOT_H */
