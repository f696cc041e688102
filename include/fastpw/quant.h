/*
 * Elementwise quantize and dequantize for fastpw.quant, with the semantics of ONNX
 * QuantizeLinear / DequantizeLinear:
 *
 *   quantize:   q = saturate(rint(x / scale) + zero_point)   float32 division,
 *               round half to even; NaN gives the zero point (real 0)
 *   dequantize: x = float32(q - zero_point) * scale
 *
 * One plain loop body is compiled once per ISA under that ISA's target attribute, so the
 * compiler vectorizes it with the widest registers the family may use (vrndscaleps,
 * vdivps and narrowing moves on AVX-512), and the family table picks the variant at run
 * time. A run either shares one scale and zero point (per tensor, or a contiguous run of
 * one channel) or takes one per element (the quantized axis is the innermost one).
 */
#ifndef FASTPW_QUANT_H
#define FASTPW_QUANT_H

#include <math.h>

#include "fastpw.h"
#include "x86_common.h"

/* The run and kernel types (fpw_quant_run, fpw_quant_ukernel) are in fastpw.h. */

/* PER_ELEMENT and SIGNED are constants at every call, so each loop vectorizes alone.
 * The clamp runs before the zero point is added, on [lo - zp, hi - zp], and is written
 * as `v > lo ? v : lo`, the operand order of x86 maxps/minps: the compiler then emits
 * one max and one min, where clamping after the add made it juggle mask registers at
 * half the speed. Results are the same: rint(x / scale) is an integer, exact in
 * float32 until it saturates anyway. */
FPW_ALWAYS_INLINE void fpw_quantize_loop(const float* restrict x, void* restrict y, size_t n,
                                         const float* restrict scale, const int32_t* restrict zero_point,
                                         const int PER_ELEMENT, const int SIGNED) {
    const int32_t lo = SIGNED ? -128 : 0, hi = SIGNED ? 127 : 255;
    for (size_t i = 0; i < n; i++) {
        const int32_t z = zero_point[PER_ELEMENT ? i : 0];
        const float below = (float)(lo - z), above = (float)(hi - z);
        float q = rintf(x[i] / scale[PER_ELEMENT ? i : 0]);
        q = q == q ? q : 0.0f; /* NaN: real 0 */
        q = q > below ? q : below;
        q = q < above ? q : above;
        if (SIGNED)
            ((int8_t*)y)[i] = (int8_t)((int32_t)q + z);
        else
            ((uint8_t*)y)[i] = (uint8_t)((int32_t)q + z);
    }
}

FPW_ALWAYS_INLINE void fpw_dequantize_loop(const void* restrict xq, float* restrict y, size_t n,
                                           const float* restrict scale, const int32_t* restrict zero_point,
                                           const int PER_ELEMENT, const int SIGNED) {
    for (size_t i = 0; i < n; i++) {
        const int32_t q = SIGNED ? (int32_t)((const int8_t*)xq)[i] : (int32_t)((const uint8_t*)xq)[i];
        y[i] = (float)(q - zero_point[PER_ELEMENT ? i : 0]) * scale[PER_ELEMENT ? i : 0];
    }
}

#define FPW_DEFINE_QUANT(SUFFIX, TARGET, LANES)                                                              \
    static TARGET void fpw_quantize__##SUFFIX(const float* x, void* y, const fpw_quant_run* r) {             \
        if (r->per_element) {                                                                                \
            if (r->is_signed)                                                                                \
                fpw_quantize_loop(x, y, r->n, r->scale, r->zero_point, 1, 1);                                \
            else                                                                                             \
                fpw_quantize_loop(x, y, r->n, r->scale, r->zero_point, 1, 0);                                \
        } else {                                                                                             \
            if (r->is_signed)                                                                                \
                fpw_quantize_loop(x, y, r->n, r->scale, r->zero_point, 0, 1);                                \
            else                                                                                             \
                fpw_quantize_loop(x, y, r->n, r->scale, r->zero_point, 0, 0);                                \
        }                                                                                                    \
    }                                                                                                        \
    static TARGET void fpw_dequantize__##SUFFIX(const void* xq, float* y, const fpw_quant_run* r) {          \
        if (r->per_element) {                                                                                \
            if (r->is_signed)                                                                                \
                fpw_dequantize_loop(xq, y, r->n, r->scale, r->zero_point, 1, 1);                             \
            else                                                                                             \
                fpw_dequantize_loop(xq, y, r->n, r->scale, r->zero_point, 1, 0);                             \
        } else {                                                                                             \
            if (r->is_signed)                                                                                \
                fpw_dequantize_loop(xq, y, r->n, r->scale, r->zero_point, 0, 1);                             \
            else                                                                                             \
                fpw_dequantize_loop(xq, y, r->n, r->scale, r->zero_point, 0, 0);                             \
        }                                                                                                    \
    }                                                                                                        \
    static const fpw_quant_ukernel fpw_quant_ukernel__##SUFFIX = {.name = "fpw_quantize__" #SUFFIX,          \
                                                                  .quantize = fpw_quantize__##SUFFIX,        \
                                                                  .dequantize = fpw_dequantize__##SUFFIX,    \
                                                                  .lanes = LANES};

/* Portable: the baseline of the architecture (SSE2 on x86-64, NEON on AArch64), 4 lanes. */
FPW_DEFINE_QUANT(portable, , 4)
#if FPW_X86_64
FPW_DEFINE_QUANT(avx2, FPW_AVX2_TARGET, 8)
FPW_DEFINE_QUANT(avx512, FPW_AVX512_TARGET, 16)
#endif

#undef FPW_DEFINE_QUANT

#endif /* FASTPW_QUANT_H */
