/*
 * CPU feature detection, done once at import.
 *
 * x86-64: CPUID says what the core implements; XGETBV says whether the OS saves the
 * wide registers on context switch (YMM for AVX/AVX2, ZMM + opmask for AVX-512, tile
 * state for AMX). A feature counts only when both agree.
 */
#ifndef FASTPW_CPU_H
#define FASTPW_CPU_H

#include <stddef.h>

#include "fastpw.h"

/* The features fastpw detects, in the order fastpw.cpu_features() lists them: the one
 * list. It makes the struct's fields, their names and their bits in a feature mask. */
#define FPW_CPU_FEATURES(X)                                                                                  \
    X(sse42)                                                                                                 \
    X(avx)                                                                                                   \
    X(fma)                                                                                                   \
    X(avx2)                                                                                                  \
    X(f16c)                                                                                                  \
    X(avx512f)                                                                                               \
    X(avx512bw)                                                                                              \
    X(avx512dq)                                                                                              \
    X(avx512vl)                                                                                              \
    X(avx512_vnni)                                                                                           \
    X(avx_vnni)                                                                                              \
    X(amx_tile)                                                                                              \
    X(amx_int8)                                                                                              \
    X(neon)                                                                                                  \
    X(asimddp)

typedef struct fpw_cpu_features {
#define FPW_FEATURE_FIELD(name) int name;
    FPW_CPU_FEATURES(FPW_FEATURE_FIELD)
#undef FPW_FEATURE_FIELD
} fpw_cpu_features;

/* Each feature's position in the list, and its bit in a feature mask: kernel families
 * state what they require as a mask (dispatch.h). */
enum fpw_cpu_feature_index {
#define FPW_FEATURE_INDEX(name) FPW_FEATURE_INDEX_##name,
    FPW_CPU_FEATURES(FPW_FEATURE_INDEX)
#undef FPW_FEATURE_INDEX
        FPW_NUM_CPU_FEATURES
};
#define FPW_FEATURE(name) (1u << FPW_FEATURE_INDEX_##name)

#define FPW_FEATURE_NAME(name) #name,
static const char* const fpw_cpu_feature_names[] = {FPW_CPU_FEATURES(FPW_FEATURE_NAME)};
#undef FPW_FEATURE_NAME

/* The features as a mask: bit i set when feature i of FPW_CPU_FEATURES is present. */
static FPW_MAYBE_UNUSED unsigned fpw_cpu_feature_mask(const fpw_cpu_features* f) {
    unsigned mask = 0;
#define FPW_FEATURE_BIT(name) mask |= f->name ? FPW_FEATURE(name) : 0u;
    FPW_CPU_FEATURES(FPW_FEATURE_BIT)
#undef FPW_FEATURE_BIT
    return mask;
}

#if FPW_X86_64
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>

static void fpw_cpuid(unsigned leaf, unsigned subleaf, unsigned regs[4]) {
    regs[0] = regs[1] = regs[2] = regs[3] = 0;
    __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
}

static unsigned long long fpw_xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

static FPW_MAYBE_UNUSED fpw_cpu_features fpw_detect_cpu(void) {
    fpw_cpu_features f = {0};
#if defined(__GNUC__) || defined(__clang__)
    unsigned r[4], max_leaf;
    fpw_cpuid(0, 0, r);
    max_leaf = r[0];
    if (max_leaf < 1) return f;
    fpw_cpuid(1, 0, r);
    unsigned ecx1 = r[2];
    f.sse42 = (ecx1 >> 20) & 1;
    int osxsave = (ecx1 >> 27) & 1;
    unsigned long long xcr0 = osxsave ? fpw_xgetbv0() : 0;
    int os_ymm = (xcr0 & 0x6) == 0x6;             /* SSE + AVX state */
    int os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0; /* opmask + ZMM_Hi256 + Hi16_ZMM */
    int os_amx = (xcr0 & 0x60000) == 0x60000;     /* XTILECFG + XTILEDATA */
    f.avx = os_ymm && ((ecx1 >> 28) & 1);
    f.fma = f.avx && ((ecx1 >> 12) & 1);
    f.f16c = f.avx && ((ecx1 >> 29) & 1);
    if (max_leaf >= 7) {
        fpw_cpuid(7, 0, r);
        unsigned ebx7 = r[1], ecx7 = r[2], edx7 = r[3], max_sub = r[0];
        f.avx2 = f.avx && ((ebx7 >> 5) & 1);
        f.avx512f = os_zmm && ((ebx7 >> 16) & 1);
        f.avx512dq = f.avx512f && ((ebx7 >> 17) & 1);
        f.avx512bw = f.avx512f && ((ebx7 >> 30) & 1);
        f.avx512vl = f.avx512f && ((ebx7 >> 31) & 1);
        f.avx512_vnni = f.avx512f && ((ecx7 >> 11) & 1);
        f.amx_tile = os_amx && ((edx7 >> 24) & 1);
        f.amx_int8 = f.amx_tile && ((edx7 >> 25) & 1);
        if (max_sub >= 1) {
            fpw_cpuid(7, 1, r);
            f.avx_vnni = f.avx2 && ((r[0] >> 4) & 1);
        }
    }
#endif
    return f;
}

#elif FPW_AARCH64
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

static FPW_MAYBE_UNUSED fpw_cpu_features fpw_detect_cpu(void) {
    fpw_cpu_features f = {0};
    unsigned long hwcap = getauxval(AT_HWCAP);
    f.neon = (hwcap & HWCAP_ASIMD) != 0;
    f.asimddp = (hwcap & HWCAP_ASIMDDP) != 0;
    return f;
}

#else
static FPW_MAYBE_UNUSED fpw_cpu_features fpw_detect_cpu(void) {
    fpw_cpu_features f = {0};
    return f;
}
#endif

#endif /* FASTPW_CPU_H */
