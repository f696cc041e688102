/*
 * The int8 epilogue every family shares where it does not vectorise it: the
 * requantizing store of one accumulator, as the contract in fastpw.h defines it, and
 * the transposed copy of a finished tile.
 */
#ifndef FASTPW_Q8_EPILOGUE_H
#define FASTPW_Q8_EPILOGUE_H

#include <math.h>

#include "../fastpw.h"

/* What a vector epilogue reads for a NULL bias or scale (fastpw.h): zeros, as many as
 * any tile's rows or columns. */
static const int32_t fpw_q8_zero_bias[64] = {0};
static const float fpw_q8_zero_scale[64] = {0};

/* Point a tile's NULL bias and scale at zeros, in `copy`: the vector epilogues then load
 * them without a test per vector. Returns the tile to read. */
static inline const fpw_q8_tile* fpw_q8_without_nulls(const fpw_q8_tile* t, fpw_q8_tile* copy) {
    if (t->bias != NULL && t->scale != NULL) return t;
    *copy = *t;
    if (copy->bias == NULL) copy->bias = fpw_q8_zero_bias;
    if (copy->scale == NULL) copy->scale = fpw_q8_zero_scale;
    return copy;
}

/* Round half to even whatever the FPU rounding mode; |v| <= 255 after clamping, so
 * the floor converts to int exactly. */
static inline int32_t fpw_round_half_even(float v) {
    const float floor_v = floorf(v);
    const float fraction = v - floor_v;
    int32_t r = (int32_t)floor_v;
    if (fraction > 0.5f || (fraction == 0.5f && (r & 1))) r += 1;
    return r;
}

/* The epilogue for one accumulator, as the contract in fastpw.h defines it. */
static inline void fpw_q8_store_one(const fpw_q8_tile* t, int32_t acc, float scale, ptrdiff_t offset) {
    switch (t->out_type) {
        case FPW_Q8_OUT_S32:
            ((int32_t*)t->c)[offset] = acc;
            break;
        case FPW_Q8_OUT_F32: {
            float y = (float)acc * scale;
            if (t->clamp) {
                if (y < t->lo) y = t->lo;
                if (y > t->hi) y = t->hi;
            }
            ((float*)t->c)[offset] = y;
            break;
        }
        default: {
            float v = (float)acc * scale;
            if (v < t->lo) v = t->lo;
            if (v > t->hi) v = t->hi;
            int32_t q = fpw_round_half_even(v) + t->zero_point;
            if (t->out_type == FPW_Q8_OUT_U8)
                ((uint8_t*)t->c)[offset] = (uint8_t)q;
            else
                ((int8_t*)t->c)[offset] = (int8_t)q;
        }
    }
}

/* Copy a finished tile, laid out row-major in `tile` (row stride `tile_rs` elements of
 * the output type), to C transposed: C(i, j) at i*c_rs + j*c_cs. The NCHW orientation
 * with pixels as rows ends here; column j is a run of mr pixels when c_rs == 1. */
static FPW_MAYBE_UNUSED void fpw_q8_store_transposed(const fpw_q8_tile* t, const void* tile, size_t tile_rs) {
    for (size_t j = 0; j < t->nr; j++) {
        for (size_t i = 0; i < t->mr; i++) {
            const ptrdiff_t dst = (ptrdiff_t)i * t->c_rs + (ptrdiff_t)j * t->c_cs;
            if (t->out_type == FPW_Q8_OUT_U8 || t->out_type == FPW_Q8_OUT_S8)
                ((uint8_t*)t->c)[dst] = ((const uint8_t*)tile)[i * tile_rs + j];
            else
                ((int32_t*)t->c)[dst] = ((const int32_t*)tile)[i * tile_rs + j];
        }
    }
}

#endif /* FASTPW_Q8_EPILOGUE_H */
