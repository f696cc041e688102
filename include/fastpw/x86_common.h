/*
 * What every x86-64 kernel family shares: the target attributes that compile a
 * function for one ISA (no global -m flags: one build runs on any x86-64), the CPU
 * features each ISA requires, and the small helpers (lane masks, unaligned loads) the
 * float32 and int8 kernels both use.
 */
#ifndef FASTPW_X86_COMMON_H
#define FASTPW_X86_COMMON_H

#include <string.h>

#include "cpu.h"
#include "fastpw.h"

#if FPW_X86_64
#include <immintrin.h>

#define FPW_AVX2_TARGET __attribute__((target("avx2,fma")))
#define FPW_AVX512_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define FPW_AVX512VNNI_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni")))

/* What the CPU (and the OS, for the wide registers) must have for each target above. */
#define FPW_AVX2_REQUIRES (FPW_FEATURE(avx2) | FPW_FEATURE(fma))
#define FPW_AVX512_REQUIRES                                                                                  \
    (FPW_AVX2_REQUIRES | FPW_FEATURE(avx512f) | FPW_FEATURE(avx512vl) | FPW_FEATURE(avx512bw) |              \
     FPW_FEATURE(avx512dq))
#define FPW_AVX512VNNI_REQUIRES (FPW_AVX512_REQUIRES | FPW_FEATURE(avx512_vnni))

/* Four bytes from any address (a group of the int8 formats), without undefined behaviour. */
FPW_ALWAYS_INLINE int32_t fpw_load_u32(const uint8_t* p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Eight -1 then eight 0: loading 8 ints at offset 8 - n gives a mask of n leading lanes. */
static const int32_t fpw_avx2_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* The lanes of vector v (8 lanes of 32 bits) that fall within nr columns. */
FPW_ALWAYS_INLINE FPW_AVX2_TARGET __m256i fpw_avx2_lane_mask(size_t nr, int v) {
    ptrdiff_t remaining = (ptrdiff_t)nr - 8 * v;
    if (remaining > 8) remaining = 8;
    if (remaining < 0) remaining = 0;
    return _mm256_loadu_si256((const __m256i*)(fpw_avx2_mask_table + 8 - remaining));
}

/* The lanes of vector v (16 lanes of 32 bits) that fall within nr columns. */
FPW_ALWAYS_INLINE __attribute__((target("avx512f"))) __mmask16 fpw_avx512_lane_mask(size_t nr, int v) {
    ptrdiff_t remaining = (ptrdiff_t)nr - 16 * v;
    if (remaining >= 16) return (__mmask16)0xFFFF;
    if (remaining <= 0) return (__mmask16)0;
    return (__mmask16)((1u << remaining) - 1u);
}

#endif /* FPW_X86_64 */
#endif /* FASTPW_X86_COMMON_H */
