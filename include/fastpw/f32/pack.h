/*
 * The float32 activation packer: the tile loop calls it by name (not through the family
 * table) to lay NCHW pixels out as B panels, the layout the kernels read weights in.
 *
 * Why: read in place, an NCHW tile's B row k is 16 pixels of channel k, one plane away
 * from row k - 1. A tile then touches a new cache line, often a new page, per channel,
 * and planes whose size is a multiple of 4 KiB put every row in the same L1 set. Packed,
 * a tile streams one contiguous panel, and the block's tiles reuse it from L1/L2.
 */
#ifndef FASTPW_F32_PACK_H
#define FASTPW_F32_PACK_H

#include <string.h>

#include "../fastpw.h"

/* One panel: n <= width pixels of every channel, zero-padded to width. Inlined with a
 * constant width, a full row is a few fixed-size vector moves rather than a memcpy call
 * (which cost as much as the tiles' arithmetic on 16-channel layers). */
FPW_ALWAYS_INLINE void fpw_f32_pack_panel(const float* src, ptrdiff_t x_cs, size_t channels, size_t n,
                                          const size_t width, float* out) {
    if (n == width) {
        for (size_t c = 0; c < channels; c++) {
            memcpy(out, src, width * sizeof(float));
            src += x_cs;
            out += width;
        }
        return;
    }
    for (size_t c = 0; c < channels; c++) {
        for (size_t j = 0; j < width; j++) out[j] = j < n ? src[j] : 0.0f;
        src += x_cs;
        out += width;
    }
}

/* NCHW pixels [p_begin, p_end) of x[c][p] (channel stride x_cs floats) to panels of
 * `width` pixels: panel q holds [c][width] for pixels p_begin + q * width onwards,
 * zero-padded past p_end, so the kernels may read whole panels (b_padded). */
static FPW_MAYBE_UNUSED void fpw_f32_pack_nchw_panels(const float* x, ptrdiff_t x_cs, size_t channels,
                                                      size_t p_begin, size_t p_end, size_t width,
                                                      float* out) {
    for (size_t p0 = p_begin; p0 < p_end; p0 += width) {
        const size_t n = p_end - p0 < width ? p_end - p0 : width;
        switch (width) { /* the NR of every family: 8 (scalar, neon), 16 (avx2), 32 */
            case 8:
                fpw_f32_pack_panel(x + p0, x_cs, channels, n, 8, out);
                break;
            case 16:
                fpw_f32_pack_panel(x + p0, x_cs, channels, n, 16, out);
                break;
            case 32:
                fpw_f32_pack_panel(x + p0, x_cs, channels, n, 32, out);
                break;
            default:
                fpw_f32_pack_panel(x + p0, x_cs, channels, n, width, out);
                break;
        }
        out += channels * width;
    }
}

#endif /* FASTPW_F32_PACK_H */
