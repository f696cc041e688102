/*
 * fpw_q8_gemm_12x32__avx512vnni: int8 microkernel for AVX512-VNNI (DOT4 format).
 *
 * Instructions: vpbroadcastd of 4 bytes, vpdpbusd zmm (16 lanes, each summing four
 * uint8 x int8 products into int32: exact, no saturating intermediate), k-masked loads;
 * the epilogue uses vcvtdq2ps, vmulps, vcvtps2dq with embedded round-to-nearest-even
 * and vpmovusdb/vpmovsdb narrowing stores under a mask.
 * Registers: 12 rows x 2 zmm = 24 accumulators + 2 for B + 1 broadcast = 27 of 32.
 * Why 12x32: the same reasoning as the float32 kernel: 24 independent vpdpbusd chains
 * hide its latency on one or two 512-bit pipes, and each step issues 24 of them for 14
 * loads.
 * vpdpbusd multiplies unsigned by signed bytes: activations are the unsigned side. int8
 * activations are flipped to uint8 + 128 (XOR 0x80, in the kernel for NHWC rows, in the
 * packer for NCHW), and the plan folds -128 * sum(w) into the bias.
 */
#ifndef FASTPW_Q8_AVX512VNNI_H
#define FASTPW_Q8_AVX512VNNI_H

#include "../fastpw.h"
#include "../x86_common.h"
#include "epilogue.h"

#if FPW_X86_64
#include <immintrin.h>

#define FPW_Q8_VNNI_MR 12
#define FPW_Q8_VNNI_NV 2
#define FPW_Q8_VNNI_NR (16 * FPW_Q8_VNNI_NV)

/* The epilogue's constants, copied out of the tile once: read through `t`, the compiler
 * would reload them after every byte store (a char store may alias anything). */
typedef struct fpw_q8_vnni_requant {
    int out_type, clamp, per_row;
    __m512 lo, hi;
    __m512i zero_point;
} fpw_q8_vnni_requant;

/* One 16-lane vector of accumulators (bias added) through the epilogue: the final
 * values as int32 lanes (8-bit and int32 outputs) or float lanes (float32 output). */
FPW_ALWAYS_INLINE FPW_AVX512VNNI_TARGET __m512i fpw_q8_vnni_finish(const fpw_q8_vnni_requant* r, __m512i acc,
                                                                   __m512 scale) {
    if (r->out_type == FPW_Q8_OUT_S32) return acc;
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale);
    if (r->out_type == FPW_Q8_OUT_F32) {
        if (r->clamp) v = _mm512_min_ps(r->hi, _mm512_max_ps(r->lo, v));
        return _mm512_castps_si512(v);
    }
    v = _mm512_min_ps(r->hi, _mm512_max_ps(r->lo, v));
    const __m512i q = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_add_epi32(q, r->zero_point);
}

/* Finished lanes narrowed to 16 bytes with saturation (8-bit outputs). The empty asm
 * keeps the compiler from fusing the narrowing into a store: vpmovusdb/vpmovsdb with a
 * memory operand is several times slower than the register form plus a plain store. */
FPW_ALWAYS_INLINE FPW_AVX512VNNI_TARGET __m128i fpw_q8_vnni_narrow(const fpw_q8_vnni_requant* r, __m512i y) {
    __m128i bytes = r->out_type == FPW_Q8_OUT_U8 ? _mm512_cvtusepi32_epi8(y) : _mm512_cvtsepi32_epi8(y);
    __asm__("" : "+v"(bytes));
    return bytes;
}

/* Bias and finish for lanes [16v, 16v + 16) of tile row i. */
FPW_ALWAYS_INLINE FPW_AVX512VNNI_TARGET __m512i fpw_q8_vnni_finish_row(const fpw_q8_tile* t,
                                                                       const fpw_q8_vnni_requant* r,
                                                                       const int32_t* tile_row, size_t i,
                                                                       int v, __mmask16 mask) {
    __m512i bias;
    __m512 scale;
    if (r->per_row) {
        bias = _mm512_set1_epi32(t->bias[i]);
        scale = _mm512_set1_ps(t->scale[i]);
    } else {
        bias = _mm512_maskz_loadu_epi32(mask, t->bias + 16 * v);
        scale = _mm512_maskz_loadu_ps(mask, t->scale + 16 * v);
    }
    return fpw_q8_vnni_finish(r, _mm512_add_epi32(_mm512_load_si512(tile_row + 16 * v), bias), scale);
}

/* In-register transpose of a 16 x 16 byte matrix (row i in r[i] becomes column i):
 * four rounds of unpacks, 64 shuffles for 256 bytes. */
FPW_ALWAYS_INLINE FPW_AVX512VNNI_TARGET void fpw_transpose_16x16_u8(__m128i r[16]) {
    __m128i b[16], c[16], d[16];
    FPW_UNROLL for (int k = 0; k < 8; k++) {
        b[2 * k] = _mm_unpacklo_epi8(r[2 * k], r[2 * k + 1]);
        b[2 * k + 1] = _mm_unpackhi_epi8(r[2 * k], r[2 * k + 1]);
    }
    FPW_UNROLL for (int k = 0; k < 4; k++) {
        c[4 * k + 0] = _mm_unpacklo_epi16(b[4 * k + 0], b[4 * k + 2]);
        c[4 * k + 1] = _mm_unpackhi_epi16(b[4 * k + 0], b[4 * k + 2]);
        c[4 * k + 2] = _mm_unpacklo_epi16(b[4 * k + 1], b[4 * k + 3]);
        c[4 * k + 3] = _mm_unpackhi_epi16(b[4 * k + 1], b[4 * k + 3]);
    }
    FPW_UNROLL for (int k = 0; k < 2; k++) {
        FPW_UNROLL for (int j = 0; j < 4; j++) {
            d[8 * k + 2 * j] = _mm_unpacklo_epi32(c[8 * k + j], c[8 * k + 4 + j]);
            d[8 * k + 2 * j + 1] = _mm_unpackhi_epi32(c[8 * k + j], c[8 * k + 4 + j]);
        }
    }
    FPW_UNROLL for (int j = 0; j < 8; j++) {
        r[2 * j] = _mm_unpacklo_epi64(d[j], d[8 + j]);
        r[2 * j + 1] = _mm_unpackhi_epi64(d[j], d[8 + j]);
    }
}

/* Bias, requantization and stores for a finished tile of accumulators. */
static FPW_AVX512VNNI_TARGET __attribute__((noinline)) void fpw_q8_vnni_epilogue(
    const fpw_q8_tile* t, int32_t tile[FPW_Q8_VNNI_MR][FPW_Q8_VNNI_NR]) {
    fpw_q8_tile without_nulls;
    t = fpw_q8_without_nulls(t, &without_nulls);
    const fpw_q8_vnni_requant r = {
        .out_type = t->out_type,
        .clamp = t->clamp,
        .per_row = t->per_row,
        .lo = _mm512_set1_ps(t->lo),
        .hi = _mm512_set1_ps(t->hi),
        .zero_point = _mm512_set1_epi32(t->zero_point),
    };
    const size_t mr = t->mr, nr = t->nr;
    const ptrdiff_t c_rs = t->c_rs, c_cs = t->c_cs;
    const int bytes_out = r.out_type == FPW_Q8_OUT_U8 || r.out_type == FPW_Q8_OUT_S8;
    if (c_cs == 1) {
        for (size_t i = 0; i < mr; i++) {
            for (int v = 0; v < FPW_Q8_VNNI_NV && 16 * (size_t)v < nr; v++) {
                const __mmask16 mask = fpw_avx512_lane_mask(nr, v);
                const __m512i y = fpw_q8_vnni_finish_row(t, &r, tile[i], i, v, mask);
                if (bytes_out)
                    _mm_mask_storeu_epi8((uint8_t*)t->c + (ptrdiff_t)i * c_rs + 16 * v, mask,
                                         fpw_q8_vnni_narrow(&r, y));
                else /* int32 and float32 lanes are both 32-bit */
                    _mm512_mask_storeu_epi32((int32_t*)t->c + (ptrdiff_t)i * c_rs + 16 * v, mask, y);
            }
        }
    } else if (c_rs == 1 && bytes_out) {
        /* Transposed bytes (NCHW with pixels as rows): each 16-lane slice of the tile
         * narrows into 16-byte rows, is transposed in registers, and each output
         * channel's run of mr pixels goes out in one masked store. Storing byte by byte
         * instead floods the store queue (it halved the speed of 7x7 NCHW layers). */
        const __mmask16 rows = (__mmask16)((1u << mr) - 1u);
        for (int v = 0; v < FPW_Q8_VNNI_NV && 16 * (size_t)v < nr; v++) {
            const __mmask16 mask = fpw_avx512_lane_mask(nr, v);
            /* The transpose takes 16 rows and the tile has 12: rows past FPW_Q8_VNNI_MR
             * are zero by a compile-time test, so no unrolled instance indexes tile[12..15]
             * (GCC flagged those as -Warray-bounds when only `i < mr` guarded them). */
            __m128i bytes[16];
            FPW_UNROLL for (int i = 0; i < 16; i++) bytes[i] =
                i < FPW_Q8_VNNI_MR && (size_t)i < mr
                    ? fpw_q8_vnni_narrow(&r, fpw_q8_vnni_finish_row(t, &r, tile[i], (size_t)i, v, mask))
                    : _mm_setzero_si128();
            fpw_transpose_16x16_u8(bytes);
            const size_t lanes = nr - 16 * (size_t)v < 16 ? nr - 16 * (size_t)v : 16;
            for (size_t j = 0; j < lanes; j++)
                _mm_mask_storeu_epi8((uint8_t*)t->c + (ptrdiff_t)(16 * v + j) * c_cs, rows, bytes[j]);
        }
    } else {
        /* Other transposed outputs: finish into a row-major buffer, then scatter. */
        int32_t finished[FPW_Q8_VNNI_MR][FPW_Q8_VNNI_NR];
        for (size_t i = 0; i < mr; i++) {
            for (int v = 0; v < FPW_Q8_VNNI_NV && 16 * (size_t)v < nr; v++) {
                const __mmask16 mask = fpw_avx512_lane_mask(nr, v);
                _mm512_storeu_si512(&finished[i][16 * v], fpw_q8_vnni_finish_row(t, &r, tile[i], i, v, mask));
            }
        }
        fpw_q8_store_transposed(t, finished, FPW_Q8_VNNI_NR);
    }
}

/* A_ROWS: A(i, c) at a + i*a_rs + 4c (activation rows, NHWC). Otherwise A(i, c) at
 * a + 4i + c*a_cs (weight panels, or NCHW activations packed in groups of 4 channels). */
FPW_ALWAYS_INLINE FPW_AVX512VNNI_TARGET void fpw_q8_tile_vnni(const fpw_q8_tile* t, const int MR,
                                                              const int NV, const int A_ROWS,
                                                              const int A_IS_DATA, const int FLIP) {
    __m512i acc[FPW_Q8_VNNI_MR][FPW_Q8_VNNI_NV];
    __mmask16 mask[FPW_Q8_VNNI_NV];
    const uint8_t* a_row[FPW_Q8_VNNI_MR];
    const __m512i sign_bits = _mm512_set1_epi32((int32_t)0x80808080u);
    FPW_UNROLL for (int v = 0; v < NV; v++) mask[v] = fpw_avx512_lane_mask(t->nr, v);
    FPW_UNROLL for (int i = 0; i < MR; i++) {
        a_row[i] = t->a + (ptrdiff_t)i * t->a_rs;
        FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_si512();
    }
    const uint8_t* a = t->a;
    const uint8_t* b = t->b;
    const ptrdiff_t a_cs = t->a_cs, b_rs = t->b_rs;
    /* A partial last group (NHWC rows, channels not a multiple of 4) runs as a second
     * pass of the same loop over a zero-padded copy of its bytes: one loop nest keeps
     * the accumulators in registers. B is zero where the copy is padded. */
    int32_t tail[FPW_Q8_VNNI_MR];
    size_t steps = t->kc;
    ptrdiff_t row_offset = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < steps; k++) {
            __m512i b_vec[FPW_Q8_VNNI_NV];
            FPW_UNROLL for (int v = 0; v < NV; v++) b_vec[v] = _mm512_maskz_loadu_epi32(mask[v], b + 64 * v);
            FPW_UNROLL for (int i = 0; i < MR; i++) {
                __m512i a_vec = _mm512_set1_epi32(fpw_load_u32(A_ROWS ? a_row[i] + row_offset : a + 4 * i));
                if (FLIP) a_vec = _mm512_xor_si512(a_vec, sign_bits);
                FPW_UNROLL for (int v = 0; v < NV; v++) acc[i][v] =
                    A_IS_DATA ? _mm512_dpbusd_epi32(acc[i][v], a_vec, b_vec[v])
                              : _mm512_dpbusd_epi32(acc[i][v], b_vec[v], a_vec);
            }
            a += a_cs;
            row_offset += 4;
            b += b_rs;
        }
        if (!A_ROWS || t->a_tail == 0 || pass == 1) break;
        FPW_UNROLL for (int i = 0; i < MR; i++) {
            tail[i] = 0;
            memcpy(&tail[i], a_row[i] + row_offset, t->a_tail);
            a_row[i] = (const uint8_t*)&tail[i];
        }
        row_offset = 0;
        steps = 1;
    }
    /* Hand the finished tile to an out-of-line epilogue through memory: keeping the
     * output-type cases out of this function lets the accumulators stay in registers. */
    int32_t tile[FPW_Q8_VNNI_MR][FPW_Q8_VNNI_NR] __attribute__((aligned(64)));
    FPW_UNROLL for (int i = 0; i < MR; i++) {
        FPW_UNROLL for (int v = 0; v < NV; v++) _mm512_store_si512(&tile[i][16 * v], acc[i][v]);
    }
    fpw_q8_vnni_epilogue(t, tile);
}

/* Three operand arrangements occur: NHWC activation rows (A_ROWS), packed NCHW
 * activations read down a channel group (flipped by the packer, so flip is 0), and weight
 * panels on the broadcast side. Activations read in place may need the sign flip in
 * either addressing mode (rows of exactly 4 channels look like column mode). */
#define FPW_Q8_VNNI_MODES(MR, NV)                                                                            \
    if (a_rows) {                                                                                            \
        if (flip)                                                                                            \
            fpw_q8_tile_vnni(t, MR, NV, 1, 1, 1);                                                            \
        else                                                                                                 \
            fpw_q8_tile_vnni(t, MR, NV, 1, 1, 0);                                                            \
    } else if (t->a_is_data) {                                                                               \
        if (flip)                                                                                            \
            fpw_q8_tile_vnni(t, MR, NV, 0, 1, 1);                                                            \
        else                                                                                                 \
            fpw_q8_tile_vnni(t, MR, NV, 0, 1, 0);                                                            \
    } else {                                                                                                 \
        fpw_q8_tile_vnni(t, MR, NV, 0, 0, 0);                                                                \
    }

#define FPW_Q8_VNNI_CASE(MR)                                                                                 \
    case MR:                                                                                                 \
        if (nv == 2) {                                                                                       \
            FPW_Q8_VNNI_MODES(MR, 2)                                                                         \
        } else {                                                                                             \
            FPW_Q8_VNNI_MODES(MR, 1)                                                                         \
        }                                                                                                    \
        break;

static FPW_AVX512VNNI_TARGET void fpw_q8_gemm_12x32__avx512vnni(const fpw_q8_tile* t) {
    /* Row mode and column mode address full groups identically when a_rs == a_cs == 4;
     * only row mode reads a partial last group. */
    const int a_rows = t->a_tail > 0 || (t->a_cs == 4 && t->a_rs != 4);
    const int flip = t->a_flip_sign;
    const int nv = t->nr > 16 ? 2 : 1;
    switch (t->mr) {
        FPW_Q8_VNNI_CASE(12)
        FPW_Q8_VNNI_CASE(11)
        FPW_Q8_VNNI_CASE(10)
        FPW_Q8_VNNI_CASE(9)
        FPW_Q8_VNNI_CASE(8)
        FPW_Q8_VNNI_CASE(7)
        FPW_Q8_VNNI_CASE(6)
        FPW_Q8_VNNI_CASE(5)
        FPW_Q8_VNNI_CASE(4)
        FPW_Q8_VNNI_CASE(3)
        FPW_Q8_VNNI_CASE(2)
        FPW_Q8_VNNI_CASE(1)
        default:
            break;
    }
}
#undef FPW_Q8_VNNI_CASE
#undef FPW_Q8_VNNI_MODES

/* Peak-throughput probe: 24 independent vpdpbusd chains in registers, the tile's
 * accumulator count. Returns ops: 64 products per vpdpbusd zmm, 2 ops each. */
static FPW_AVX512VNNI_TARGET double fpw_q8_peak_loop__avx512vnni(long iterations) {
    __m512i acc[24];
    const __m512i u = _mm512_set1_epi8(3), w = _mm512_set1_epi8(-5);
    FPW_UNROLL for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_epi32(i);
    for (long n = 0; n < iterations; n++) {
        FPW_UNROLL for (int i = 0; i < 24; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], u, w);
    }
    __m512i sum = acc[0];
    FPW_UNROLL for (int i = 1; i < 24; i++) sum = _mm512_add_epi32(sum, acc[i]);
    /* One lane keeps the loop alive. Not _mm512_reduce_add_epi32: GCC's header sums the
     * lanes as C ints, whose overflow (certain after many iterations) is undefined. */
    volatile int sink = _mm_cvtsi128_si32(_mm512_castsi512_si128(sum));
    (void)sink;
    return 24.0 * 64.0 * 2.0 * (double)iterations;
}

static const fpw_q8_ukernel fpw_q8_ukernel__avx512vnni =
    FPW_Q8_UKERNEL(fpw_q8_gemm_12x32__avx512vnni, FPW_Q8_VNNI_MR, FPW_Q8_VNNI_NR, 16, FPW_Q8_DOT4, 0,
                   fpw_q8_peak_loop__avx512vnni);

#endif /* FPW_X86_64 */
#endif /* FASTPW_Q8_AVX512VNNI_H */
