/*
 * fpw_q8_gemm_4x8__scalar: portable int8 reference and fallback (PAIR16 format).
 *
 * Plain C on int16 pairs with int32 accumulators: every uint8/int8 input is exact.
 */
#ifndef FASTPW_Q8_SCALAR_H
#define FASTPW_Q8_SCALAR_H

#include "../fastpw.h"
#include "epilogue.h"

#define FPW_Q8_SCALAR_MR 4
#define FPW_Q8_SCALAR_NR 8

static void fpw_q8_gemm_4x8__scalar(const fpw_q8_tile* t) {
    /* Unsigned, so that a sum past int32 wraps as the SIMD kernels' lanes do (signed
     * overflow would be undefined behaviour in C). */
    uint32_t acc[FPW_Q8_SCALAR_MR][FPW_Q8_SCALAR_NR] = {{0}};
    const size_t mr = t->mr, nr = t->nr;
    for (size_t k = 0; k < t->kc; k++) {
        const int16_t* b_row = (const int16_t*)(t->b + (ptrdiff_t)k * t->b_rs);
        for (size_t i = 0; i < mr; i++) {
            const int16_t* a = (const int16_t*)(t->a + (ptrdiff_t)i * t->a_rs + (ptrdiff_t)k * t->a_cs);
            const int32_t a0 = a[0], a1 = a[1];
            for (size_t j = 0; j < nr; j++)
                acc[i][j] += (uint32_t)(a0 * b_row[2 * j] + a1 * b_row[2 * j + 1]);
        }
    }
    for (size_t i = 0; i < mr; i++) {
        for (size_t j = 0; j < nr; j++) {
            const size_t index = t->per_row ? i : j;
            /* Wrapping add: the folded bias may push a partial sum past int32 while the
             * true result fits, and two's complement brings it back. */
            const uint32_t bias = t->bias ? (uint32_t)t->bias[index] : 0u;
            const float scale = t->scale ? t->scale[index] : 0.0f; /* NULL: int32 output */
            fpw_q8_store_one(t, (int32_t)(acc[i][j] + bias), scale,
                             (ptrdiff_t)i * t->c_rs + (ptrdiff_t)j * t->c_cs);
        }
    }
}

static const fpw_q8_ukernel fpw_q8_ukernel__scalar =
    FPW_Q8_UKERNEL(fpw_q8_gemm_4x8__scalar, FPW_Q8_SCALAR_MR, FPW_Q8_SCALAR_NR, 1, FPW_Q8_PAIR16, 0, NULL);

#endif /* FASTPW_Q8_SCALAR_H */
