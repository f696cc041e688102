/*
 * fastpw: the microkernel contract, written once.
 *
 * Every 1x1 convolution is cut into GEMM tiles C = A * B (+ bias, clamp):
 *
 *     C(i, j) = clamp( sum_{c < kc} A(i, c) * B(c, j)  + bias , lo, hi )
 *
 * for 0 <= i < mr <= MR and 0 <= j < nr <= NR, where MR x NR is the register tile of
 * the kernel family.
 *
 *   A is the "broadcast side": A(i, c) = a[i * a_rs + c * a_cs]. One element is broadcast
 *     to a whole vector per step. Either a_rs == 1 (packed weight panels, or NCHW pixels
 *     read along a channel row) or a_cs == 1 (NHWC pixel rows).
 *   B is the "vector side": B(c, j) = b[c * b_rs + j], unit stride in j, so NR consecutive
 *     elements load as vectors. If b_padded is set, all NR columns may be read (packed
 *     panels are zero-padded); otherwise only nr may be (columns of a user array).
 *   C(i, j) = c[i * c_rs + j * c_cs]. c_cs == 1 stores vectors; any other c_cs stores
 *     element by element (the "transposed" NCHW orientation).
 *   bias is indexed by i (bias_on_rows) or by j, and may be NULL.
 *   clamp: if set, y = min(max(y, lo), hi) with NaN propagating (as numpy's maximum).
 *
 * Summation order is fixed: acc starts at 0, adds A(i,c)*B(c,j) for c = 0, 1, ..., kc-1
 * (fused multiply-add where the ISA has it), then adds bias. It never depends on how the
 * problem is cut into tiles or threads, so results are bitwise identical for any thread
 * count. Edges (mr < MR, nr < NR) are handled inside the kernel; nothing outside the
 * mr x nr tile of C is written, and no element of A, B or bias outside the tile is read
 * (except B's padding when b_padded).
 */
#ifndef FASTPW_FASTPW_H
#define FASTPW_FASTPW_H

#include <stddef.h>
#include <stdint.h>

typedef struct fpw_f32_tile {
    size_t kc;
    size_t mr, nr;
    const float* a;
    ptrdiff_t a_rs, a_cs;
    const float* b;
    ptrdiff_t b_rs;
    int b_padded;
    float* c;
    ptrdiff_t c_rs, c_cs;
    const float* bias;
    int bias_on_rows;
    int clamp;
    float lo, hi;
} fpw_f32_tile;

typedef void (*fpw_f32_gemm_fn)(const fpw_f32_tile* tile);

#if defined(__GNUC__) || defined(__clang__)
#define FPW_ALWAYS_INLINE static inline __attribute__((always_inline))
#define FPW_UNROLL _Pragma("GCC unroll 32")
#else
#define FPW_ALWAYS_INLINE static inline
#define FPW_UNROLL
#endif

#if defined(__x86_64__) || defined(_M_X64)
#define FPW_X86_64 1
#endif

#if defined(__aarch64__)
#define FPW_AARCH64 1
#endif

#endif /* FASTPW_FASTPW_H */
