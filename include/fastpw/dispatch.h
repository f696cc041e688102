/*
 * Kernel families, best first: the one list of them.
 *
 * A family is an ISA level: the CPU features it requires and the kernels it brings for
 * each operation (float32 GEMM, int8 GEMM, quantize/dequantize). A family brings only
 * the kernels it does better than the families below it; for any other operation it
 * leaves NULL and the next family down serves. Each operation therefore chooses its
 * kernel on its own: the first family, at or below the selected one, whose requirements
 * the CPU meets and which has a kernel for it. The selected family is the best one the
 * CPU supports, or the one FASTPW_ISA (fastpw._set_isa) names, which caps every
 * operation at that family.
 *
 * Adding a family is one header with its kernels and one row here. Python reads this
 * table (fastpw.kernel_table()); the tests, the CLI and the README take it from there.
 */
#ifndef FASTPW_DISPATCH_H
#define FASTPW_DISPATCH_H

#include "cpu.h"
#include "f32/avx2.h"
#include "f32/avx512.h"
#include "f32/neon.h"
#include "f32/pack.h"
#include "f32/scalar.h"
#include "fastpw.h"
#include "neon_common.h"
#include "q8/avx2.h"
#include "q8/avx512vnni.h"
#include "q8/neon.h"
#include "q8/neondot.h"
#include "q8/pack.h"
#include "q8/scalar.h"
#include "quant.h"
#include "x86_common.h"

typedef struct fpw_family {
    const char* name;
    unsigned required_features; /* FPW_FEATURE bits (cpu.h) that must all be present */
    const fpw_f32_ukernel* f32;
    const fpw_q8_ukernel* q8;
    const fpw_quant_ukernel* quant;
} fpw_family;

/* The operations, in the order Python names them (fastpw.OPERATIONS). */
enum { FPW_OP_F32_GEMM = 0, FPW_OP_Q8_GEMM = 1, FPW_OP_QUANT = 2, FPW_NUM_OPS = 3 };

static const fpw_family fpw_families[] = {
#if FPW_X86_64
    /* int8 through vpdpbusd; float32 and quantize gain nothing over avx512's. */
    {.name = "avx512vnni", .required_features = FPW_AVX512VNNI_REQUIRES, .q8 = &fpw_q8_ukernel__avx512vnni},
    /* int8 has no 512-bit kernel without VNNI: avx2's vpmaddwd one serves. */
    {.name = "avx512",
     .required_features = FPW_AVX512_REQUIRES,
     .f32 = &fpw_f32_ukernel__avx512,
     .quant = &fpw_quant_ukernel__avx512},
    {.name = "avx2",
     .required_features = FPW_AVX2_REQUIRES,
     .f32 = &fpw_f32_ukernel__avx2,
     .q8 = &fpw_q8_ukernel__avx2,
     .quant = &fpw_quant_ukernel__avx2},
#endif
#if FPW_AARCH64
    /* Armv8.2 dot product: int8 only; float32 is neon's. */
    {.name = "neondot", .required_features = FPW_NEONDOT_REQUIRES, .q8 = &fpw_q8_ukernel__neondot},
    /* Every AArch64 CPU (Armv8.0). Quantize is the scalar row's portable loop, which the
     * compiler vectorises with NEON: a NEON row of its own would be the same code. */
    {.name = "neon",
     .required_features = FPW_NEON_REQUIRES,
     .f32 = &fpw_f32_ukernel__neon,
     .q8 = &fpw_q8_ukernel__neon},
#endif
    /* The reference kernels: every operation, every CPU. */
    {.name = "scalar",
     .required_features = 0,
     .f32 = &fpw_f32_ukernel__scalar,
     .q8 = &fpw_q8_ukernel__scalar,
     .quant = &fpw_quant_ukernel__portable},
};

#define FPW_NUM_FAMILIES ((int)(sizeof(fpw_families) / sizeof(fpw_families[0])))

/* 1 if family `index` has a kernel for operation `op`. */
static FPW_MAYBE_UNUSED int fpw_family_has(int index, int op) {
    const fpw_family* f = &fpw_families[index];
    return op == FPW_OP_F32_GEMM ? f->f32 != NULL : op == FPW_OP_Q8_GEMM ? f->q8 != NULL : f->quant != NULL;
}

/* The family whose kernel operation `op` runs when family `cap` is selected on a CPU
 * with feature mask `cpu`: the first at or below `cap` that the CPU supports and that
 * has a kernel for `op`. The scalar row has every kernel, so there always is one. */
static FPW_MAYBE_UNUSED int fpw_choose_family(int op, int cap, unsigned cpu) {
    for (int i = cap; i < FPW_NUM_FAMILIES; i++) {
        if ((fpw_families[i].required_features & cpu) == fpw_families[i].required_features &&
            fpw_family_has(i, op))
            return i;
    }
    return FPW_NUM_FAMILIES - 1;
}

#endif /* FASTPW_DISPATCH_H */
