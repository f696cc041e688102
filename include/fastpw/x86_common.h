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

/* Stores the lanes of vector v of a row (8 floats each) that fall within nr columns.
 * Not vmaskmovps: its store form is microcoded on AMD Zen (one store per ~12 cycles
 * where a plain store takes one), which made rows of 12 output channels slower than
 * rows of 8. Halves, pairs and singles are plain stores on every x86. */
FPW_ALWAYS_INLINE FPW_AVX2_TARGET void fpw_avx2_store_lanes(float* row, __m256 value, size_t nr, int v) {
    ptrdiff_t remaining = (ptrdiff_t)nr - 8 * v;
    float* p = row + 8 * v;
    if (remaining >= 8) {
        _mm256_storeu_ps(p, value);
        return;
    }
    if (remaining <= 0) return;
    __m128 part = _mm256_castps256_ps128(value);
    if (remaining & 4) {
        _mm_storeu_ps(p, part);
        part = _mm256_extractf128_ps(value, 1);
        p += 4;
    }
    if (remaining & 2) {
        _mm_storel_pi((__m64*)p, part);
        part = _mm_movehl_ps(part, part);
        p += 2;
    }
    if (remaining & 1) _mm_store_ss(p, part);
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
