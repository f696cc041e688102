/*
 * Kernel families, best first, and the choice among them.
 *
 * A family is everything the tile loop needs to know about one ISA: its register tile
 * (MR x NR), its float32 microkernel and a peak-FMA probe. The table is filled at compile
 * time with every family this architecture can have; at run time the first one whose
 * CPU requirements hold is the default, and FASTPW_ISA (or fastpw._set_isa) may pick
 * any other supported one.
 */
#ifndef FASTPW_DISPATCH_H
#define FASTPW_DISPATCH_H

#include "cpu.h"
#include "f32/avx2.h"
#include "f32/avx512.h"
#include "f32/scalar.h"
#include "fastpw.h"

typedef struct fpw_family {
    const char* name;
    size_t mr, nr;
    size_t lanes; /* floats per vector register: the unit in which columns are computed */
    fpw_f32_gemm_fn f32_gemm;
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
static int fpw_has_avx2(const fpw_cpu_features* cpu) {
    return cpu->avx2 && cpu->fma;
}
#endif

static const fpw_family fpw_families[] = {
#if FPW_X86_64
    {"avx512", FPW_AVX512_MR, FPW_AVX512_NR, 16, fpw_f32_gemm_12x32__avx512, fpw_fma_peak_loop__avx512,
     fpw_has_avx512},
    {"avx2", FPW_AVX2_MR, FPW_AVX2_NR, 8, fpw_f32_gemm_6x16__avx2, fpw_fma_peak_loop__avx2, fpw_has_avx2},
#endif
    {"scalar", FPW_SCALAR_MR, FPW_SCALAR_NR, 1, fpw_f32_gemm_4x8__scalar, NULL, fpw_always},
};

#define FPW_NUM_FAMILIES ((int)(sizeof(fpw_families) / sizeof(fpw_families[0])))

/* Thread helpers that also build without OpenMP. */
#ifdef _OPENMP
#include <omp.h>
static int fpw_openmp_enabled(void) {
    return 1;
}
static int fpw_max_threads(void) {
    return omp_get_max_threads();
}
static int fpw_thread_num(void) {
    return omp_get_thread_num();
}
#else
static int fpw_openmp_enabled(void) {
    return 0;
}
static int fpw_max_threads(void) {
    return 1;
}
static int fpw_thread_num(void) {
    return 0;
}
#endif

#endif /* FASTPW_DISPATCH_H */
