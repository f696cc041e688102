/*
 * fpw_q8_gemm_4x16__avx2: exact int8 microkernel for CPUs without VNNI (PAIR16 format).
 *
 * Instructions: vpbroadcastd of an int16 pair, vpmaddwd (two int16 products summed into
 * one int32 lane: exact, never saturates, unlike vpmaddubsw), vpaddd; the epilogue uses
 * vcvtdq2ps, vmulps, vroundps (to nearest even) and vpackssdw/vpackuswb.
 * Registers: 4 rows x 2 ymm = 8 accumulators + 2 for B + 1 broadcast + 1 product = 12 of
 * 16, leaving room for the compiler.
 * Why 4x16: vpmaddwd and vpaddd both issue per product, so the tile is limited by
 * issue width rather than latency; 8 independent chains keep both pipes busy.
 */
#ifndef FASTPW_Q8_AVX2_H
#define FASTPW_Q8_AVX2_H

#include "../fastpw.h"
#include "../x86_common.h"
#include "epilogue.h"

#if FPW_X86_64
#include <immintrin.h>

#define FPW_Q8_AVX2_MR 4
#define FPW_Q8_AVX2_NV 2
#define FPW_Q8_AVX2_NR (8 * FPW_Q8_AVX2_NV)

/* One vector of 8 accumulators (bias added) through the epilogue: the final values as
 * int32 lanes (8-bit and int32 outputs) or float lanes (float32 output). */
FPW_ALWAYS_INLINE FPW_AVX2_TARGET __m256i fpw_q8_avx2_finish(const fpw_q8_tile* t, __m256i acc,
                                                             __m256 scale) {
    if (t->out_type == FPW_Q8_OUT_S32) return acc;
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale);
    if (t->out_type == FPW_Q8_OUT_F32) {
        if (t->clamp) v = _mm256_min_ps(_mm256_set1_ps(t->hi), _mm256_max_ps(_mm256_set1_ps(t->lo), v));
        return _mm256_castps_si256(v);
    }
    v = _mm256_min_ps(_mm256_set1_ps(t->hi), _mm256_max_ps(_mm256_set1_ps(t->lo), v));
    const __m256i q = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return _mm256_add_epi32(q, _mm256_set1_epi32(t->zero_point));
}

/* Store nr <= 8 finished lanes along unit stride, narrowing 8-bit outputs. */
FPW_ALWAYS_INLINE FPW_AVX2_TARGET void fpw_q8_avx2_store(const fpw_q8_tile* t, __m256i y, __m256i mask,
                                                         size_t nr, ptrdiff_t offset) {
    if (t->out_type == FPW_Q8_OUT_S32 || t->out_type == FPW_Q8_OUT_F32) {
        _mm256_maskstore_epi32((int32_t*)t->c + offset, mask, y);
        return;
    }
    /* Values are in range already, so the saturating packs only narrow. */
    const __m128i y16 = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
    const __m128i y8 = t->out_type == FPW_Q8_OUT_U8 ? _mm_packus_epi16(y16, y16) : _mm_packs_epi16(y16, y16);
    uint8_t bytes[16];
    _mm_storeu_si128((__m128i*)bytes, y8);
    memcpy((uint8_t*)t->c + offset, bytes, nr);
}

/* Bias, requantization and stores for a finished tile of accumulators. */
static FPW_AVX2_TARGET __attribute__((noinline)) void fpw_q8_avx2_epilogue(
    const fpw_q8_tile* t, int32_t tile[FPW_Q8_AVX2_MR][FPW_Q8_AVX2_NR]) {
    fpw_q8_tile without_nulls;
    t = fpw_q8_without_nulls(t, &without_nulls);
    if (t->c_cs != 1) {
        /* Transposed output (NCHW with pixels as rows): finish the tile with vector
         * stores into a row-major buffer, then copy it out transposed. */
        int32_t finished[FPW_Q8_AVX2_MR][FPW_Q8_AVX2_NR];
        fpw_q8_tile row_major = *t;
        row_major.c = finished;
        row_major.c_rs = FPW_Q8_AVX2_NR;
        row_major.c_cs = 1;
        fpw_q8_avx2_epilogue(&row_major, tile);
        fpw_q8_store_transposed(t, finished, FPW_Q8_AVX2_NR);
        return;
    }
    for (size_t i = 0; i < t->mr; i++) {
        for (int v = 0; v < FPW_Q8_AVX2_NV && 8 * (size_t)v < t->nr; v++) {
            const __m256i mask = fpw_avx2_lane_mask(t->nr, v);
            __m256i bias;
            __m256 scale;
            if (t->per_row) {
                bias = _mm256_set1_epi32(t->bias[i]);
                scale = _mm256_set1_ps(t->scale[i]);
            } else {
                bias = _mm256_maskload_epi32(t->bias + 8 * v, mask);
                scale = _mm256_maskload_ps(t->scale + 8 * v, mask);
            }
            const __m256i acc = _mm256_add_epi32(_mm256_load_si256((const __m256i*)&tile[i][8 * v]), bias);
            const __m256i y = fpw_q8_avx2_finish(t, acc, scale);
            const size_t remaining = t->nr - 8 * (size_t)v;
            fpw_q8_avx2_store(t, y, mask, remaining > 8 ? 8 : remaining, (ptrdiff_t)i * t->c_rs + 8 * v);
        }
    }
}

FPW_ALWAYS_INLINE FPW_AVX2_TARGET void fpw_q8_tile_avx2(const fpw_q8_tile* t, const int MR, const int NV,
                                                        const int FULL_LOADS) {
    __m256i acc[FPW_Q8_AVX2_MR][FPW_Q8_AVX2_NV];
    __m256i mask[FPW_Q8_AVX2_NV];
    FPW_UNROLL for (int v = 0; v < NV; v++) mask[v] = fpw_avx2_lane_mask(t->nr, v);
    FPW_UNROLL for (int i = 0; i < MR; i++) {
        FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_si256();
    }
    const uint8_t* a = t->a;
    const uint8_t* b = t->b;
    const ptrdiff_t a_rs = t->a_rs, a_cs = t->a_cs, b_rs = t->b_rs;
    for (size_t k = 0; k < t->kc; k++) {
        __m256i b_vec[FPW_Q8_AVX2_NV];
        FPW_UNROLL for (int v = 0; v < NV; v++) b_vec[v] =
            FULL_LOADS ? _mm256_loadu_si256((const __m256i*)(b + 32 * v))
                       : _mm256_maskload_epi32((const int*)(b + 32 * v), mask[v]);
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            const __m256i a_vec = _mm256_set1_epi32(fpw_load_u32(a + i * a_rs));
            FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(a_vec, b_vec[v]));
        }
        a += a_cs;
        b += b_rs;
    }
    /* As in the VNNI kernel: the epilogue runs out of line from a spilled tile. */
    int32_t tile[FPW_Q8_AVX2_MR][FPW_Q8_AVX2_NR] __attribute__((aligned(32)));
    FPW_UNROLL for (int i = 0; i < MR; i++) {
        FPW_UNROLL for (int v = 0; v < NV; v++) _mm256_store_si256((__m256i*)&tile[i][8 * v], acc[i][v]);
    }
    fpw_q8_avx2_epilogue(t, tile);
}

#define FPW_Q8_AVX2_CASE(MR)                                                                                 \
    case MR:                                                                                                 \
        if (nv == 2) {                                                                                       \
            if (full_loads)                                                                                  \
                fpw_q8_tile_avx2(t, MR, 2, 1);                                                               \
            else                                                                                             \
                fpw_q8_tile_avx2(t, MR, 2, 0);                                                               \
        } else {                                                                                             \
            if (full_loads)                                                                                  \
                fpw_q8_tile_avx2(t, MR, 1, 1);                                                               \
            else                                                                                             \
                fpw_q8_tile_avx2(t, MR, 1, 0);                                                               \
        }                                                                                                    \
        break;

static FPW_AVX2_TARGET void fpw_q8_gemm_4x16__avx2(const fpw_q8_tile* t) {
    const int nv = t->nr > 8 ? 2 : 1;
    const int full_loads = t->b_padded || t->nr == (size_t)(8 * nv);
    switch (t->mr) {
        FPW_Q8_AVX2_CASE(4)
        FPW_Q8_AVX2_CASE(3)
        FPW_Q8_AVX2_CASE(2)
        FPW_Q8_AVX2_CASE(1)
        default:
            break;
    }
}
#undef FPW_Q8_AVX2_CASE

/* Peak-throughput probe: vpmaddwd then vpaddd into the accumulator, the kernel's step,
 * on 3 row operands times 2 column operands: 6 accumulators, so that with the 5 operands
 * and the products everything stays in the 16 registers (the kernel's 8 accumulators
 * read their operands from memory instead). vpmaddwd does not accumulate, so its
 * operands pass through an empty asm statement each step: the compiler must assume they
 * changed and cannot hoist the products out of the loop (the asm emits no instruction).
 * Returns ops: 16 products per vpmaddwd, 2 ops each. */
static FPW_AVX2_TARGET double fpw_q8_peak_loop__avx2(long iterations) {
    __m256i a0 = _mm256_set1_epi16(1), a1 = _mm256_set1_epi16(2), a2 = _mm256_set1_epi16(3);
    __m256i b0 = _mm256_set1_epi16(5), b1 = _mm256_set1_epi16(6);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    for (long n = 0; n < iterations; n++) {
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(b0), "+x"(b1));
        c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(a0, b0));
        c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(a0, b1));
        c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(a1, b0));
        c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(a1, b1));
        c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(a2, b0));
        c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(a2, b1));
    }
    const __m256i sum = _mm256_add_epi32(
        _mm256_add_epi32(_mm256_add_epi32(c00, c01), _mm256_add_epi32(c10, c11)), _mm256_add_epi32(c20, c21));
    volatile int sink = _mm256_extract_epi32(sum, 0);
    (void)sink;
    return 6.0 * 16.0 * 2.0 * (double)iterations;
}

static const fpw_q8_ukernel fpw_q8_ukernel__avx2 = FPW_Q8_UKERNEL(
    fpw_q8_gemm_4x16__avx2, FPW_Q8_AVX2_MR, FPW_Q8_AVX2_NR, 8, FPW_Q8_PAIR16, 0, fpw_q8_peak_loop__avx2);

#endif /* FPW_X86_64 */
#endif /* FASTPW_Q8_AVX2_H */
