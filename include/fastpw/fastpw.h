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
 *     a_prefetch is a hint a family may ignore: A's columns lie far apart in memory (NCHW
 *     planes read in place, a few floats of each per tile), so hardware prefetchers
 *     that follow a few streams miss them; fetching a line ahead pays.
 *   B is the "vector side": B(c, j) = b[c * b_rs + j], unit stride in j, so NR consecutive
 *     elements load as vectors. If b_padded is set, all NR columns may be read (packed
 *     panels are zero-padded); otherwise only nr may be (columns of a user array).
 *   C(i, j) = c[i * c_rs + j * c_cs]. c_cs == 1 stores vectors; otherwise c_rs == 1
 *     (the "transposed" NCHW orientation: each column of the tile is a run of mr floats).
 *   bias is indexed by i (bias_on_rows) or by j, and may be NULL.
 *   n_tiles >= 1: one call computes n_tiles tiles side by side, left to right: tile n
 *     has B at b + n * b_ts, C from column n * NR and (when indexed by j) bias from
 *     bias + n * NR. Every tile is NR wide but the last, which is nr wide. One call
 *     per row of tiles pays the row's setup (A's row pointers, edge masks, the call
 *     itself) once, which matters on short reductions (16 channels: 16 steps a tile).
 *   clamp: if set, y = min(max(y, lo), hi) with NaN propagating (as numpy's maximum).
 *
 * Summation order is fixed: acc starts at 0 (or at C's value when accumulate is set: a
 * later block of a reduction the tile loop splits in fixed blocks of channels), adds
 * A(i,c)*B(c,j) for c = 0, 1, ..., kc-1 (fused multiply-add where the ISA has it), and
 * when finish is set adds bias, then clamps. It never depends on how the
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
    int accumulate; /* start from C's values (a later block of a split reduction) */
    int finish;     /* add bias and clamp (the last block; every tile if not split) */
    size_t n_tiles; /* column tiles, left to right (see above) */
    ptrdiff_t b_ts; /* B's stride from one column tile to the next */
    int a_prefetch; /* a hint: A's columns are far apart (see above) */
} fpw_f32_tile;

typedef void (*fpw_f32_gemm_fn)(const fpw_f32_tile* tile);

/* A float32 microkernel as the tile loop and the tests see it: its register tile, the
 * floats per vector register (the unit in which columns are computed) and, for the
 * benchmarks, a register-only FMA loop that returns the flops it did (NULL if none). */
typedef struct fpw_f32_ukernel {
    const char* name; /* the function's name: fpw_<dtype>_gemm_<MR>x<NR>__<isa> */
    fpw_f32_gemm_fn gemm;
    size_t mr, nr, lanes;
    double (*fma_peak_loop)(long iterations);
} fpw_f32_ukernel;

/* A kernel's description, named after its function: the name is spelt once. */
#define FPW_F32_UKERNEL(gemm_fn, MR, NR, LANES, fma_peak_fn) {#gemm_fn, gemm_fn, MR, NR, LANES, fma_peak_fn}

/*
 * The int8 contract: the same tile, with exact integer accumulation and a fused
 * requantizing epilogue.
 *
 * The reduction runs over "groups" of channels that one 32-bit lane multiplies and sums
 * at once. Two operand formats exist:
 *   FPW_Q8_DOT4   a group is 4 bytes: int8 weights times uint8 (vpdpbusd) or int8 (sdot)
 *                 activations
 *   FPW_Q8_PAIR16 a group is 2 int16 values on both sides (vpmaddwd; exact for any input)
 *
 *   acc(i, j) = bias(i or j) + sum_{c < kc} dot(A(i, c), B(c, j))      (int32, wrapping)
 *
 *   bias may be NULL: acc is the sum alone. scale may be NULL when out_type is
 *   FPW_Q8_OUT_S32, which reads no scale; every other output type needs it.
 *
 *   A sum past int32 wraps modulo 2^32 at every step, so acc is the exact sum whenever
 *   that fits and the same wrapped value in every family when it does not.
 *
 *   A(i, c): the 32-bit group at a + i*a_rs + c*a_cs (byte strides). If a_tail > 0, a
 *     partial group of a_tail bytes follows the kc full ones (NHWC rows whose channel
 *     count is not a multiple of 4); its missing bytes are never read, and B's matching
 *     group is zero there.
 *   B(c, j): the 32-bit group at b + c*b_rs + 4*j; padded panels when b_padded.
 *   a_is_data: A holds the activations, else the weights. In DOT4 the weights are int8
 *     and the activations are read as uint8 (vpdpbusd) or int8 (sdot), as the family
 *     says. a_flip_sign: XOR the activation bytes of A with 0x80, so activations of the
 *     other signedness read as x + 128 or x - 128 (the plan folds the compensation into
 *     bias). Only set when A holds activations.
 *
 * Epilogue, by out_type, with bias and scale indexed by row (per_row) or column:
 *   FPW_Q8_OUT_S32: acc.
 *   FPW_Q8_OUT_F32: y = float(acc) * scale, then clamp to [lo, hi] if clamp.
 *   FPW_Q8_OUT_U8/S8: v = float(acc) * scale, clamped to [lo, hi] (the output range
 *     minus the zero point, narrowed by the activation), rounded half to even, plus
 *     zero_point, stored as one byte. Clamping before rounding equals clamping after,
 *     as lo and hi are whole numbers.
 * Any kc, mr <= MR, nr <= NR; nothing outside the tile of C is written.
 */
enum { FPW_Q8_DOT4 = 4, FPW_Q8_PAIR16 = 2 };
enum { FPW_Q8_OUT_U8 = 0, FPW_Q8_OUT_S8 = 1, FPW_Q8_OUT_S32 = 2, FPW_Q8_OUT_F32 = 3 };

typedef struct fpw_q8_tile {
    size_t kc;
    size_t mr, nr;
    const uint8_t* a;
    ptrdiff_t a_rs, a_cs;
    size_t a_tail;
    int a_is_data;
    int a_flip_sign;
    const uint8_t* b;
    ptrdiff_t b_rs;
    int b_padded;
    void* c;
    ptrdiff_t c_rs, c_cs; /* in elements of the output type */
    int out_type;
    const int32_t* bias;
    const float* scale;
    int per_row;
    int clamp;
    float lo, hi;
    int32_t zero_point;
} fpw_q8_tile;

typedef void (*fpw_q8_gemm_fn)(const fpw_q8_tile* tile);

/* An int8 microkernel as the tile loop and the tests see it: its register tile, the
 * int32 accumulators per vector register, and its operand format. */
typedef struct fpw_q8_ukernel {
    const char* name; /* the function's name: fpw_<dtype>_gemm_<MR>x<NR>__<isa> */
    fpw_q8_gemm_fn gemm;
    size_t mr, nr, lanes;
    int format; /* FPW_Q8_DOT4 or FPW_Q8_PAIR16 */
    /* DOT4: the kernel reads activation bytes as int8 (sdot) rather than uint8 (vpdpbusd) */
    int signed_activations;
    /* For the benchmarks: a register-only loop of the kernel's multiply-accumulate
     * instructions that returns the int8 ops it did, 2 per product (NULL if none). */
    double (*peak_loop)(long iterations);
} fpw_q8_ukernel;

/* As FPW_F32_UKERNEL; SIGNED: the DOT4 kernel reads int8 activations (see above). */
#define FPW_Q8_UKERNEL(gemm_fn, MR, NR, LANES, FORMAT, SIGNED, peak_fn)                                      \
    {#gemm_fn, gemm_fn, MR, NR, LANES, FORMAT, SIGNED, peak_fn}

/* Elementwise quantize/dequantize (quant.h): one run of n elements with one scale and
 * zero point, or one per element. */
typedef struct fpw_quant_run {
    size_t n;                  /* elements */
    const float* scale;        /* scale[0], or scale[i] when per_element */
    const int32_t* zero_point; /* likewise */
    int per_element;
    int is_signed; /* the 8-bit side is int8 (else uint8) */
} fpw_quant_run;

typedef void (*fpw_quantize_fn)(const float* x, void* y, const fpw_quant_run* run);
typedef void (*fpw_dequantize_fn)(const void* xq, float* y, const fpw_quant_run* run);

/* One ISA's pair of loops; lanes: the floats per vector register of its target. */
typedef struct fpw_quant_ukernel {
    const char* name; /* the quantize function's name */
    fpw_quantize_fn quantize;
    fpw_dequantize_fn dequantize;
    size_t lanes;
} fpw_quant_ukernel;

#if defined(__GNUC__) || defined(__clang__)
#define FPW_ALWAYS_INLINE static inline __attribute__((always_inline))
#define FPW_UNROLL _Pragma("GCC unroll 32")
/* For helpers the tile loop calls by name, not through the family table: a file that
 * includes the headers for the table alone leaves them uncalled, which is no fault
 * (-Wunused-function). Not `inline`, which would change how GCC weighs inlining them. */
#define FPW_MAYBE_UNUSED __attribute__((unused))
#else
#define FPW_ALWAYS_INLINE static inline
#define FPW_UNROLL
#define FPW_MAYBE_UNUSED
#endif

/* For a family whose body computes one tile: runs t's n_tiles column tiles through it,
 * NR wide but for the last. */
FPW_ALWAYS_INLINE void fpw_f32_each_tile(const fpw_f32_tile* t, const size_t NR,
                                         void (*one_tile)(const fpw_f32_tile*)) {
    fpw_f32_tile tile = *t;
    for (size_t n = 0; n < t->n_tiles; n++) {
        tile.nr = n + 1 < t->n_tiles ? NR : t->nr;
        one_tile(&tile);
        tile.b += tile.b_ts;
        tile.c += (ptrdiff_t)NR * tile.c_cs;
        if (tile.bias && !tile.bias_on_rows) tile.bias += NR;
    }
}

#if defined(__x86_64__) || defined(_M_X64)
#define FPW_X86_64 1
#endif

#if defined(__aarch64__)
#define FPW_AARCH64 1
#endif

#endif /* FASTPW_FASTPW_H */
