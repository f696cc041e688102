# cython: language_level=3
"""The C headers under include/fastpw as the tile loop (_kernels.pyx) sees them: the
microkernel contract (fastpw.h), the family table (dispatch.h; defined, with every kernel,
in families.c, compiled on its own), CPU features (cpu.h),
the activation packers (f32/pack.h, q8/pack.h) and the thread helpers (threads.h). Declarations
only; the logic is in _kernels.pyx."""

from libc.stdint cimport int16_t, int32_t, uint8_t


cdef extern from "fastpw/dispatch.h" nogil:
    ctypedef struct fpw_f32_tile:
        size_t kc
        size_t mr, nr
        const float *a
        ptrdiff_t a_rs, a_cs
        const float *b
        ptrdiff_t b_rs
        int b_padded
        float *c
        ptrdiff_t c_rs, c_cs
        const float *bias
        int bias_on_rows
        int clamp
        float lo, hi
        int accumulate
        int finish
        size_t n_tiles
        ptrdiff_t b_ts
        int a_prefetch

    ctypedef void (*fpw_f32_gemm_fn)(const fpw_f32_tile *tile) noexcept nogil

    ctypedef struct fpw_f32_ukernel:
        const char *name
        fpw_f32_gemm_fn gemm
        size_t mr, nr, lanes
        double (*fma_peak_loop)(long iterations) noexcept nogil

    ctypedef struct fpw_q8_tile:
        size_t kc
        size_t mr, nr
        const uint8_t *a
        ptrdiff_t a_rs, a_cs
        size_t a_tail
        int a_is_data
        int a_flip_sign
        const uint8_t *b
        ptrdiff_t b_rs
        int b_padded
        void *c
        ptrdiff_t c_rs, c_cs
        int out_type
        const int32_t *bias
        const float *scale
        int per_row
        int clamp
        float lo, hi
        int32_t zero_point

    ctypedef void (*fpw_q8_gemm_fn)(const fpw_q8_tile *tile) noexcept nogil

    ctypedef struct fpw_q8_ukernel:
        const char *name
        fpw_q8_gemm_fn gemm
        size_t mr, nr, lanes
        int format
        int signed_activations
        double (*peak_loop)(long iterations) noexcept nogil

    enum:
        FPW_Q8_DOT4
        FPW_Q8_PAIR16
        FPW_Q8_OUT_U8
        FPW_Q8_OUT_S8
        FPW_Q8_OUT_S32
        FPW_Q8_OUT_F32
    void fpw_f32_pack_nchw_panels(const float *x, ptrdiff_t x_cs, size_t channels,
                                  size_t p_begin, size_t p_end, size_t width, float *out)
    void fpw_q8_pack_pair16_nchw(const uint8_t *x, ptrdiff_t x_cs, int x_signed, size_t channels,
                                 size_t pixels, size_t p_begin, size_t p_end, int16_t *out)
    void fpw_q8_pack_pair16_nhwc(const uint8_t *x, ptrdiff_t x_ps, int x_signed, size_t channels,
                                 size_t p_begin, size_t p_end, int16_t *out)
    void fpw_q8_pack_dot4_nchw(const uint8_t *x, ptrdiff_t x_cs, int flip, size_t channels,
                               size_t pixels, size_t g_begin, size_t g_end, uint8_t *out)

    ctypedef struct fpw_cpu_features:
        pass  # its fields come from FPW_CPU_FEATURES (cpu.h), read through the mask
    const char *const fpw_cpu_feature_names[]
    int FPW_NUM_CPU_FEATURES
    unsigned fpw_cpu_feature_mask(const fpw_cpu_features *f)
    fpw_cpu_features fpw_detect_cpu()

    ctypedef struct fpw_quant_run:
        size_t n
        const float *scale
        const int32_t *zero_point
        int per_element
        int is_signed

    ctypedef void (*fpw_quantize_fn)(const float *x, void *y,
                                     const fpw_quant_run *run) noexcept nogil
    ctypedef void (*fpw_dequantize_fn)(const void *xq, float *y,
                                       const fpw_quant_run *run) noexcept nogil

    ctypedef struct fpw_quant_ukernel:
        const char *name
        fpw_quantize_fn quantize
        fpw_dequantize_fn dequantize
        size_t lanes

    ctypedef struct fpw_family:
        const char *name
        unsigned required_features
        const fpw_f32_ukernel *f32
        const fpw_q8_ukernel *q8
        const fpw_quant_ukernel *quant

    enum:
        FPW_OP_F32_GEMM
        FPW_OP_Q8_GEMM
        FPW_OP_QUANT
        FPW_NUM_OPS
    const fpw_family fpw_families[]
    int FPW_NUM_FAMILIES
    int fpw_family_has(int index, int op)
    int fpw_choose_family(int op, int cap, unsigned cpu)


cdef extern from "fastpw/threads.h" nogil:
    int fpw_openmp_enabled()
    int fpw_max_threads()
    int fpw_thread_num()
    int fpw_thread_limit()
    int fpw_in_parallel()
    int fpw_flag_get(const int *flag)
    void fpw_flag_set(int *flag, int value)
    void fpw_note_team_started()
    int fpw_serial_after_fork()
    int fpw_install_fork_handler()
    int fpw_affinity_cores()
    int fpw_reserve_threads(int wanted)
    double fpw_seconds()


cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident()


cdef extern from "Python.h":
    # Declared here without an exception value: the tile loop calls it with the GIL taken
    # for a moment inside a nogil region, and carries a raised KeyboardInterrupt out of
    # that region itself (see _signal_arrived).
    int PyErr_CheckSignals()
