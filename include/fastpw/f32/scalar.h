/*
 * fpw_f32_gemm_4x8__scalar: the portable reference and fallback.
 *
 * Plain C, no intrinsics: obviously correct, and the kernel every other family is
 * tested against in spirit. A 4x8 accumulator block is small enough to live in
 * registers on any 64-bit CPU and lets compilers vectorize the j loop with whatever
 * baseline SIMD the target has (SSE2 on x86-64, NEON on aarch64).
 */
#ifndef FASTPW_F32_SCALAR_H
#define FASTPW_F32_SCALAR_H

#include "../fastpw.h"

#define FPW_SCALAR_MR 4
#define FPW_SCALAR_NR 8

static void fpw_f32_gemm_4x8__scalar_one(const fpw_f32_tile* t) {
    float acc[FPW_SCALAR_MR][FPW_SCALAR_NR] = {{0.0f}};
    const size_t mr = t->mr, nr = t->nr;
    if (t->accumulate) {
        for (size_t i = 0; i < mr; i++)
            for (size_t j = 0; j < nr; j++) acc[i][j] = t->c[(ptrdiff_t)i * t->c_rs + (ptrdiff_t)j * t->c_cs];
    }
    for (size_t k = 0; k < t->kc; k++) {
        const float* b_row = t->b + (ptrdiff_t)k * t->b_rs;
        for (size_t i = 0; i < mr; i++) {
            const float a = t->a[(ptrdiff_t)i * t->a_rs + (ptrdiff_t)k * t->a_cs];
            for (size_t j = 0; j < nr; j++) acc[i][j] += a * b_row[j];
        }
    }
    for (size_t i = 0; i < mr; i++) {
        for (size_t j = 0; j < nr; j++) {
            float y = acc[i][j];
            if (t->finish && t->bias) y += t->bias_on_rows ? t->bias[i] : t->bias[j];
            if (t->finish && t->clamp) {
                /* Comparisons with NaN are false, so NaN passes through as in numpy. */
                if (y < t->lo) y = t->lo;
                if (y > t->hi) y = t->hi;
            }
            t->c[(ptrdiff_t)i * t->c_rs + (ptrdiff_t)j * t->c_cs] = y;
        }
    }
}

static void fpw_f32_gemm_4x8__scalar(const fpw_f32_tile* t) {
    fpw_f32_each_tile(t, FPW_SCALAR_NR, fpw_f32_gemm_4x8__scalar_one);
}

static const fpw_f32_ukernel fpw_f32_ukernel__scalar =
    FPW_F32_UKERNEL(fpw_f32_gemm_4x8__scalar, FPW_SCALAR_MR, FPW_SCALAR_NR, 1, NULL);

#endif /* FASTPW_F32_SCALAR_H */
