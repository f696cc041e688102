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
 * Adding a family is one header with its kernels and one row of the table, which is
 * defined in families.c: the kernels compile in that translation unit of their own, in
 * parallel with the Cython module's (setup.py), and the module reaches them through the
 * table only. Python reads the table (fastpw.kernel_table()); the tests, the CLI and the
 * README take it from there.
 */
#ifndef FASTPW_DISPATCH_H
#define FASTPW_DISPATCH_H

#include "cpu.h"
#include "f32/pack.h"
#include "fastpw.h"
#include "q8/pack.h"

typedef struct fpw_family {
    const char* name;
    unsigned required_features; /* FPW_FEATURE bits (cpu.h) that must all be present */
    const fpw_f32_ukernel* f32;
    const fpw_q8_ukernel* q8;
    const fpw_quant_ukernel* quant;
} fpw_family;

/* The operations, in the order Python names them (fastpw.OPERATIONS). */
enum { FPW_OP_F32_GEMM = 0, FPW_OP_Q8_GEMM = 1, FPW_OP_QUANT = 2, FPW_NUM_OPS = 3 };

/* Hidden: the table links into the extension module and is not exported from it. */
#if defined(__GNUC__) || defined(__clang__)
#define FPW_INTERNAL __attribute__((visibility("hidden")))
#else
#define FPW_INTERNAL
#endif

/* The families, best first (families.c), and how many there are. */
FPW_INTERNAL extern const fpw_family fpw_families[];
FPW_INTERNAL extern const int fpw_num_families;
#define FPW_NUM_FAMILIES fpw_num_families

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
