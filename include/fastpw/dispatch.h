/*
 * Kernel families, best first, and the choice among them.
 *
 * A family is everything the tile loop needs to know about one ISA: its register tile
 * (MR x NR), its float32 and int8 microkernels, its quantize/dequantize loops and a
 * peak-FMA probe. The table is filled at compile time with every family this
 * architecture can have; at run time the first one whose CPU requirements hold is the
 * default, and FASTPW_ISA (or fastpw._set_isa) may pick any other supported one.
 */
#ifndef FASTPW_DISPATCH_H
#define FASTPW_DISPATCH_H

#include "cpu.h"
#include "f32/avx2.h"
#include "f32/avx512.h"
#include "f32/neon.h"
#include "f32/scalar.h"
#include "fastpw.h"
#include "q8/avx2.h"
#include "q8/avx512vnni.h"
#include "q8/neon.h"
#include "q8/neondot.h"
#include "q8/scalar.h"
#include "quant.h"

typedef struct fpw_family {
    const char* name;
    size_t mr, nr;
    size_t lanes; /* floats per vector register: the unit in which columns are computed */
    fpw_f32_gemm_fn f32_gemm;
    int q8_format; /* FPW_Q8_DOT4 or FPW_Q8_PAIR16: how int8 operands are laid out */
    /* DOT4: the kernel reads activation bytes as int8 (sdot) rather than uint8 (vpdpbusd) */
    int q8_signed_activations;
    size_t q8_mr, q8_nr; /* int8 register tile */
    fpw_q8_gemm_fn q8_gemm;
    fpw_quantize_fn quantize; /* fastpw.quant's elementwise conversions */
    fpw_dequantize_fn dequantize;
    double (*fma_peak_loop)(long iterations); /* returns flops done; NULL if none */
    int (*supported)(const fpw_cpu_features* cpu);
} fpw_family;

static int fpw_always(const fpw_cpu_features* cpu) {
    (void)cpu;
    return 1;
}

#if FPW_X86_64
static int fpw_has_avx512(const fpw_cpu_features* cpu) {
    return cpu->avx512f && cpu->avx512vl && cpu->avx512bw && cpu->avx512dq && cpu->fma && cpu->avx2;
}
static int fpw_has_avx512_vnni(const fpw_cpu_features* cpu) {
    return fpw_has_avx512(cpu) && cpu->avx512_vnni;
}
static int fpw_has_avx2(const fpw_cpu_features* cpu) {
    return cpu->avx2 && cpu->fma;
}
#endif

#if FPW_AARCH64
static int fpw_has_neon(const fpw_cpu_features* cpu) {
    return cpu->neon;
}
static int fpw_has_neon_dot(const fpw_cpu_features* cpu) {
    return cpu->neon && cpu->asimddp;
}
#endif

/* Designated initializers keep each row readable as the struct grows. */
static const fpw_family fpw_families[] = {
#if FPW_X86_64
    {.name = "avx512vnni",
     .mr = FPW_AVX512_MR,
     .nr = FPW_AVX512_NR,
     .lanes = 16,
     .f32_gemm = fpw_f32_gemm_12x32__avx512,
     .q8_format = FPW_Q8_DOT4,
     .q8_mr = FPW_Q8_VNNI_MR,
     .q8_nr = FPW_Q8_VNNI_NR,
     .q8_gemm = fpw_q8_gemm_12x32__avx512vnni,
     .quantize = fpw_quantize__avx512,
     .dequantize = fpw_dequantize__avx512,
     .fma_peak_loop = fpw_fma_peak_loop__avx512,
     .supported = fpw_has_avx512_vnni},
    /* AVX-512 without VNNI (Skylake-SP): float32 in zmm, int8 through exact vpmaddwd. */
    {.name = "avx512",
     .mr = FPW_AVX512_MR,
     .nr = FPW_AVX512_NR,
     .lanes = 16,
     .f32_gemm = fpw_f32_gemm_12x32__avx512,
     .q8_format = FPW_Q8_PAIR16,
     .q8_mr = FPW_Q8_AVX2_MR,
     .q8_nr = FPW_Q8_AVX2_NR,
     .q8_gemm = fpw_q8_gemm_4x16__avx2,
     .quantize = fpw_quantize__avx512,
     .dequantize = fpw_dequantize__avx512,
     .fma_peak_loop = fpw_fma_peak_loop__avx512,
     .supported = fpw_has_avx512},
    {.name = "avx2",
     .mr = FPW_AVX2_MR,
     .nr = FPW_AVX2_NR,
     .lanes = 8,
     .f32_gemm = fpw_f32_gemm_6x16__avx2,
     .q8_format = FPW_Q8_PAIR16,
     .q8_mr = FPW_Q8_AVX2_MR,
     .q8_nr = FPW_Q8_AVX2_NR,
     .q8_gemm = fpw_q8_gemm_4x16__avx2,
     .quantize = fpw_quantize__avx2,
     .dequantize = fpw_dequantize__avx2,
     .fma_peak_loop = fpw_fma_peak_loop__avx2,
     .supported = fpw_has_avx2},
#endif
#if FPW_AARCH64
    /* Armv8.2 dot product (sdot reads int8 activations: uint8 ones are flipped). */
    {.name = "neondot",
     .mr = FPW_NEON_MR,
     .nr = FPW_NEON_NR,
     .lanes = 4,
     .f32_gemm = fpw_f32_gemm_8x12__neon,
     .q8_format = FPW_Q8_DOT4,
     .q8_signed_activations = 1,
     .q8_mr = FPW_Q8_NEONDOT_MR,
     .q8_nr = FPW_Q8_NEONDOT_NR,
     .q8_gemm = fpw_q8_gemm_8x12__neondot,
     .quantize = fpw_quantize__portable,
     .dequantize = fpw_dequantize__portable,
     .fma_peak_loop = fpw_fma_peak_loop__neon,
     .supported = fpw_has_neon_dot},
    /* Every AArch64 CPU (Armv8.0): int8 through exact widening multiply-accumulate. */
    {.name = "neon",
     .mr = FPW_NEON_MR,
     .nr = FPW_NEON_NR,
     .lanes = 4,
     .f32_gemm = fpw_f32_gemm_8x12__neon,
     .q8_format = FPW_Q8_PAIR16,
     .q8_mr = FPW_Q8_NEON_MR,
     .q8_nr = FPW_Q8_NEON_NR,
     .q8_gemm = fpw_q8_gemm_8x8__neon,
     .quantize = fpw_quantize__portable,
     .dequantize = fpw_dequantize__portable,
     .fma_peak_loop = fpw_fma_peak_loop__neon,
     .supported = fpw_has_neon},
#endif
    {.name = "scalar",
     .mr = FPW_SCALAR_MR,
     .nr = FPW_SCALAR_NR,
     .lanes = 1,
     .f32_gemm = fpw_f32_gemm_4x8__scalar,
     .q8_format = FPW_Q8_PAIR16,
     .q8_mr = FPW_Q8_SCALAR_MR,
     .q8_nr = FPW_Q8_SCALAR_NR,
     .q8_gemm = fpw_q8_gemm_4x8__scalar,
     .quantize = fpw_quantize__portable,
     .dequantize = fpw_dequantize__portable,
     .fma_peak_loop = NULL,
     .supported = fpw_always},
};

#define FPW_NUM_FAMILIES ((int)(sizeof(fpw_families) / sizeof(fpw_families[0])))

#endif /* FASTPW_DISPATCH_H */
