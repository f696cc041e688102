# cython: language_level=3
"""Tile loop, threading and weight packing for fastpw (knows no ISA).

A 1x1 convolution is one GEMM per (image, group). This module cuts each GEMM into
blocks of MB x NB outputs (the OpenMP work items), walks every block in MR x NR
register tiles, and calls the microkernel each operation chose from the family table
in include/fastpw/dispatch.h (declared in _include.pxd). The reduction over input
channels is never shared between threads (float32 runs long ones in fixed blocks of
KC_BLOCK channels), so each output is summed by one thread in one fixed order: bitwise
identical results for any thread count.

Three orientations map a layer onto the microkernel contract (include/fastpw/fastpw.h):

  NCHW direct      rows = output channels (A = weight panels), cols = pixels (B = x's
                   pixels, packed per block into panels of NR)
  NCHW transposed  rows = pixels (A = x's pixels, packed per block into panels of MR,
                   or read in place when the layer has at most NR output channels),
                   cols = output channels (B = transposed weight panels), stored
                   transposed; used when the pixel count wastes many vector lanes
                   (7x7 = 49 pixels, say) or there is a single column tile
  NHWC             rows = pixels (A = x rows, read in place), cols = output channels
                   (B = weight panels)

Where columns are walked inside rows (weights that fit L2), one float32 kernel call
computes a whole row of column tiles (fpw_f32_tile.n_tiles).
"""

from cython.parallel cimport parallel, prange
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from fastpw._include cimport *

cimport numpy as cnp
import numpy as np

cnp.import_array()


# ---------------------------------------------------------------------------------------
# CPU features, the kernel families and the kernel each operation runs

cdef fpw_cpu_features _cpu = fpw_detect_cpu()
cdef unsigned _cpu_mask = fpw_cpu_feature_mask(&_cpu)
# The family FASTPW_ISA / set_isa selected (the best supported one by default), and the
# family whose kernel each operation runs under it (dispatch.h: fpw_choose_family).
cdef int _selected_family = -1
cdef int _op_family[FPW_NUM_OPS]

# The feature names as cpu.h's FPW_CPU_FEATURES lists them.
_FEATURE_NAMES = tuple(fpw_cpu_feature_names[i].decode() for i in range(FPW_NUM_CPU_FEATURES))
# The operations as dispatch.h numbers them (FPW_OP_F32_GEMM, FPW_OP_Q8_GEMM, FPW_OP_QUANT).
OPERATIONS = ("float32", "int8", "quantize")


def cpu_features():
    """Detected CPU features as {name: bool} (CPUID + XGETBV on x86-64, HWCAP on aarch64)."""
    return {name: bool(_cpu_mask >> i & 1) for i, name in enumerate(_FEATURE_NAMES)}


cdef bint _supported(int index, unsigned cpu) noexcept:
    return fpw_families[index].required_features & cpu == fpw_families[index].required_features


cdef dict _kernel_entry(int index, int op):
    """What a test or a table needs to know of family `index`'s kernel for `op`."""
    cdef const fpw_family *f = &fpw_families[index]
    if not fpw_family_has(index, op):
        return None
    if op == FPW_OP_F32_GEMM:
        return {"kernel": f.f32.name.decode(), "mr": f.f32.mr, "nr": f.f32.nr,
                "lanes": f.f32.lanes, "format": "float32"}
    if op == FPW_OP_Q8_GEMM:
        if f.q8.format == FPW_Q8_PAIR16:
            operands = "pair16"
        else:
            operands = "dot4-int8" if f.q8.signed_activations else "dot4-uint8"
        return {"kernel": f.q8.name.decode(), "mr": f.q8.mr, "nr": f.q8.nr,
                "lanes": f.q8.lanes, "format": operands}
    return {"kernel": f.quant.name.decode(), "lanes": f.quant.lanes, "format": "elementwise"}


def kernel_table():
    """Every kernel family this build has (include/fastpw/dispatch.h), best first.

    One dict per family: "family" (its name), "requires" (the cpu_features() it needs),
    "supported" (whether this CPU has them), and per operation of OPERATIONS its own
    kernel, or None where it leaves that operation to the families below it. A kernel
    is {"kernel": C function, "lanes": values per vector register, "format": operand
    format} plus "mr" and "nr" (the register tile) for the GEMMs.
    """
    table = []
    for i in range(FPW_NUM_FAMILIES):
        row = {"family": fpw_families[i].name.decode(),
               "requires": [name for bit, name in enumerate(_FEATURE_NAMES)
                            if fpw_families[i].required_features >> bit & 1],
               "supported": _supported(i, _cpu_mask)}
        for op, operation in enumerate(OPERATIONS):
            row[operation] = _kernel_entry(i, op)
        table.append(row)
    return table


def available_isas():
    """Kernel families this CPU can run, best first (always ends with "scalar")."""
    return [fpw_families[i].name.decode() for i in range(FPW_NUM_FAMILIES)
            if _supported(i, _cpu_mask)]


cdef int _family_index(str name) except -1:
    available = available_isas()
    for i in range(FPW_NUM_FAMILIES):
        if fpw_families[i].name.decode() == name and name in available:
            return i
    known = [fpw_families[i].name.decode() for i in range(FPW_NUM_FAMILIES)]
    reason = "this CPU lacks it" if name in known else "unknown kernel family"
    raise ValueError(f"kernel family {name!r} is not available ({reason}); "
                     f"available on this CPU: {', '.join(available)}")


cdef int _operation_index(operation) except -1:
    if operation in OPERATIONS:
        return OPERATIONS.index(operation)
    raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}; got {operation!r}")


cdef void _select_family(int index) noexcept:
    global _selected_family
    _selected_family = index
    for op in range(FPW_NUM_OPS):
        _op_family[op] = fpw_choose_family(op, index, _cpu_mask)


def set_isa(str name):
    """Select family `name` for later calls and layers: every operation runs the best
    kernel at or below it. Returns the previously selected family's name."""
    cdef int index = _family_index(name)
    previous = isa()
    _select_family(index)
    return previous


def isa(operation=None):
    """The selected kernel family; with an operation of OPERATIONS ("float32", "int8",
    "quantize"), the family whose kernel that operation runs."""
    if operation is None:
        return fpw_families[_selected_family].name.decode()
    return fpw_families[_op_family[_operation_index(operation)]].name.decode()


def _kernel_choice(operation, str selected, features):
    """Tests only: the family `operation` would run with family `selected` selected on
    a CPU that has exactly `features` (names of cpu_features())."""
    cdef unsigned mask = 0
    for name in features:
        mask |= 1u << _FEATURE_NAMES.index(name)
    known = [fpw_families[i].name.decode() for i in range(FPW_NUM_FAMILIES)]
    cdef int index = fpw_choose_family(_operation_index(operation), known.index(selected), mask)
    return fpw_families[index].name.decode()


def _init_family(requested):
    """Select the best supported family, or the one FASTPW_ISA names (called at import)."""
    _select_family(_family_index(requested if requested else available_isas()[0]))


def openmp_enabled():
    """True if the extension was built with OpenMP."""
    return bool(fpw_openmp_enabled())


# ---------------------------------------------------------------------------------------
# Threads: how many a call gets (include/fastpw/threads.h says why each limit exists)

if fpw_install_fork_handler() != 0:
    raise ImportError("fastpw: could not register its at-fork handler (pthread_atfork)")


def _cgroup_cpu_quota(root="/sys/fs/cgroup"):
    """CPUs the cgroup CPU quota of this process allows, rounded up; 0 if it sets none.
    cgroup v2 (cpu.max: "quota period" or "max period") or v1 (cpu.cfs_quota_us, -1 for
    none, and cpu.cfs_period_us), in this process's own cgroup and in the root one."""
    import math
    import os
    paths = {"": "/"}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for name in controllers.split(","):
                    paths[name] = path
    except (OSError, ValueError):
        pass
    candidates = []
    for base in {paths.get(""), "/"}:
        candidates.append((os.path.join(root, base.lstrip("/"), "cpu.max"), None))
    for key in ("cpu", "cpu,cpuacct"):
        for base in {paths.get(key, "/"), "/"}:
            folder = os.path.join(root, key, base.lstrip("/"))
            candidates.append((os.path.join(folder, "cpu.cfs_quota_us"),
                               os.path.join(folder, "cpu.cfs_period_us")))
    for quota_path, period_path in candidates:
        try:
            with open(quota_path) as f:
                fields = f.read().split()
            if period_path is not None:
                with open(period_path) as f:
                    fields.append(f.read().strip())
            # (Unpacked, not indexed: this module turns off bounds checks, lists' too.)
            quota, period = fields
            period = int(period)
            if quota in ("max", "-1") or period <= 0:
                continue
            return max(1, math.ceil(int(quota) / period))
        except (OSError, ValueError):
            continue
    return 0


cdef int _cgroup_cores = _cgroup_cpu_quota()
# Python runs signal handlers in the main thread only: calls there look for Ctrl-C.
cdef unsigned long _main_thread_ident = __import__("threading").main_thread().ident
cdef int _core_limit_override = 0


def _set_core_limit(limit):
    """Tests only: let calls use `limit` threads whatever the cores (None: the cores
    again), so thread-count tests can run 3 or 8 threads on a 2-core machine. Returns
    the previous override (None if there was none)."""
    global _core_limit_override
    previous = _core_limit_override or None
    _core_limit_override = 0 if limit is None else max(1, int(limit))
    return previous


cdef int _thread_ceiling(int requested) noexcept:
    """The most threads a call that asks for `requested` may use: no more than the cores
    this process may run on (affinity and cgroup quota, as scikit-learn's
    _openmp_effective_n_threads counts them) and OpenMP's thread limit; one inside
    another OpenMP team (no nested teams) and in a forked child of a process that ran
    teams (libgomp's pool does not survive fork)."""
    if requested <= 1 or fpw_in_parallel() or fpw_serial_after_fork():
        return 1
    cdef int cores = fpw_affinity_cores()
    if _cgroup_cores > 0 and (cores == 0 or _cgroup_cores < cores):
        cores = _cgroup_cores
    if _core_limit_override > 0:
        cores = _core_limit_override
    if cores > 0 and requested > cores:
        requested = cores
    return max(1, min(requested, fpw_thread_limit()))


cdef int _threads_for_call(int requested) noexcept:
    """Threads a call runs on: the ceiling, and no more than this process can create
    (libgomp exits the process when it cannot). Called with the GIL held."""
    cdef int threads = _thread_ceiling(requested)
    if threads > 1:
        threads = fpw_reserve_threads(threads)
    return threads


def max_threads():
    """Threads a call uses by default: OpenMP's setting (OMP_NUM_THREADS, threadpoolctl)
    capped at the cores this process may use; 1 in a forked child of a process that ran
    threads (see the README's Threading section)."""
    return _thread_ceiling(fpw_max_threads())


ctypedef double (*peak_loop_fn)(long iterations) noexcept nogil


cdef double _peak_rate(peak_loop_fn loop, double seconds):
    """Operations per second, in billions, of a register-only probe loop run long enough
    to fill `seconds` (NaN without a loop)."""
    import time
    if loop == NULL:
        return float("nan")
    cdef long iterations = 1 << 16
    cdef double operations, elapsed
    while True:
        start = time.perf_counter()
        with nogil:
            operations = loop(iterations)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or iterations > (1 << 40):
            return operations / elapsed / 1e9
        iterations *= 2 if elapsed < seconds / 4 else 1 + <long>(seconds / elapsed)


def fma_peak_gflops(str name, double seconds=0.2):
    """Single-thread float32 FMA throughput of the float32 kernel family `name` selects,
    in GFLOP/s (NaN for a kernel without a probe).

    Runs the kernel's register-only loop (independent FMA chains, no memory traffic)
    long enough to fill `seconds`, and divides the flops it did by the elapsed time.
    """
    cdef int index = fpw_choose_family(FPW_OP_F32_GEMM, _family_index(name), _cpu_mask)
    return _peak_rate(fpw_families[index].f32.fma_peak_loop, seconds)


def int8_peak_gops(str name, double seconds=0.2):
    """Single-thread int8 multiply-accumulate throughput of the int8 kernel family `name`
    selects, in GOP/s (2 ops per product; NaN for a kernel without a probe).

    As `fma_peak_gflops`, with the int8 kernel's own instructions: vpmaddwd + vpaddd
    (avx2), vpdpbusd (avx512vnni), smlal (neon), sdot (neondot).
    """
    cdef int index = fpw_choose_family(FPW_OP_Q8_GEMM, _family_index(name), _cpu_mask)
    return _peak_rate(fpw_families[index].q8.peak_loop, seconds)


# ---------------------------------------------------------------------------------------
# The tile loop

cdef struct Pack:
    # Where the int8 activations of a call are and how the family reads them. The kernels
    # read 4 bytes per (pixel, channel group): NCHW as [channel group][pixel] (DOT4 flips
    # int8 to uint8 + 128), NHWC (PAIR16 only) as [pixel][channel group]. Each block packs
    # the pixels it covers into its thread's scratch just before its tiles read them: the
    # packed bytes never leave that core's L2, and no barrier separates packing from the
    # GEMM (a call-wide pack first made both threads fetch what the other had written).
    const uint8_t *x
    int64_t x_bs, x_cs, x_ps
    bint x_signed, nhwc
    bint flip  # DOT4: XOR every byte with 0x80 (see _dot4_shift)
    int fmt
    int64_t Cg
    # float32 NCHW (pixels on B's columns): panels of this many pixels, read as the
    # weight panels are (f32/pack.h); 0 for the int8 formats. Strides are in floats.
    int64_t f32_panel_width


cdef void _pack_pixels(const Pack *p, int64_t batch, int64_t group, int64_t begin,
                       int64_t end, uint8_t *out) noexcept nogil:
    """Pack pixels [begin, end) of one (batch, group) into `out`. NCHW formats give a
    pixel stride of 4 bytes and a channel-group stride of (end - begin) * 4; NHWC gives
    rows of (Cg + 1) // 2 int16 pairs; float32 gives f32_panel_width-pixel panels."""
    cdef const float *xf
    if p.f32_panel_width:
        xf = <const float *>p.x + batch * p.x_bs + group * p.Cg * p.x_cs
        fpw_f32_pack_nchw_panels(xf, p.x_cs, p.Cg, begin, end, p.f32_panel_width,
                                 <float *>out)
        return
    cdef const uint8_t *x = p.x + batch * p.x_bs + group * p.Cg * (1 if p.nhwc else p.x_cs)
    cdef int64_t width = end - begin
    if p.nhwc:
        fpw_q8_pack_pair16_nhwc(x + begin * p.x_ps, p.x_ps, p.x_signed, p.Cg, 0, width,
                                <int16_t *>out)
    elif p.fmt == FPW_Q8_DOT4:
        fpw_q8_pack_dot4_nchw(x + begin, p.x_cs, p.flip, p.Cg, width, 0, (p.Cg + 3) // 4,
                              out)
    else:
        fpw_q8_pack_pair16_nchw(x + begin, p.x_cs, p.x_signed, p.Cg, width, 0, width,
                                <int16_t *>out)


cdef struct Gemm:
    # C[M x N] = A[M x K] * B[K x N] for each (batch, group), plus the epilogue. Pointers
    # and strides of A and B are in bytes, so one tile loop serves float32 (K counts
    # channels) and int8 (K counts channel groups of the int8 format). C's strides are in
    # elements of the output type, c_elem bytes each.
    int64_t M, N, K
    const char *a
    int64_t a_rs, a_cs, a_ts, a_bs, a_gs   # element, row tile, batch and group strides
    const char *b
    int64_t b_rs, b_ts, b_bs, b_gs
    int b_padded
    char *c
    int64_t c_rs, c_cs, c_bs, c_gs, c_elem
    const char *bias                        # 4-byte elements (float32 or int32)
    const float *scale                      # int8 only: per output channel
    int64_t bias_gs
    int bias_on_rows
    int clamp
    float lo, hi
    int64_t batches, groups
    int64_t MR, NR
    int64_t mb, nb, m_blocks, n_blocks
    # Tile order within a block. Columns inner (rows_outer) keeps one row tile of A in
    # L1 while B's panels pass, and writes C's rows whole; rows inner keeps one panel of
    # B in L1 while A's block streams from L2 (the order for long reductions).
    bint rows_outer
    # Rows of A (a_cs == one element) whose stride is a multiple of 4 KiB all fall into
    # one L1 set: a tile's MR rows then evict each other. restride_a copies each block's
    # rows to a per-thread buffer with a stride one cache line longer, at memcpy speed.
    bint restride_a
    bint a_prefetch  # float32: the tile's a_prefetch hint (A is NCHW planes read in place)
    int64_t restrided_rs, row_bytes
    # int8 activations packed block by block (see Pack), or NULL. pack_on_columns: the
    # pixels are B's columns (NCHW direct); otherwise they are A's rows.
    const Pack *pack
    bint pack_on_columns
    # Per-thread buffers of either: scratch_stride bytes each, 64-byte aligned.
    char *scratch
    int64_t scratch_stride
    # float32: reduce over K in blocks of kc_block (0: in one pass), see KC_BLOCK.
    int64_t kc_block
    # Ctrl-C: the thread that called (team thread 0) looks for a pending signal every
    # SIGNAL_CHECK_SECONDS between blocks; one sets `interrupted` and the rest of the
    # blocks are skipped. Only in the main thread, where Python runs signal handlers.
    bint check_signals
    int interrupted
    double next_signal_check
    # Exactly one kernel is set: the float32 or the int8 microkernel.
    fpw_f32_gemm_fn f32_kernel
    fpw_q8_gemm_fn q8_kernel
    # int8 only (see fpw_q8_tile in include/fastpw/fastpw.h)
    size_t a_tail
    int a_is_data, a_flip_sign, out_type
    int32_t zero_point


cdef enum:
    # Blocks are sized so that one block of A (MB rows x K) stays in a 256 KiB share of
    # L2 while the tiles of B stream past it (float32 weights up to this size are
    # walked in row-tile order instead: see F32Plan.run).
    L2_BLOCK_BYTES = 262144
    # Below this many flops per thread, fork/join costs more than the threads save.
    MIN_FLOPS_PER_THREAD = 200000
    # num_threads above this is treated as this (the Python layer clamps it); calls are
    # capped far lower, at the cores the process may use (_thread_ceiling).
    MAX_THREADS = 65536
    # A block is cut until it does at most this many flops (a few milliseconds of work),
    # so a pending Ctrl-C is seen within SIGNAL_CHECK_SECONDS plus one block.
    MAX_BLOCK_FLOPS = 1 << 28
    # _run_gemm's result when a signal handler raised.
    GEMM_INTERRUPTED = -2
    # float32 reductions longer than this are done in blocks of this many channels, so
    # the slice of B a tile streams (KC x NR floats, 64 KiB) stays in L2 while the tiles
    # of a block reuse it. The blocks are fixed by the shape: results stay identical for
    # every thread count. int8 never splits: its epilogue requantizes, and its groups of
    # 4 channels pack 4 times more reduction into the same bytes.
    KC_BLOCK = 512
    # NCHW planes larger than this are packed, not read in place, when the output
    # channels take more than one vector (see F32Plan.run): measured, not derived.
    IN_PLACE_PLANE_BYTES = 16384


# NHWC pixel rows 4 KiB apart are restrided (Gemm.restride_a) only for tiles of at least
# this many rows: fewer fit the 8 ways of an L1 set together, and the copy is then pure
# cost (avx2's 6 rows: 1024->64 28x28 ran 0.85x XNNPACK with it, 0.97x without;
# avx512's 12 rows evicted each other: 101 -> 105 GFLOP/s with it).
cdef int64_t _restride_min_rows = 8


def _set_restride_min_rows(int64_t rows):
    """Tests only: restride tiles of at least `rows` rows (1: every family), so the
    restriding path runs on a machine whose family has short tiles. Returns the old
    value."""
    global _restride_min_rows
    old = _restride_min_rows
    _restride_min_rows = rows
    return old


# How often the calling thread looks for a pending signal (Ctrl-C) during a call: taking
# the GIL for PyErr_CheckSignals costs about a microsecond when no other thread holds it.
cdef double SIGNAL_CHECK_SECONDS = 0.02


cdef inline int64_t _round_up(int64_t value, int64_t multiple) noexcept nogil:
    return (value + multiple - 1) // multiple * multiple


cdef inline int64_t _line_quantum(int64_t tile, int64_t unit_stride, int64_t elem) noexcept nogil:
    """Smallest multiple of `tile` rows or columns whose output spans whole 64-byte
    lines along C's unit stride; `tile` itself along any other stride."""
    cdef int64_t quantum = tile
    if unit_stride:
        while (quantum * elem) % 64 != 0 and quantum * elem < 64 * tile:
            quantum += tile
    return quantum


cdef bint _halve_block(int64_t *mb, int64_t *nb, int64_t m_quantum,
                       int64_t n_quantum) noexcept nogil:
    """Halve the block side that has more quanta left; False if both are one quantum."""
    if nb[0] > n_quantum and (nb[0] // n_quantum >= mb[0] // m_quantum or mb[0] <= m_quantum):
        nb[0] = _round_up((nb[0] + 1) // 2, n_quantum)
    elif mb[0] > m_quantum:
        mb[0] = _round_up((mb[0] + 1) // 2, m_quantum)
    else:
        return False
    return True


cdef void _plan_blocks(Gemm *g, int threads) noexcept nogil:
    # Blocks split along C's unit stride cover whole cache lines: two threads writing
    # halves of one line (a 32-pixel tile of 1-byte output is half a line) would pass it
    # back and forth on every tile, which kept int8 NCHW layers from scaling at all.
    cdef int64_t m_quantum = _line_quantum(g.MR, g.c_rs == 1, g.c_elem)
    cdef int64_t n_quantum = _line_quantum(g.NR, g.c_cs == 1, g.c_elem)
    cdef int64_t M_full = _round_up(g.M, m_quantum), N_full = _round_up(g.N, n_quantum)
    # A block's rows hold one block of the reduction at a time (KC_BLOCK channels where
    # it is split), and that is what must stay in L2.
    cdef int64_t kc = g.kc_block if 0 < g.kc_block < g.K else max(g.K, 1)
    cdef int64_t mb = (L2_BLOCK_BYTES // (4 * kc)) // m_quantum * m_quantum
    if mb < m_quantum:
        mb = m_quantum
    if mb > M_full:
        mb = M_full
    cdef int64_t nb = N_full
    if g.pack != NULL and g.pack_on_columns:
        # A block's packed columns (K groups of 4 bytes each) stay in L2 as well.
        nb = min(N_full, max(n_quantum, (L2_BLOCK_BYTES // (4 * max(g.K, 1)))
                             // n_quantum * n_quantum))
    cdef int64_t outer = g.batches * g.groups
    # Eight blocks per thread: with the dynamic schedule, finer blocks even out the
    # end of a call (int8 1024->256 14x14 at 2 threads: 649 -> 703 GOP/s).
    cdef int64_t wanted = 8 * threads if threads > 1 else 1
    # Cut until every thread has several blocks, and no block is long enough to delay a
    # Ctrl-C (MAX_BLOCK_FLOPS).
    while outer * ((g.M + mb - 1) // mb) * ((g.N + nb - 1) // nb) < wanted:
        if not _halve_block(&mb, &nb, m_quantum, n_quantum):
            break
    while 2 * mb * nb * max(g.K, 1) > MAX_BLOCK_FLOPS:
        if not _halve_block(&mb, &nb, m_quantum, n_quantum):
            break
    g.mb = mb
    g.nb = nb
    g.m_blocks = (g.M + mb - 1) // mb
    g.n_blocks = (g.N + nb - 1) // nb


cdef void _run_block(const Gemm *g, int64_t item, int thread) noexcept nogil:
    # `thread`: which scratch buffer is this block's (the team's thread number, 0 when
    # serial: inside another OpenMP team omp_get_thread_num() is the outer team's).
    cdef int64_t per_gemm = g.m_blocks * g.n_blocks
    cdef int64_t outer = item // per_gemm, inner = item % per_gemm
    cdef int64_t batch = outer // g.groups, group = outer % g.groups
    cdef int64_t m_index = inner // g.n_blocks, n_index = inner % g.n_blocks
    if g.pack != NULL and g.pack_on_columns:
        # Column-major order: consecutive blocks share their packed columns.
        m_index = inner % g.m_blocks
        n_index = inner // g.m_blocks
    cdef int64_t i_begin = m_index * g.mb, j_begin = n_index * g.nb
    cdef int64_t i_end = min(i_begin + g.mb, g.M), j_end = min(j_begin + g.nb, g.N)
    cdef const char *a = g.a + batch * g.a_bs + group * g.a_gs
    cdef const char *b = g.b + batch * g.b_bs + group * g.b_gs
    cdef char *c = g.c + (batch * g.c_bs + group * g.c_gs) * g.c_elem
    cdef const char *bias = NULL
    cdef const float *scale = NULL
    if g.bias != NULL:
        bias = g.bias + group * g.bias_gs * 4
    if g.scale != NULL:
        scale = g.scale + group * g.bias_gs
    cdef int64_t a_rs = g.a_rs, a_cs = g.a_cs, a_ts = g.a_ts, b_rs = g.b_rs
    cdef int64_t a_first_row = 0, b_first_column = 0  # where `a` and `b` start
    cdef char *rows
    cdef int64_t i0, j0, mr, nr, at, packed_block, pixel_begin, pixel_end
    cdef int64_t *packed_tag
    if g.restride_a:
        rows = g.scratch + thread * g.scratch_stride
        for i0 in range(i_end - i_begin):
            memcpy(rows + i0 * g.restrided_rs, a + (i_begin + i0) * g.a_rs, g.row_bytes)
        a = rows
        a_first_row = i_begin
        a_rs = g.restrided_rs
        a_ts = g.MR * g.restrided_rs
    if g.pack != NULL:
        # The thread's buffer: a 64-byte header naming the block whose pixels it holds,
        # then the packed pixels. A block whose pixels are already there packs nothing.
        rows = g.scratch + thread * g.scratch_stride
        packed_tag = <int64_t *>rows
        pixel_begin, pixel_end = (j_begin, j_end) if g.pack_on_columns else (i_begin, i_end)
        packed_block = outer * (g.n_blocks if g.pack_on_columns else g.m_blocks) + (
            n_index if g.pack_on_columns else m_index)
        if packed_tag[0] != packed_block:
            _pack_pixels(g.pack, batch, group, pixel_begin, pixel_end, <uint8_t *>rows + 64)
            packed_tag[0] = packed_block
        if g.pack_on_columns:
            b = rows + 64
            b_first_column = j_begin
            # The stride between channels (groups) of the packed columns: within a panel
            # for float32, across the block for int8.
            b_rs = g.NR * 4 if g.f32_kernel != NULL else (j_end - j_begin) * 4
        else:
            a = rows + 64
            a_first_row = i_begin
            if not g.pack.nhwc and not g.pack.f32_panel_width:
                a_cs = (i_end - i_begin) * 4  # channel-group stride of the packed rows

    cdef fpw_f32_tile ft
    cdef fpw_q8_tile qt
    if g.f32_kernel != NULL:
        ft.a_rs = a_rs // 4
        ft.a_cs = a_cs // 4
        ft.b_rs = b_rs // 4
        ft.b_padded = g.b_padded
        ft.a_prefetch = g.a_prefetch
        ft.c_rs = g.c_rs
        ft.c_cs = g.c_cs
        ft.bias_on_rows = g.bias_on_rows
        ft.clamp = g.clamp
        ft.lo = g.lo
        ft.hi = g.hi
    else:
        qt.a_rs = a_rs
        qt.a_cs = a_cs
        qt.a_tail = g.a_tail
        qt.a_is_data = g.a_is_data
        qt.a_flip_sign = g.a_flip_sign
        qt.b_rs = b_rs
        qt.b_padded = g.b_padded
        qt.c_rs = g.c_rs
        qt.c_cs = g.c_cs
        qt.out_type = g.out_type
        qt.per_row = g.bias_on_rows
        qt.clamp = g.clamp
        qt.lo = g.lo
        qt.hi = g.hi
        qt.zero_point = g.zero_point

    cdef int64_t k0 = 0, k_len, row_tile, column_tile
    cdef const char *a_block
    cdef const char *b_block
    cdef int64_t row_tiles = (i_end - i_begin + g.MR - 1) // g.MR
    cdef int64_t column_tiles = (j_end - j_begin + g.NR - 1) // g.NR
    # A float32 kernel walks a whole row of column tiles in one call when columns are
    # inner: the row's setup (A's rows, the edge masks, the call) is paid once.
    cdef int64_t tiles_per_call = column_tiles if g.f32_kernel != NULL and g.rows_outer else 1
    ft.n_tiles = tiles_per_call
    ft.b_ts = g.b_ts // 4
    while True:
        # One block of the reduction over every tile of this output block.
        k_len = g.K - k0 if g.kc_block == 0 else min(g.kc_block, g.K - k0)
        ft.kc = qt.kc = k_len
        ft.accumulate = k0 > 0
        ft.finish = k0 + k_len >= g.K
        # The block's first tiles of A and B (i_begin - a_first_row and j_begin -
        # b_first_column are whole tiles); tiles are counted, not divided out, as this
        # loop runs once per few hundred cycles of kernel work on short reductions.
        a_block = a + ((i_begin - a_first_row) // g.MR) * a_ts + k0 * a_cs
        b_block = b + ((j_begin - b_first_column) // g.NR) * g.b_ts + k0 * b_rs
        row_tile = column_tile = 0
        for _ in range(row_tiles * (column_tiles // tiles_per_call)):
            i0 = i_begin + row_tile * g.MR
            j0 = j_begin + column_tile * g.NR
            mr = min(g.MR, i_end - i0)
            nr = min(g.NR, j_end - j0 - (tiles_per_call - 1) * g.NR)  # the last tile's
            at = i0 if g.bias_on_rows else j0  # index of this tile's first bias/scale
            if g.f32_kernel != NULL:
                ft.mr = mr
                ft.nr = nr
                ft.a = <const float *>(a_block + row_tile * a_ts)
                ft.b = <const float *>(b_block + column_tile * g.b_ts)
                ft.c = <float *>(c + (i0 * g.c_rs + j0 * g.c_cs) * g.c_elem)
                # A typed NULL: with a bare one Cython drops the const from the
                # conditional's C temporary (-Wdiscarded-qualifiers).
                ft.bias = <const float *>NULL if bias == NULL else <const float *>bias + at
                g.f32_kernel(&ft)
            else:
                qt.mr = mr
                qt.nr = nr
                qt.a = <const uint8_t *>(a_block + row_tile * a_ts)
                qt.b = <const uint8_t *>(b_block + column_tile * g.b_ts)
                qt.c = c + (i0 * g.c_rs + j0 * g.c_cs) * g.c_elem
                qt.bias = (<const int32_t *>NULL if bias == NULL
                           else <const int32_t *>bias + at)
                qt.scale = <const float *>NULL if scale == NULL else scale + at
                g.q8_kernel(&qt)
            if g.rows_outer:
                column_tile += tiles_per_call
                if column_tile == column_tiles:
                    column_tile = 0
                    row_tile += 1
            else:
                row_tile += 1
                if row_tile == row_tiles:
                    row_tile = 0
                    column_tile += 1
        k0 += k_len
        if k0 >= g.K:
            break


cdef inline int _useful_threads(double flops, int threads) noexcept nogil:
    """At most `threads`, and no more than the work pays for: one per
    MIN_FLOPS_PER_THREAD flops. Compared in floating point, as a count of threads past
    INT_MAX flops' worth would not fit an int."""
    if threads <= 1 or flops < 2.0 * MIN_FLOPS_PER_THREAD:
        return 1
    if flops / MIN_FLOPS_PER_THREAD >= threads:
        return threads
    return <int>(flops / MIN_FLOPS_PER_THREAD)


def _useful_threads_for(double flops, int threads):
    """Tests only: _useful_threads from Python."""
    return _useful_threads(flops, threads)


cdef int _gemm_threads(const Gemm *g, int requested) noexcept:
    """Threads for one GEMM: what its flops pay for, within what the process may use.
    Called with the GIL held, before the GEMM runs without it."""
    cdef double flops = 2.0 * g.M * g.N * g.K * g.batches * g.groups
    if g.q8_kernel != NULL:
        flops *= 2  # K counts groups of 2 or 4 channels; this errs toward fewer threads
    return _threads_for_call(_useful_threads(flops, requested))


cdef bint _signal_arrived(Gemm *g) noexcept nogil:
    """True once a signal handler raised (KeyboardInterrupt for Ctrl-C): the exception
    stays set in the calling thread, and the caller raises it when the GEMM returns.
    Looks at most every SIGNAL_CHECK_SECONDS, and only in the calling thread."""
    if not g.check_signals:
        return False
    if fpw_flag_get(&g.interrupted):
        return True
    cdef double now = fpw_seconds()
    if now < g.next_signal_check:
        return False
    g.next_signal_check = now + SIGNAL_CHECK_SECONDS
    cdef int raised
    with gil:
        raised = PyErr_CheckSignals()
    if raised:
        fpw_flag_set(&g.interrupted, 1)
    return raised != 0


cdef int _run_gemm(Gemm *g, int threads) noexcept nogil:
    """Run every block of g, on up to `threads` threads (from _gemm_threads). Returns 0,
    -1 when there was no memory for the packing buffers (restriding falls back to
    reading in place), or GEMM_INTERRUPTED when a signal handler raised: blocks not yet
    started were skipped, and the output holds a mix of new and old values."""
    _plan_blocks(g, threads)
    cdef int64_t items = g.batches * g.groups * g.m_blocks * g.n_blocks
    cdef int64_t item, thread
    if threads > items:
        threads = <int>items
    g.interrupted = 0
    g.next_signal_check = fpw_seconds() + SIGNAL_CHECK_SECONDS
    g.scratch_stride = 0
    if g.restride_a:
        g.restrided_rs = g.row_bytes + 64
        g.scratch_stride = g.mb * g.restrided_rs
    elif g.pack != NULL:
        # Every packed pixel takes K channel groups of 4 bytes, after a 64-byte header.
        g.scratch_stride = 64 + _round_up((g.nb if g.pack_on_columns else g.mb) * g.K * 4, 64)
    cdef void *scratch = NULL
    if g.scratch_stride:
        scratch = malloc(threads * g.scratch_stride + 64)
        if scratch == NULL:
            if g.pack != NULL:
                return -1
            g.restride_a = False  # read A in place: slower, still right
        else:
            g.scratch = <char *>((<uintptr_t>scratch + 63) // 64 * 64)
            for thread in range(threads):
                (<int64_t *>(g.scratch + thread * g.scratch_stride))[0] = -1  # holds nothing
    if threads <= 1:
        for item in range(items):
            if _signal_arrived(g):
                break
            _run_block(g, item, 0)
    else:
        fpw_note_team_started()
        # Dynamic: on shared or busy cores a descheduled thread delays one block, not a
        # static share of them. Which thread runs a block never changes its result.
        with parallel(num_threads=threads):
            for item in prange(items, schedule="dynamic", chunksize=1):
                if fpw_flag_get(&g.interrupted):
                    continue
                if fpw_thread_num() == 0 and _signal_arrived(g):
                    continue
                _run_block(g, item, fpw_thread_num())
    free(scratch)
    return GEMM_INTERRUPTED if g.interrupted else 0


cdef int _execute(Gemm *g, int requested) except -1:
    """Run a GEMM without the GIL on the threads it gets; raise what a signal handler
    raised during it (KeyboardInterrupt), or MemoryError if its buffers did not fit."""
    g.check_signals = PyThread_get_thread_ident() == _main_thread_ident
    cdef int threads = _gemm_threads(g, requested)
    cdef int status
    with nogil:
        status = _run_gemm(g, threads)
    if status == GEMM_INTERRUPTED:
        return -1  # the handler's exception is set in this thread (_signal_arrived)
    if status != 0:
        raise MemoryError("fastpw: no memory for the packing buffers")
    return 0


# ---------------------------------------------------------------------------------------
# Weight packing

cdef cnp.ndarray _pack_panels(weight, int64_t groups, int64_t width, int64_t group_size,
                              element_type):
    """Weights (K, Cg) in the panels the kernels read: per group, ceil(Kg/width) panels
    of [channel group][width][group_size] elements of `element_type`, zero-padded, the
    data 64-byte aligned. Every format spends 4 bytes per (channel group, output
    channel): float32 one channel (group_size 1), the int8 formats 4 int8 (DOT4) or 2
    int16 (PAIR16) channels. With width = MR these are the broadcast side (A) of the
    NCHW direct orientation, read with a_rs = 4 bytes and a_cs = 4 * MR; with width = NR
    the vector side (B) of the others, read with b_rs = 4 * NR."""
    cdef int64_t K = weight.shape[0], Cg = weight.shape[1], Kg = K // groups
    cdef int64_t panels = (Kg + width - 1) // width
    cdef int64_t channel_groups = (Cg + group_size - 1) // group_size
    # The rows in the element type, zero-padded to whole channel groups: each (output
    # channel, channel group) is then one 4-byte cell of its row, copied as one. (A
    # float32 weight, or an int8 one with whole groups, is that already: no copy.)
    if Cg % group_size == 0:
        rows = np.ascontiguousarray(weight, dtype=element_type)
    else:
        rows = np.zeros((K, channel_groups * group_size), element_type)
        rows[:, :Cg] = weight
    cdef const uint32_t[:, ::1] cells = rows.view(np.uint32)
    cdef int64_t n = groups * panels * channel_groups * width
    raw = np.zeros(n * 4 + 64, np.uint8)
    cdef int64_t offset = (64 - (<uintptr_t>cnp.PyArray_DATA(raw)) % 64) % 64
    cdef cnp.ndarray out = raw[offset:offset + n * 4]
    cdef uint32_t *dst = <uint32_t *>cnp.PyArray_DATA(out)
    cdef int64_t g, k, c, first
    with nogil:
        for g in range(groups):
            for k in range(Kg):
                first = (g * panels + k // width) * channel_groups * width + k % width
                for c in range(channel_groups):
                    dst[first + c * width] = cells[g * Kg + k, c]
    return out.view(element_type)


# ---------------------------------------------------------------------------------------
# A float32 layer, ready to run

cdef inline double _lane_use(int64_t n, int64_t width) noexcept nogil:
    """Fraction of vector lanes doing useful work when n columns are cut into vectors."""
    return <double>n / <double>(_round_up(n, width))


cdef inline bint _rows_share_l1_sets(int64_t stride_bytes, int64_t rows) noexcept nogil:
    """Would `rows` streams `stride_bytes` apart, read side by side, take more than half
    the 8 ways of a set of a 32 KiB L1 (a 4 KiB period of 64 sets of 64-byte lines),
    leaving too little room for the other operands? A stride that is a multiple of 64
    bytes reaches only 4096 / gcd(stride, 4096) sets: 32 NCHW planes of 32x32 floats
    (4 KiB apart) share one set, those of 48x48 (9 KiB) 8 to a set."""
    cdef int64_t a = stride_bytes % 4096, b = 4096
    while a:  # gcd(stride, 4096)
        a, b = b % a, a
    if b < 64:  # consecutive streams fall into different lines of every set
        return False
    return rows > 4 * (4096 // b)


cdef inline bint _extents_overlap(cnp.ndarray x, cnp.ndarray y) noexcept:
    """Conservative test: do the memory spans of x and y intersect?"""
    cdef char *x_lo = <char *>cnp.PyArray_DATA(x)
    cdef char *x_hi = x_lo
    cdef char *y_lo = <char *>cnp.PyArray_DATA(y)
    cdef char *y_hi = y_lo
    cdef int d
    cdef cnp.npy_intp extent
    for d in range(cnp.PyArray_NDIM(x)):
        if cnp.PyArray_DIMS(x)[d] == 0:
            return False
        extent = (cnp.PyArray_DIMS(x)[d] - 1) * cnp.PyArray_STRIDES(x)[d]
        if extent < 0:
            x_lo += extent
        else:
            x_hi += extent
    for d in range(cnp.PyArray_NDIM(y)):
        if cnp.PyArray_DIMS(y)[d] == 0:
            return False
        extent = (cnp.PyArray_DIMS(y)[d] - 1) * cnp.PyArray_STRIDES(y)[d]
        if extent < 0:
            y_lo += extent
        else:
            y_hi += extent
    return x_lo < y_hi + cnp.PyArray_ITEMSIZE(y) and y_lo < x_hi + cnp.PyArray_ITEMSIZE(x)


cdef bint _pixel_strides(cnp.ndarray arr, bint nhwc, int64_t *batch_stride,
                         int64_t *channel_stride, int64_t *pixel_stride) noexcept:
    """Element strides of a 4-D array seen as [batch][channel][pixel] (NCHW) or
    [batch][pixel][channel] (NHWC). False if H and W do not fold into one pixel stride
    or the layout's inner stride is not 1."""
    cdef cnp.npy_intp *s = cnp.PyArray_STRIDES(arr)
    cdef cnp.npy_intp *n = cnp.PyArray_DIMS(arr)
    cdef int64_t itemsize = cnp.PyArray_ITEMSIZE(arr)
    cdef int h_axis = 1 if nhwc else 2
    cdef int w_axis = h_axis + 1
    cdef int c_axis = 3 if nhwc else 1
    cdef int d
    for d in range(4):
        if s[d] % itemsize != 0:
            return False
    cdef int64_t w_stride = s[w_axis] // itemsize, h_stride = s[h_axis] // itemsize
    cdef int64_t p_stride
    if n[w_axis] > 1:
        p_stride = w_stride
        if n[h_axis] > 1 and h_stride != n[w_axis] * w_stride:
            return False
    elif n[h_axis] > 1:
        p_stride = h_stride
    else:
        p_stride = 1
    batch_stride[0] = s[0] // itemsize
    channel_stride[0] = s[c_axis] // itemsize
    pixel_stride[0] = p_stride
    if nhwc:
        return channel_stride[0] == 1 or n[c_axis] == 1
    return p_stride == 1 or n[h_axis] * n[w_axis] == 1


cdef object _output_array(out, int type_num, cnp.ndarray xa, cnp.ndarray weight, bint nhwc,
                          int64_t batches, int64_t channels, int64_t height, int64_t width,
                          bint check_overlap):
    """A new output array, or `out` if it is one the kernels can write as it is: the
    dtype, shape and layout asked for, writeable, aligned, and (if check_overlap) with a
    memory span apart from x's and the weight's. None otherwise."""
    cdef cnp.npy_intp dims[4]
    dims[0] = batches
    if nhwc:
        dims[1], dims[2], dims[3] = height, width, channels
    else:
        dims[1], dims[2], dims[3] = channels, height, width
    if out is None:
        return cnp.PyArray_EMPTY(4, dims, type_num, 0)
    if not cnp.PyArray_Check(out):
        return None
    cdef cnp.ndarray ya = <cnp.ndarray>out
    if (cnp.PyArray_TYPE(ya) != type_num or cnp.PyArray_NDIM(ya) != 4
            or not cnp.PyArray_ISWRITEABLE(ya) or not cnp.PyArray_ISALIGNED(ya)
            or not cnp.PyArray_ISNOTSWAPPED(ya)):
        return None
    cdef int d
    for d in range(4):
        if cnp.PyArray_DIMS(ya)[d] != dims[d]:
            return None
    if check_overlap and (_extents_overlap(xa, ya) or _extents_overlap(weight, ya)):
        return None
    return ya


cdef struct Call:
    # One call's geometry, as the fast paths of both plans read it.
    int64_t batches, height, width, pixels
    int64_t x_bs, x_cs, x_ps      # element strides of x: batch, channel, pixel
    int64_t y_bs, y_cs, y_ps      # and of the output
    int threads


cdef object _prepare_call(cnp.ndarray xa, out, int out_type_num, bint nhwc,
                          int64_t in_channels, int64_t out_channels, cnp.ndarray weight,
                          num_threads, bint check_overlap, Call *call):
    """Fill `call` and return the output array when x (dtype already checked), `out` and
    num_threads are in the plain form the kernels take; None otherwise."""
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(xa)
    call.batches = dims[0]
    cdef int64_t channels = dims[3] if nhwc else dims[1]
    call.height = dims[1] if nhwc else dims[2]
    call.width = dims[2] if nhwc else dims[3]
    call.pixels = call.height * call.width
    if channels != in_channels or call.batches == 0 or call.pixels == 0:
        return None
    # The kernels read elements through typed pointers: misaligned ones are undefined
    # behaviour in C (UBSan reports them), and byte-swapped ones read as other numbers
    # (the type number does not record byte order): the general path handles both.
    if not cnp.PyArray_ISALIGNED(xa) or not cnp.PyArray_ISNOTSWAPPED(xa):
        return None
    if not _pixel_strides(xa, nhwc, &call.x_bs, &call.x_cs, &call.x_ps):
        return None
    call.threads = _threads_from(num_threads)
    if call.threads == 0:
        return None
    ya = _output_array(out, out_type_num, xa, weight, nhwc, call.batches, out_channels,
                       call.height, call.width, check_overlap)
    if ya is None or not _pixel_strides(<cnp.ndarray>ya, nhwc, &call.y_bs, &call.y_cs,
                                        &call.y_ps):
        return None
    return ya


cdef inline int _threads_from(num_threads) noexcept:
    """num_threads -> a thread count, or 0 if it is not a plain int in range."""
    if num_threads is None:
        return fpw_max_threads()
    if type(num_threads) is int and 1 <= num_threads <= MAX_THREADS:
        return num_threads
    return 0


# Orientations: how a layer maps onto the GEMM (see the module docstring).

cdef enum Orientation:
    CHANNEL_ROWS        # NCHW direct: rows = output channels (A = MR weight panels)
    PIXEL_ROWS          # NHWC: rows = pixels, columns = output channels (B = NR panels)
    PIXEL_ROWS_STORED_TRANSPOSED  # NCHW transposed: as PIXEL_ROWS, C stored transposed


cdef void _orient(Gemm *g, Orientation orientation, const Call *call, int64_t Kg,
                  int64_t panel_groups, const char *panels) noexcept:
    """Set what both plans share for an orientation: M and N, the weight side (A for
    CHANNEL_ROWS, B otherwise) read from `panels` (_pack_panels with width MR or NR,
    panel_groups channel groups of 4 bytes per output channel), the side bias and scale
    are indexed by, and C's strides. g.MR, g.NR and g.batches must be set; the plan
    sets the activation side."""
    cdef int64_t panel_bytes
    if orientation == CHANNEL_ROWS:
        g.M, g.N = Kg, call.pixels
        panel_bytes = panel_groups * g.MR * 4
        g.a = panels
        g.a_rs, g.a_cs, g.a_ts, g.a_bs = 4, g.MR * 4, panel_bytes, 0
        g.a_gs = ((Kg + g.MR - 1) // g.MR) * panel_bytes
        g.bias_on_rows = 1
        g.c_rs, g.c_cs, g.c_gs = call.y_cs, 1, Kg * call.y_cs
        return
    g.M, g.N = call.pixels, Kg
    panel_bytes = panel_groups * g.NR * 4
    g.b = panels
    g.b_rs, g.b_ts, g.b_bs = g.NR * 4, panel_bytes, 0
    g.b_gs = ((Kg + g.NR - 1) // g.NR) * panel_bytes
    g.b_padded = 1
    g.bias_on_rows = 0
    if orientation == PIXEL_ROWS:
        g.c_rs, g.c_cs, g.c_gs = call.y_ps, 1, Kg
    else:
        g.c_rs, g.c_cs, g.c_gs = 1, call.y_cs, Kg * call.y_cs


cdef inline const char *_data(object array) noexcept:
    return <const char *>cnp.PyArray_DATA(<cnp.ndarray>array)


cdef class F32Plan:
    """A float32 1x1 convolution bound to one kernel family, with its weights packed.

    `prepack=True` (the Conv1x1 layer) packs every panel layout the layer may use once;
    `prepack=False` (the functional conv1x1) reads NCHW weights in place and packs only
    what an orientation cannot do without.
    """
    cdef readonly object weight       # (K, Cg) float32, C-contiguous
    cdef readonly object bias         # (K,) float32 or None
    cdef readonly int64_t in_channels, out_channels, groups
    cdef readonly bint nhwc
    cdef readonly str isa
    cdef bint clamp
    cdef float lo, hi
    cdef const fpw_f32_ukernel *kernel
    cdef object row_panels            # NCHW direct: weight rows, MR panels
    cdef object column_panels         # NHWC and NCHW transposed: weight columns, NR panels

    def __cinit__(self, weight, bias, int64_t groups, bint nhwc, clamp, bint prepack):
        self.weight = weight
        self.bias = bias
        self.groups = groups
        self.out_channels = weight.shape[0]
        self.in_channels = weight.shape[1] * groups
        self.nhwc = nhwc
        self.kernel = fpw_families[_op_family[FPW_OP_F32_GEMM]].f32
        self.isa = isa("float32")
        self.clamp = clamp is not None
        self.lo, self.hi = clamp if clamp is not None else (0.0, 0.0)
        if prepack or nhwc:
            self.column_panels = _pack_panels(weight, groups, self.kernel.nr, 1, np.float32)
        if prepack and not nhwc:
            self.row_panels = _pack_panels(weight, groups, self.kernel.mr, 1, np.float32)

    cdef bint _transposed_pays(self, int64_t pixels) noexcept:
        """NCHW: read the output transposed when pixels fill vectors worse than output
        channels do (e.g. 49 pixels in 64 lanes vs 2048 channels, or 196 in 208 vs 64
        in 64). The transposed store is a register transpose in the x86 families, so a
        few lanes pay for it: 384->64 14x14, 512->64 13x13 and 1024->256 14x14 ran
        6-14% faster transposed on AMD Zen 4 (avx512 and avx2). Pixel counts that fill
        all but a handful of lanes (16->64 55x55: 3025 in 3040) stay direct, where
        reading the weights as rows ran 15% faster."""
        cdef int64_t width = self.kernel.lanes
        return (_lane_use(self.out_channels // self.groups, width)
                > _lane_use(pixels, width) + 0.01)

    def run(self, x, out, num_threads, bint check_overlap=True):
        """Compute into `out` (or a new array) if x and out need no preparation.

        Returns None when an argument is not in the plain form this fast path handles
        (wrong type, shape, dtype or strides, a possible overlap, an empty tensor); the
        Python layer then validates, reports errors and normalizes.
        """
        if not cnp.PyArray_Check(x):
            return None
        cdef cnp.ndarray xa = <cnp.ndarray>x
        if cnp.PyArray_TYPE(xa) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(xa) != 4:
            return None
        cdef Call call
        ya = _prepare_call(xa, out, cnp.NPY_FLOAT32, self.nhwc, self.in_channels,
                           self.out_channels, <cnp.ndarray>self.weight, num_threads,
                           check_overlap, &call)
        if ya is None:
            return None
        cdef int64_t batches = call.batches, pixels = call.pixels
        cdef int64_t x_bs = call.x_bs, x_cs = call.x_cs, x_ps = call.x_ps
        cdef int64_t y_bs = call.y_bs
        cdef int threads = call.threads

        cdef Gemm g
        g.pack = NULL
        g.restride_a = False
        g.a_prefetch = False
        cdef const fpw_f32_ukernel *fam = self.kernel
        cdef int64_t Kg = self.out_channels // self.groups
        cdef int64_t Cg = self.in_channels // self.groups
        g.K = Cg
        g.batches = batches
        g.groups = self.groups
        g.MR = fam.mr
        g.NR = fam.nr
        g.f32_kernel = fam.gemm
        g.q8_kernel = NULL
        g.kc_block = 0
        # Weights that fit a share of L2 are read from there by every row tile: walking
        # the columns of one row tile before the next writes C in long runs (NHWC: whole
        # rows; NCHW: a few planes at a time, not all K), worth 5-15% on short
        # reductions and wide outputs (16->96 112x112, 96->384 56x56). Larger weights
        # keep the GotoBLAS order: one panel of B in L1 while A's block streams from L2.
        g.rows_outer = 4 * Kg * Cg <= L2_BLOCK_BYTES
        g.scale = NULL
        g.c_elem = 4
        g.clamp = self.clamp
        g.lo = self.lo
        g.hi = self.hi
        g.bias = NULL
        if self.bias is not None:
            g.bias = <const char *>cnp.PyArray_DATA(<cnp.ndarray>self.bias)
        g.bias_gs = Kg
        g.c = <char *>cnp.PyArray_DATA(<cnp.ndarray>ya)
        g.c_bs = y_bs
        # NCHW layers with at most NR output channels read their pixels in place, as
        # the transposed orientation's rows: there is a single column tile, so packed
        # pixels would be read once, and packing them is a whole extra pass over x
        # (squeezenet 96->16 55x55: 27% of the time).
        # Where the planes alias in L1 (32x32, 48x48, 64x64, 112x112 maps), packing pays
        # once the output channels take more than one vector: on AMD Zen 4, 32->32
        # 32x32 ran 0.68x XNNPACK in place and 0.82x packed (avx512), 16->16 32x32 0.42x
        # and 0.99x (avx2), 32->32 48x48 0.77x and 0.85x (avx512); with one vector in
        # place stayed ahead (avx512 256->16 32x32: 0.92x in place, 0.71x packed).
        # Likewise for planes past IN_PLACE_PLANE_BYTES (32->32 127x127: 0.73x in place,
        # 0.86x packed; avx2 16->16 127x127 0.54x and 0.68x, 64->12 100x100 0.80x and
        # 0.91x), while avx2 kept 96->16 55x55 (12 KiB planes) at 0.81x in place, 0.72x
        # packed.
        cdef bint pixels_in_place = (
            not self.nhwc and x_ps == 1 and Kg <= <int64_t>fam.nr
            and (Kg <= <int64_t>fam.lanes
                 or (not _rows_share_l1_sets(4 * x_cs, Cg)
                     and 4 * pixels <= IN_PLACE_PLANE_BYTES)))
        cdef Orientation orientation = PIXEL_ROWS
        if not self.nhwc:
            orientation = (PIXEL_ROWS_STORED_TRANSPOSED
                           if pixels_in_place or self._transposed_pays(pixels) else CHANNEL_ROWS)
        if orientation != CHANNEL_ROWS and self.column_panels is None:
            self.column_panels = _pack_panels(self.weight, self.groups, fam.nr, 1, np.float32)
        # The panels the kernel reads, held while the GIL is released: without prepacked
        # row panels, NCHW direct reads the weight rows in place.
        cdef object keep_alive = (self.row_panels if orientation == CHANNEL_ROWS
                                  else self.column_panels)
        if keep_alive is None:
            keep_alive = self.weight
        _orient(&g, orientation, &call, Kg, Cg, _data(keep_alive))
        # NCHW pixels are packed block by block into panels (see f32/pack.h for why):
        # of NR pixels as B's columns, or of MR pixels as A's rows when transposed.
        cdef Pack pack
        pack.x = <const uint8_t *>cnp.PyArray_DATA(xa)
        pack.x_bs, pack.x_cs, pack.Cg = x_bs, x_cs, Cg
        pack.nhwc = False
        if orientation == CHANNEL_ROWS:
            # b and b_rs are set per block.
            pack.f32_panel_width = fam.nr
            g.pack = &pack
            g.pack_on_columns = True
            g.b = NULL
            g.b_rs, g.b_ts, g.b_bs, g.b_gs = 0, 4 * fam.nr * Cg, 0, 0
            g.b_padded = 1
            if keep_alive is self.weight:
                g.a_rs, g.a_cs, g.a_ts, g.a_gs = 4 * Cg, 4, 4 * fam.mr * Cg, 4 * Kg * Cg
        elif self.nhwc:
            # Rows are NHWC pixel rows read in place (element strides times 4 bytes).
            g.a = _data(xa)
            g.a_bs = 4 * x_bs
            g.a_rs, g.a_cs, g.a_gs = 4 * x_ps, 4, 4 * Cg
            g.restride_a = (x_ps * 4) % 4096 == 0 and <int64_t>fam.mr >= _restride_min_rows
            g.a_ts = fam.mr * g.a_rs
        elif pixels_in_place:
            # Rows are runs of MR pixels of every channel plane, read in place.
            g.a = _data(xa)
            g.a_bs = 4 * x_bs
            g.a_rs, g.a_cs, g.a_gs = 4, 4 * x_cs, 4 * Cg * x_cs
            g.a_ts = fam.mr * 4
            g.a_prefetch = 1
        else:
            # Rows are NCHW pixels in panels of MR (a is set per block).
            pack.f32_panel_width = fam.mr
            g.pack = &pack
            g.pack_on_columns = False
            g.a = NULL
            g.a_rs, g.a_cs, g.a_ts, g.a_bs, g.a_gs = 4, 4 * fam.mr, 4 * fam.mr * Cg, 0, 0
        if g.c_cs == 1 and Cg > KC_BLOCK:  # transposed stores cannot reload partial sums
            g.kc_block = KC_BLOCK
        g.row_bytes = 4 * Cg
        _execute(&g, threads)
        return ya


# ---------------------------------------------------------------------------------------
# int8

# Output dtypes of the quantized path, as the kernels' epilogue names them.
OUT_UINT8 = FPW_Q8_OUT_U8
OUT_INT8 = FPW_Q8_OUT_S8
OUT_INT32 = FPW_Q8_OUT_S32
OUT_FLOAT32 = FPW_Q8_OUT_F32
_OUT_NUMPY_TYPES = {FPW_Q8_OUT_U8: cnp.NPY_UINT8, FPW_Q8_OUT_S8: cnp.NPY_INT8,
                    FPW_Q8_OUT_S32: cnp.NPY_INT32, FPW_Q8_OUT_F32: cnp.NPY_FLOAT32}


cdef int _dot4_shift(const fpw_q8_ukernel *kernel, bint x_signed) noexcept:
    """What the kernel reads for an activation byte x, as x + shift. DOT4 kernels take
    their activations as one signedness (vpdpbusd: uint8, sdot: int8); activations of
    the other one are flipped (XOR 0x80): int8 to uint8 + 128, or uint8 to int8 - 128.
    PAIR16 kernels sign- or zero-extend and read x itself."""
    if kernel.format != FPW_Q8_DOT4 or x_signed == kernel.signed_activations:
        return 0
    return 128 if x_signed else -128


cdef class Q8Plan:
    """An int8 1x1 convolution bound to one kernel family: weights packed in its int8
    format, the input zero point folded into the bias, the epilogues ready.

    `epilogues` maps each output type the layer can produce (OUT_UINT8, ...) to
    (scale, lo, hi, zero_point, clamp): scale a float32 array (K,) (None for int32), the
    rest as in fpw_q8_tile. The Python layer computes them; this class adds only what
    depends on the kernel family.
    """
    cdef readonly object weight       # (K, Cg) int8, C-contiguous
    cdef readonly int64_t in_channels, out_channels, groups
    cdef readonly bint nhwc
    cdef readonly str isa
    cdef const fpw_q8_ukernel *kernel
    cdef int x_zero_point
    cdef dict epilogues
    # {x is int8: int32 (K,)}: bias - (zp + shift) * sum(w), None where all zero (the
    # kernels then read no bias: the NULL of the contract in fastpw.h)
    cdef dict folded_bias
    cdef object row_panels            # NCHW direct: MR panels
    cdef object column_panels         # NHWC and NCHW transposed: NR panels

    def __cinit__(self, weight, bias, int64_t groups, bint nhwc, int x_zero_point,
                  dict epilogues):
        self.weight = weight
        self.groups = groups
        self.out_channels = weight.shape[0]
        self.in_channels = weight.shape[1] * groups
        self.nhwc = nhwc
        self.kernel = fpw_families[_op_family[FPW_OP_Q8_GEMM]].q8
        self.isa = isa("int8")
        self.x_zero_point = x_zero_point
        self.epilogues = epilogues
        cdef const fpw_q8_ukernel *fam = self.kernel
        group_size, element_type = (4, np.int8) if fam.format == FPW_Q8_DOT4 else (2, np.int16)
        self.column_panels = _pack_panels(weight, groups, fam.nr, group_size, element_type)
        if not nhwc:
            self.row_panels = _pack_panels(weight, groups, fam.mr, group_size, element_type)
        # acc = sum (x - zp) w + bias = sum x' w + bias - (zp + shift) sum w, where x' =
        # x + shift is what the kernel reads (see _dot4_shift).
        weight_sums = np.asarray(weight, dtype=np.int64).sum(axis=1)
        base = np.zeros(self.out_channels, np.int64) if bias is None else bias.astype(np.int64)
        self.folded_bias = {}
        for x_signed in (False, True):
            shift = _dot4_shift(fam, x_signed)
            folded = base - (x_zero_point + shift) * weight_sums
            # Wrap to int32 as the kernels' two's complement accumulators do.
            folded = (folded + 2**31) % 2**32 - 2**31
            self.folded_bias[x_signed] = folded.astype(np.int32) if folded.any() else None

    cdef bint _transposed_pays(self, int64_t pixels) noexcept:
        """As F32Plan: NCHW output read transposed when pixels waste vector lanes."""
        cdef int64_t width = self.kernel.lanes
        if width == 1:
            return False  # the scalar kernel has no lanes to waste
        return (0.95 * _lane_use(self.out_channels // self.groups, width)
                > _lane_use(pixels, width) + 0.05)

    def run(self, x, out, out_type, num_threads, bint check_overlap=True):
        """Compute into `out` (or a new array) when x and out are in the plain form the
        fast path handles; None otherwise (the Python layer validates and normalizes).
        `out_type` None means the output dtype of x."""
        if not cnp.PyArray_Check(x):
            return None
        cdef cnp.ndarray xa = <cnp.ndarray>x
        cdef int x_type = cnp.PyArray_TYPE(xa)
        if (x_type != cnp.NPY_UINT8 and x_type != cnp.NPY_INT8) or cnp.PyArray_NDIM(xa) != 4:
            return None
        cdef bint x_signed = x_type == cnp.NPY_INT8
        if x_signed and not -128 <= self.x_zero_point <= 127:
            return None
        if not x_signed and not 0 <= self.x_zero_point <= 255:
            return None
        if out_type is None:
            out_type = FPW_Q8_OUT_S8 if x_signed else FPW_Q8_OUT_U8
        epilogue = self.epilogues.get(out_type)
        if epilogue is None:
            return None
        cdef Call call
        ya = _prepare_call(xa, out, _OUT_NUMPY_TYPES[out_type], self.nhwc, self.in_channels,
                           self.out_channels, <cnp.ndarray>self.weight, num_threads,
                           check_overlap, &call)
        if ya is None:
            return None
        cdef int64_t batches = call.batches, pixels = call.pixels
        cdef int64_t x_bs = call.x_bs, x_cs = call.x_cs, x_ps = call.x_ps
        cdef int64_t y_bs = call.y_bs
        cdef int threads = call.threads

        cdef const fpw_q8_ukernel *fam = self.kernel
        cdef int fmt = fam.format
        cdef int64_t group_size = 4 if fmt == FPW_Q8_DOT4 else 2
        cdef int64_t G = self.groups
        cdef int64_t Kg = self.out_channels // G
        cdef int64_t Cg = self.in_channels // G
        cdef int64_t Cgg = (Cg + group_size - 1) // group_size
        cdef int64_t MR = fam.mr, NR = fam.nr
        cdef Orientation orientation = PIXEL_ROWS
        if not self.nhwc:
            orientation = (PIXEL_ROWS_STORED_TRANSPOSED if self._transposed_pays(pixels)
                           else CHANNEL_ROWS)
        scale, lo, hi, zero_point, clamp = epilogue
        bias = self.folded_bias[x_signed]
        # The panels the kernel reads, held while the GIL is released.
        cdef object panels = (self.row_panels if orientation == CHANNEL_ROWS
                              else self.column_panels)

        cdef Gemm g
        g.restride_a = False
        g.f32_kernel = NULL
        g.q8_kernel = fam.gemm
        g.kc_block = 0
        g.rows_outer = False
        g.MR, g.NR = MR, NR
        g.batches, g.groups = batches, G
        g.out_type = out_type
        g.c_elem = cnp.PyArray_ITEMSIZE(<cnp.ndarray>ya)
        g.c = <char *>cnp.PyArray_DATA(<cnp.ndarray>ya)
        g.c_bs = y_bs
        # No bias where it is all zero, no scale for int32 output (typed NULLs: see
        # _run_block).
        g.bias = (<const char *>NULL if bias is None
                  else <const char *>cnp.PyArray_DATA(<cnp.ndarray>bias))
        g.scale = (<const float *>NULL if scale is None
                   else <const float *>cnp.PyArray_DATA(<cnp.ndarray>scale))
        g.bias_gs = Kg
        g.lo, g.hi, g.zero_point, g.clamp = lo, hi, zero_point, clamp
        g.a_tail = 0
        g.a_flip_sign = 0

        # The activations as the kernels read them: NHWC DOT4 in place, otherwise packed
        # block by block (the strides of the packed operand are set per block).
        cdef bint in_place = self.nhwc and fmt == FPW_Q8_DOT4
        cdef const uint8_t *x_data = <const uint8_t *>cnp.PyArray_DATA(xa)
        cdef Pack pack
        pack.x, pack.x_bs, pack.x_cs, pack.x_ps = x_data, x_bs, x_cs, x_ps
        pack.x_signed, pack.nhwc, pack.fmt, pack.Cg = x_signed, self.nhwc, fmt, Cg
        pack.f32_panel_width = 0
        pack.flip = _dot4_shift(fam, x_signed) != 0
        g.pack = NULL if in_place else &pack
        g.pack_on_columns = orientation == CHANNEL_ROWS

        _orient(&g, orientation, &call, Kg, Cgg, _data(panels))
        g.K = Cgg
        if orientation == CHANNEL_ROWS:
            # Columns are the pixels, packed per block (b and b_rs are set there).
            g.a_is_data = 0
            g.b = NULL
            g.b_rs, g.b_ts, g.b_bs, g.b_gs = 0, NR * 4, 0, 0
            g.b_padded = 0
        elif in_place:
            # NHWC pixel rows read as they are, a partial last group after K full ones.
            g.a_is_data = 1
            g.a = <const char *>x_data
            g.a_rs, g.a_cs, g.a_ts, g.a_bs, g.a_gs = x_ps, 4, MR * x_ps, x_bs, Cg
            g.K = Cg // 4
            g.a_tail = Cg % 4
            g.a_flip_sign = _dot4_shift(fam, x_signed) != 0
        else:
            # Rows are pixels packed per block: NHWC rows of Cgg groups, or NCHW pixels
            # read down the packed channel groups (a_cs is set per block).
            g.a_is_data = 1
            g.a = NULL
            g.a_rs = Cgg * 4 if self.nhwc else 4
            g.a_cs = 4 if self.nhwc else 0
            g.a_ts, g.a_bs, g.a_gs = MR * g.a_rs, 0, 0
        _execute(&g, threads)
        return ya


# ---------------------------------------------------------------------------------------
# Elementwise quantize / dequantize (fastpw.quant)

cdef enum:
    # Elements per work item, and the least work worth waking another thread for.
    QUANT_CHUNK = 16384
    QUANT_MIN_PER_THREAD = 65536


cdef struct QuantJob:
    # The arrays seen as (outer, axis_len, inner), C-contiguous; scale and zero point have
    # axis_len entries (1 for per tensor). Per element (inner == 1, axis_len > 1): an item
    # is rows_per_item whole rows of axis_len elements, each element with its own scale.
    # Otherwise: an item is up to QUANT_CHUNK elements of one row of inner elements,
    # which share one scale.
    const char *src
    char *dst
    const float *scale
    const int32_t *zero_point
    int64_t outer, axis_len, inner
    int64_t chunks_per_row, rows_per_item
    bint per_element, is_signed, quantizing
    const fpw_quant_ukernel *kernel


cdef void _quant_item(const QuantJob *j, int64_t item) noexcept nogil:
    cdef fpw_quant_run run
    cdef int64_t row, row_end, start, chunk, axis_index
    run.per_element = j.per_element
    run.is_signed = j.is_signed
    if j.per_element:
        run.n = j.axis_len
        run.scale = j.scale
        run.zero_point = j.zero_point
        row = item * j.rows_per_item
        row_end = min(row + j.rows_per_item, j.outer)
        while row < row_end:
            _quant_span(j, row * j.axis_len, &run)
            row += 1
    else:
        row = item // j.chunks_per_row
        chunk = item % j.chunks_per_row
        start = row * j.inner + chunk * QUANT_CHUNK
        run.n = min(<int64_t>QUANT_CHUNK, j.inner - chunk * QUANT_CHUNK)
        axis_index = row % j.axis_len
        run.scale = j.scale + axis_index
        run.zero_point = j.zero_point + axis_index
        _quant_span(j, start, &run)


cdef inline void _quant_span(const QuantJob *j, int64_t start,
                             const fpw_quant_run *run) noexcept nogil:
    if j.quantizing:
        j.kernel.quantize(<const float *>j.src + start, j.dst + start, run)
    else:
        j.kernel.dequantize(j.src + start, <float *>j.dst + start, run)


def quantize_elementwise(cnp.ndarray src, cnp.ndarray dst, cnp.ndarray scale,
                         cnp.ndarray zero_point, int64_t inner, bint quantizing,
                         num_threads):
    """dst = quantize(src) (quantizing) or dequantize(src), elementwise.

    src and dst: C-contiguous, the same size; float32 and uint8/int8 (either way round).
    scale: float32 (A,), zero_point: int32 (A,), contiguous; the arrays are seen as
    (outer, A, inner). The Python layer (fastpw.quant) validates everything.
    """
    cdef QuantJob j
    cdef int64_t n = cnp.PyArray_SIZE(src)
    cdef cnp.ndarray quantized = dst if quantizing else src
    j.src = <const char *>cnp.PyArray_DATA(src)
    j.dst = <char *>cnp.PyArray_DATA(dst)
    j.scale = <const float *>cnp.PyArray_DATA(scale)
    j.zero_point = <const int32_t *>cnp.PyArray_DATA(zero_point)
    j.axis_len = cnp.PyArray_SIZE(scale)
    j.inner = inner
    j.outer = n // (j.axis_len * inner) if n else 0
    j.per_element = inner == 1 and j.axis_len > 1
    j.is_signed = cnp.PyArray_TYPE(quantized) == cnp.NPY_INT8
    j.quantizing = quantizing
    j.kernel = fpw_families[_op_family[FPW_OP_QUANT]].quant
    cdef int64_t items
    if j.per_element:
        j.rows_per_item = max(1, QUANT_CHUNK // j.axis_len)
        items = (j.outer + j.rows_per_item - 1) // j.rows_per_item
    else:
        j.chunks_per_row = (inner + QUANT_CHUNK - 1) // QUANT_CHUNK
        items = j.outer * j.axis_len * j.chunks_per_row
    cdef int threads = _threads_from(num_threads)
    threads = <int>max(1, min(<int64_t>threads, n // QUANT_MIN_PER_THREAD, items))
    threads = _threads_for_call(threads)
    cdef int64_t item
    with nogil:
        if threads <= 1:
            for item in range(items):
                _quant_item(&j, item)
        else:
            fpw_note_team_started()
            with parallel(num_threads=threads):
                for item in prange(items, schedule="dynamic", chunksize=1):
                    _quant_item(&j, item)
