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

/* Channels [c_begin, c_end) of pixels [p_begin, p_begin + n) into their rows of each
 * panel: panel q is panel_stride floats after panel q - 1, and channel c's row in it is
 * width floats at c * width. Inlined with a constant width, a full row is a few
 * fixed-size vector moves rather than a memcpy call (which cost as much as the tiles'
 * arithmetic on 16-channel layers). */
FPW_ALWAYS_INLINE void fpw_f32_pack_channels(const float* x, ptrdiff_t x_cs, size_t c_begin, size_t c_end,
                                             size_t p_begin, size_t n, const size_t width,
                                             size_t panel_stride, float* out) {
    float* panel = out;
    size_t p = 0;
    for (; p + width <= n; p += width) {
        for (size_t c = c_begin; c < c_end; c++)
            memcpy(panel + c * width, x + (ptrdiff_t)c * x_cs + p_begin + p, width * sizeof(float));
        panel += panel_stride;
    }
    if (p < n) {
        for (size_t c = c_begin; c < c_end; c++) {
            const float* src = x + (ptrdiff_t)c * x_cs + p_begin;
            for (size_t j = 0; j < width; j++) panel[c * width + j] = p + j < n ? src[p + j] : 0.0f;
        }
    }
}

/* Channels packed together: each is a sequential stream through its plane. */
#define FPW_F32_PACK_CHANNELS 8

/* NCHW pixels [p_begin, p_end) of x[c][p] (channel stride x_cs floats) to panels of
 * `width` pixels: panel q holds [c][width] for pixels p_begin + q * width onwards,
 * zero-padded past p_end, so the kernels may read whole panels (b_padded).
 * Eight channels at a time, so that x is read as eight sequential streams and every
 * panel receives eight rows in a run of adjacent lines:
 * - panel by panel over all channels, every channel was a stream of its own, too many
 *   for the prefetchers when x comes from memory (64->64 127x127: packing was 29% of
 *   the time);
 * - channel by channel, one channel's rows lie panel_stride apart, and when that is a
 *   multiple of 4 KiB (64 channels of 16-float panels) they all fall into one L1 set
 *   (64->256 56x56 NCHW: 17% slower). */
static FPW_MAYBE_UNUSED void fpw_f32_pack_nchw_panels(const float* x, ptrdiff_t x_cs, size_t channels,
                                                      size_t p_begin, size_t p_end, size_t width,
                                                      float* out) {
    const size_t n = p_end - p_begin, panel_stride = channels * width;
    for (size_t c_begin = 0; c_begin < channels; c_begin += FPW_F32_PACK_CHANNELS) {
        const size_t c_end =
            channels - c_begin < FPW_F32_PACK_CHANNELS ? channels : c_begin + FPW_F32_PACK_CHANNELS;
        /* A constant width for the NR and MR of every family (4, 6, 8, 12, 16, 32). */
#define FPW_PACK_WIDTH(W)                                                                                    \
    case W:                                                                                                  \
        fpw_f32_pack_channels(x, x_cs, c_begin, c_end, p_begin, n, W, panel_stride, out);                    \
        break;
        switch (width) {
            FPW_PACK_WIDTH(4)
            FPW_PACK_WIDTH(6)
            FPW_PACK_WIDTH(8)
            FPW_PACK_WIDTH(12)
            FPW_PACK_WIDTH(16)
            FPW_PACK_WIDTH(32)
            default:
                fpw_f32_pack_channels(x, x_cs, c_begin, c_end, p_begin, n, width, panel_stride, out);
                break;
        }
#undef FPW_PACK_WIDTH
    }
}

#endif /* FASTPW_F32_PACK_H */
