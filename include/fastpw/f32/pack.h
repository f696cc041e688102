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

/* One channel's run of pixels, [0, n), into its row of each panel: panel q's row is
 * width floats, panel_stride floats after panel q - 1's. Inlined with a constant width,
 * a full row is a few fixed-size vector moves rather than a memcpy call (which cost as
 * much as the tiles' arithmetic on 16-channel layers). */
FPW_ALWAYS_INLINE void fpw_f32_pack_channel(const float* src, size_t n, const size_t width,
                                            size_t panel_stride, float* out) {
    size_t p = 0;
    for (; p + width <= n; p += width) {
        memcpy(out, src + p, width * sizeof(float));
        out += panel_stride;
    }
    if (p < n) {
        for (size_t j = 0; j < width; j++) out[j] = p + j < n ? src[p + j] : 0.0f;
    }
}

/* NCHW pixels [p_begin, p_end) of x[c][p] (channel stride x_cs floats) to panels of
 * `width` pixels: panel q holds [c][width] for pixels p_begin + q * width onwards,
 * zero-padded past p_end, so the kernels may read whole panels (b_padded). Channel by
 * channel, so that x is read as one sequential stream: panel by panel, every channel
 * was a stream of its own, too many for the prefetchers when x comes from memory
 * (64->64 127x127: packing was 29% of the time). */
static FPW_MAYBE_UNUSED void fpw_f32_pack_nchw_panels(const float* x, ptrdiff_t x_cs, size_t channels,
                                                      size_t p_begin, size_t p_end, size_t width,
                                                      float* out) {
    const size_t n = p_end - p_begin, panel_stride = channels * width;
    for (size_t c = 0; c < channels; c++) {
        const float* src = x + (ptrdiff_t)c * x_cs + p_begin;
        float* row = out + c * width;
        /* A constant width for the NR and MR of every family (4, 6, 8, 12, 16, 32). */
#define FPW_PACK_WIDTH(W)                                                                                    \
    case W:                                                                                                  \
        fpw_f32_pack_channel(src, n, W, panel_stride, row);                                                  \
        break;
        switch (width) {
            FPW_PACK_WIDTH(4)
            FPW_PACK_WIDTH(6)
            FPW_PACK_WIDTH(8)
            FPW_PACK_WIDTH(12)
            FPW_PACK_WIDTH(16)
            FPW_PACK_WIDTH(32)
            default:
                fpw_f32_pack_channel(src, n, width, panel_stride, row);
                break;
        }
#undef FPW_PACK_WIDTH
    }
}

#endif /* FASTPW_F32_PACK_H */
