/*
 * What every AArch64 kernel family shares: the CPU features each family requires, the
 * target for helpers that inline anywhere, and lane-wise loads, stores and the clamp
 * that the float32 and int8 kernels both use.
 */
#ifndef FASTPW_NEON_COMMON_H
#define FASTPW_NEON_COMMON_H

#include "cpu.h"
#include "fastpw.h"

#if FPW_AARCH64
#include <arm_neon.h>
#include <string.h>

#define FPW_NEON_REQUIRES FPW_FEATURE(neon)
#define FPW_NEONDOT_REQUIRES (FPW_NEON_REQUIRES | FPW_FEATURE(asimddp))

/* For the few helpers the dot-product kernel inlines (q8/neondot.h): the minimal target
 * arm_neon.h itself gives its baseline intrinsics, so they inline into any caller,
 * whatever -march the build uses and whatever "arch=" the caller overrides it with. */
#if defined(__clang__)
#define FPW_NEON_ANY_TARGET
#else
#define FPW_NEON_ANY_TARGET __attribute__((target("+nothing+simd")))
#endif

/* 32-bit lanes [0, n) from p, zeros above, n <= 4. Going through bytes and memcpy makes
 * no alignment or type assumption, so floats, int32 and DOT4 groups of bytes share it;
 * it compiles to ldr d / ld1 {v.s}[n]. Nothing past lane n - 1 is read. */
FPW_ALWAYS_INLINE FPW_NEON_ANY_TARGET uint32x4_t fpw_neon_load_lanes32(const void* p, size_t n) {
    const uint8_t* bytes = (const uint8_t*)p;
    if (n >= 4) return vreinterpretq_u32_u8(vld1q_u8(bytes));
    uint32x4_t v = vdupq_n_u32(0);
    if (n & 2) v = vcombine_u32(vreinterpret_u32_u8(vld1_u8(bytes)), vdup_n_u32(0));
    if (n & 1) {
        uint32_t x;
        memcpy(&x, bytes + 4 * (n & 2), sizeof x);
        v = (n & 2) ? vsetq_lane_u32(x, v, 2) : vsetq_lane_u32(x, v, 0);
    }
    return v;
}

/* Store 32-bit lanes [0, n) of v to p, n <= 4; nothing past lane n - 1 is written. */
FPW_ALWAYS_INLINE void fpw_neon_store_lanes32(void* p, uint32x4_t v, size_t n) {
    uint8_t* bytes = (uint8_t*)p;
    if (n >= 4) {
        vst1q_u8(bytes, vreinterpretq_u8_u32(v));
        return;
    }
    if (n & 2) vst1_u8(bytes, vreinterpret_u8_u32(vget_low_u32(v)));
    if (n & 1) {
        const uint32_t x = (n & 2) ? vgetq_lane_u32(v, 2) : vgetq_lane_u32(v, 0);
        memcpy(bytes + 4 * (n & 2), &x, sizeof x);
    }
}

/* y = min(max(y, lo), hi) as `if (y < lo) y = lo; if (y > hi) y = hi;`: comparisons with
 * NaN are false, so a NaN y passes through (numpy's maximum/minimum), and a bound equal
 * to y leaves y's sign of zero alone (fmax(-0.0, +0.0) would give +0.0). */
FPW_ALWAYS_INLINE float32x4_t fpw_neon_clamp_f32(float32x4_t y, float32x4_t lo, float32x4_t hi) {
    y = vbslq_f32(vcltq_f32(y, lo), lo, y);
    return vbslq_f32(vcgtq_f32(y, hi), hi, y);
}

#endif /* FPW_AARCH64 */
#endif /* FASTPW_NEON_COMMON_H */
