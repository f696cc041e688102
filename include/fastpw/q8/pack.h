/*
 * Activation packers: the tile loop calls them by name (not through the family table)
 * to lay int8 activations out as the kernels' operand formats read them (fastpw.h).
 */
#ifndef FASTPW_Q8_PACK_H
#define FASTPW_Q8_PACK_H

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../fastpw.h"

/* PAIR16 activations, NCHW: x[c][p] (bytes, channel stride x_cs, pixels contiguous) to
 * [c / 2][p][2] int16, zero-padding an odd last channel. Pixels p in [p_begin, p_end). */
static FPW_MAYBE_UNUSED void fpw_q8_pack_pair16_nchw(const uint8_t* x, ptrdiff_t x_cs, int x_signed,
                                                     size_t channels, size_t pixels, size_t p_begin,
                                                     size_t p_end, int16_t* out) {
    const size_t groups = (channels + 1) / 2;
    for (size_t g = 0; g < groups; g++) {
        const uint8_t* row0 = x + (ptrdiff_t)(2 * g) * x_cs;
        const uint8_t* row1 = 2 * g + 1 < channels ? row0 + x_cs : NULL;
        int16_t* dst = out + 2 * g * pixels;
        for (size_t p = p_begin; p < p_end; p++) {
            dst[2 * p] = x_signed ? (int16_t)(int8_t)row0[p] : (int16_t)row0[p];
            dst[2 * p + 1] = row1 == NULL ? 0 : x_signed ? (int16_t)(int8_t)row1[p] : (int16_t)row1[p];
        }
    }
}

/* PAIR16 activations, NHWC: pixel rows x[p][c] (row stride x_ps bytes) to rows of
 * (channels + 1) / 2 int16 pairs, zero-padding an odd last channel. */
static FPW_MAYBE_UNUSED void fpw_q8_pack_pair16_nhwc(const uint8_t* x, ptrdiff_t x_ps, int x_signed,
                                                     size_t channels, size_t p_begin, size_t p_end,
                                                     int16_t* out) {
    const size_t row_length = 2 * ((channels + 1) / 2);
    for (size_t p = p_begin; p < p_end; p++) {
        const uint8_t* src = x + (ptrdiff_t)p * x_ps;
        int16_t* dst = out + p * row_length;
        for (size_t c = 0; c < channels; c++) dst[c] = x_signed ? (int16_t)(int8_t)src[c] : (int16_t)src[c];
        if (row_length > channels) dst[channels] = 0;
    }
}

/* DOT4 activations, NCHW: channel rows x[c][p] (bytes, row stride x_cs) to groups of 4
 * channels interleaved per pixel, [c / 4][p][4], for channel groups [g_begin, g_end).
 * Missing channels of the last group are zero; `flip` XORs every byte with 0x80 (int8
 * to uint8 + 128). With SSE2 (every x86-64), two rounds of byte/word unpacks interleave
 * 16 pixels at a time; the plain loop finishes the row and serves other CPUs. */
static FPW_MAYBE_UNUSED void fpw_q8_pack_dot4_nchw(const uint8_t* x, ptrdiff_t x_cs, int flip,
                                                   size_t channels, size_t pixels, size_t g_begin,
                                                   size_t g_end, uint8_t* out) {
#if defined(__SSE2__)
    const __m128i flip_bits = flip ? _mm_set1_epi8((char)0x80) : _mm_setzero_si128();
#endif
    for (size_t g = g_begin; g < g_end; g++) {
        const uint8_t* rows[4];
        int present[4];
        for (int q = 0; q < 4; q++) {
            present[q] = 4 * g + q < channels;
            rows[q] = present[q] ? x + (ptrdiff_t)(4 * g + q) * x_cs : NULL;
        }
        uint8_t* dst = out + 4 * g * pixels;
        size_t p = 0;
#if defined(__SSE2__)
        for (; p + 16 <= pixels; p += 16) {
            __m128i r[4];
            for (int q = 0; q < 4; q++)
                r[q] = present[q] ? _mm_xor_si128(_mm_loadu_si128((const __m128i*)(rows[q] + p)), flip_bits)
                                  : _mm_setzero_si128();
            const __m128i lo01 = _mm_unpacklo_epi8(r[0], r[1]), hi01 = _mm_unpackhi_epi8(r[0], r[1]);
            const __m128i lo23 = _mm_unpacklo_epi8(r[2], r[3]), hi23 = _mm_unpackhi_epi8(r[2], r[3]);
            _mm_storeu_si128((__m128i*)(dst + 4 * p), _mm_unpacklo_epi16(lo01, lo23));
            _mm_storeu_si128((__m128i*)(dst + 4 * p + 16), _mm_unpackhi_epi16(lo01, lo23));
            _mm_storeu_si128((__m128i*)(dst + 4 * p + 32), _mm_unpacklo_epi16(hi01, hi23));
            _mm_storeu_si128((__m128i*)(dst + 4 * p + 48), _mm_unpackhi_epi16(hi01, hi23));
        }
#endif
        for (; p < pixels; p++) {
            for (int q = 0; q < 4; q++)
                dst[4 * p + q] = present[q] ? (uint8_t)(rows[q][p] ^ (flip ? 0x80 : 0)) : 0;
        }
    }
}

#endif /* FASTPW_Q8_PACK_H */
