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
#include "scalar.h"

#if FPW_X86_64
#include <immintrin.h>

#define FPW_Q8_VNNI_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni")))
#define FPW_Q8_VNNI_MR 12
#define FPW_Q8_VNNI_NV 2
#define FPW_Q8_VNNI_NR (16 * FPW_Q8_VNNI_NV)

FPW_ALWAYS_INLINE FPW_Q8_VNNI_TARGET int32_t fpw_q8_vnni_load_u32(const uint8_t* p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

FPW_ALWAYS_INLINE FPW_Q8_VNNI_TARGET __mmask16 fpw_q8_vnni_lane_mask(size_t nr, int v) {
    ptrdiff_t remaining = (ptrdiff_t)nr - 16 * v;
    if (remaining >= 16) return (__mmask16)0xFFFF;
    if (remaining <= 0) return (__mmask16)0;
    return (__mmask16)((1u << remaining) - 1u);
}

/* One 16-lane vector of accumulators (bias added) through the epilogue: the final
 * values as int32 lanes (8-bit and int32 outputs) or float lanes (float32 output). */
FPW_ALWAYS_INLINE FPW_Q8_VNNI_TARGET __m512i fpw_q8_vnni_finish(const fpw_q8_tile* t, __m512i acc,
                                                                __m512 scale) {
    if (t->out_type == FPW_Q8_OUT_S32) return acc;
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale);
    if (t->out_type == FPW_Q8_OUT_F32) {
        if (t->clamp) v = _mm512_min_ps(_mm512_set1_ps(t->hi), _mm512_max_ps(_mm512_set1_ps(t->lo), v));
        return _mm512_castps_si512(v);
    }
    v = _mm512_min_ps(_mm512_set1_ps(t->hi), _mm512_max_ps(_mm512_set1_ps(t->lo), v));
    const __m512i q = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_add_epi32(q, _mm512_set1_epi32(t->zero_point));
}

/* Store finished lanes along unit stride under a mask, narrowing 8-bit outputs. */
FPW_ALWAYS_INLINE FPW_Q8_VNNI_TARGET void fpw_q8_vnni_store(const fpw_q8_tile* t, __m512i y, __mmask16 mask,
                                                            ptrdiff_t offset) {
    switch (t->out_type) {
        case FPW_Q8_OUT_U8:
            _mm512_mask_cvtusepi32_storeu_epi8((uint8_t*)t->c + offset, mask, y);
            break;
        case FPW_Q8_OUT_S8:
            _mm512_mask_cvtsepi32_storeu_epi8((int8_t*)t->c + offset, mask, y);
            break;
        default: /* int32 and float32 lanes are both 32-bit */
            _mm512_mask_storeu_epi32((int32_t*)t->c + offset, mask, y);
    }
}

/* In-register transpose of a 16 x 16 byte matrix (row i in r[i] becomes column i):
 * four rounds of unpacks, 64 shuffles for 256 bytes. */
FPW_ALWAYS_INLINE FPW_Q8_VNNI_TARGET void fpw_transpose_16x16_u8(__m128i r[16]) {
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

/* A finished tile of bytes (row-major, rows tile_rs bytes apart) to C transposed, for
 * 8-bit output with c_rs == 1: each output channel's run of mr pixels goes out in one
 * masked store. Scattering byte by byte instead floods the store queue and stalls the
 * next tile's loads (it halved the speed of NCHW layers with 7x7 pixels). */
static FPW_Q8_VNNI_TARGET void fpw_q8_vnni_store_transposed_bytes(const fpw_q8_tile* t, const uint8_t* tile,
                                                                  size_t tile_rs) {
    const __mmask16 rows = (__mmask16)((1u << t->mr) - 1u);
    for (size_t first = 0; first < t->nr; first += 16) {
        __m128i r[16];
        FPW_UNROLL for (int i = 0; i < 16; i++) r[i] =
            (size_t)i < t->mr ? _mm_loadu_si128((const __m128i*)(tile + i * tile_rs + first))
                              : _mm_setzero_si128();
        fpw_transpose_16x16_u8(r);
        const size_t last = t->nr < first + 16 ? t->nr : first + 16;
        for (size_t j = first; j < last; j++)
            _mm_mask_storeu_epi8((uint8_t*)t->c + (ptrdiff_t)j * t->c_cs, rows, r[j - first]);
    }
}

/* Bias, requantization and stores for a finished tile of accumulators. */
static FPW_Q8_VNNI_TARGET __attribute__((noinline)) void fpw_q8_vnni_epilogue(
    const fpw_q8_tile* t, int32_t tile[FPW_Q8_VNNI_MR][FPW_Q8_VNNI_NR]) {
    if (t->c_cs != 1) {
        /* Transposed output (NCHW with pixels as rows): finish the tile with vector
         * stores into a row-major buffer, then copy it out transposed. */
        int32_t finished[FPW_Q8_VNNI_MR][FPW_Q8_VNNI_NR];
        fpw_q8_tile row_major = *t;
        row_major.c = finished;
        row_major.c_rs = FPW_Q8_VNNI_NR;
        row_major.c_cs = 1;
        fpw_q8_vnni_epilogue(&row_major, tile);
        if (t->c_rs == 1 && (t->out_type == FPW_Q8_OUT_U8 || t->out_type == FPW_Q8_OUT_S8))
            fpw_q8_vnni_store_transposed_bytes(t, (const uint8_t*)finished, FPW_Q8_VNNI_NR);
        else
            fpw_q8_store_transposed(t, finished, FPW_Q8_VNNI_NR);
        return;
    }
    for (size_t i = 0; i < t->mr; i++) {
        for (int v = 0; v < FPW_Q8_VNNI_NV && 16 * (size_t)v < t->nr; v++) {
            const __mmask16 mask = fpw_q8_vnni_lane_mask(t->nr, v);
            __m512i bias;
            __m512 scale;
            if (t->per_row) {
                bias = _mm512_set1_epi32(t->bias[i]);
                scale = _mm512_set1_ps(t->scale[i]);
            } else {
                bias = _mm512_maskz_loadu_epi32(mask, t->bias + 16 * v);
                scale = _mm512_maskz_loadu_ps(mask, t->scale + 16 * v);
            }
            const __m512i acc = _mm512_add_epi32(_mm512_load_si512(&tile[i][16 * v]), bias);
            const __m512i y = fpw_q8_vnni_finish(t, acc, scale);
            fpw_q8_vnni_store(t, y, mask, (ptrdiff_t)i * t->c_rs + 16 * v);
        }
    }
}

/* A_ROWS: A(i, c) at a + i*a_rs + 4c (activation rows, NHWC). Otherwise A(i, c) at
 * a + 4i + c*a_cs (weight panels, or NCHW activations packed in groups of 4 channels). */
FPW_ALWAYS_INLINE FPW_Q8_VNNI_TARGET void fpw_q8_tile_vnni(const fpw_q8_tile* t, const int MR, const int NV,
                                                           const int A_ROWS, const int A_IS_DATA,
                                                           const int FLIP) {
    __m512i acc[FPW_Q8_VNNI_MR][FPW_Q8_VNNI_NV];
    __mmask16 mask[FPW_Q8_VNNI_NV];
    const uint8_t* a_row[FPW_Q8_VNNI_MR];
    const __m512i sign_bits = _mm512_set1_epi32((int32_t)0x80808080u);
    FPW_UNROLL for (int v = 0; v < NV; v++) mask[v] = fpw_q8_vnni_lane_mask(t->nr, v);
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
                __m512i a_vec =
                    _mm512_set1_epi32(fpw_q8_vnni_load_u32(A_ROWS ? a_row[i] + row_offset : a + 4 * i));
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

static FPW_Q8_VNNI_TARGET void fpw_q8_gemm_12x32__avx512vnni(const fpw_q8_tile* t) {
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

#endif /* FPW_X86_64 */
#endif /* FASTPW_Q8_AVX512VNNI_H */
