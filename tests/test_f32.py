"""float32 ``conv1x1`` and ``Conv1x1`` against the float64 reference, under every ISA.

Every test that computes takes the ``isa`` fixture (conftest.py), so it runs once per
kernel family this CPU can run that has a float32 kernel of its own. Shapes at MR, NR
and lanes -1, +0 and +1 of every kernel's register tile (read from the compiled kernel
table) land on the edge tiles; hypothesis mixes those sizes with arbitrary ones.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import kernels
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from layouts import channel_axis, stride_pair, x_shape, y_shape
from memory import MEMORY_KINDS, rearranged, unaligned_empty

import fastpw
from fastpw import _kernels
from fastpw.testing import assert_matches_reference

LAYOUTS = ("NCHW", "NHWC")
#: The operation these tests go through (its kernels' edge sizes: tests/kernels.py).
KERNEL_OPERATION = "float32"
#: Register-tile edges of every float32 kernel in the build (tests/kernels.py).
EDGE_SIZES = kernels.edge_sizes(KERNEL_OPERATION)
#: A few sizes that span several tiles and end on a partial one.
MULTI_TILE_SIZES = (23, 25, 29, 43, 95, 97, 129)
#: Written into ``out`` buffers before a call; float32-exact, never produced by the tests.
SENTINEL = np.float32(12345.0)
X_MEMORY = MEMORY_KINDS
OUT_KINDS = (None, "full", "channel_slice", "other_layout", "negative_strides", "unaligned")


# ---------------------------------------------------------------------------- helpers


def random_inputs(rng, layout, n, c, h, w, k, groups=1, bias=True, weight_4d=False, scale=1.0):
    x = (scale * rng.standard_normal(x_shape(layout, n, c, h, w))).astype(np.float32)
    weight = rng.standard_normal((k, c // groups)).astype(np.float32)
    if weight_4d:
        weight = weight.reshape(k, c // groups, 1, 1)
    b = rng.standard_normal(k).astype(np.float32) if bias else None
    return x, weight, b


def with_memory(arr, kind, layout):
    """``arr`` rearranged in memory (tests/memory.py); the padding around a view holds
    NaN, so a kernel that reads outside the view poisons its result."""
    return rearranged(arr, kind, layout, lambda shape: np.full(shape, np.nan, arr.dtype))


def make_out(kind, shape, layout, before=3, after=5):
    """``(out, buffer, outside)``: the ``out`` argument, the buffer it lives in (filled
    with SENTINEL) and a mask of the buffer entries that must stay untouched."""
    if kind is None:
        return None, None, None
    if kind == "channel_slice":
        axis = channel_axis(layout)
        big_shape = list(shape)
        big_shape[axis] += before + after
        buf = np.full(big_shape, SENTINEL, dtype=np.float32)
        index = [slice(None)] * 4
        index[axis] = slice(before, before + shape[axis])
        outside = np.ones(big_shape, dtype=bool)
        outside[tuple(index)] = False
        return buf[tuple(index)], buf, outside
    if kind == "full":
        out = np.empty(shape, dtype=np.float32)
    elif kind == "other_layout":
        perm = (0, 2, 3, 1) if layout.upper() == "NCHW" else (0, 3, 1, 2)
        out = np.empty(tuple(shape[p] for p in perm), dtype=np.float32)
        out = out.transpose(np.argsort(perm))
    elif kind == "negative_strides":
        out = np.empty(shape, dtype=np.float32)[::-1, ::-1, ::-1, ::-1]
    elif kind == "unaligned":
        out = unaligned_empty(shape, np.float32)
    else:
        raise AssertionError(kind)
    assert out.shape == tuple(shape)
    out[...] = SENTINEL
    return out, out, np.zeros(shape, dtype=bool)


def assert_bitwise_equal(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype == np.float32, (a.dtype, b.dtype)
    a_bits = np.ascontiguousarray(a).view(np.uint32)
    b_bits = np.ascontiguousarray(b).view(np.uint32)
    differ = np.argwhere(a_bits != b_bits)
    assert differ.size == 0, (
        f"{len(differ)} entries differ bitwise; first at {tuple(differ[0])}: "
        f"{a[tuple(differ[0])]!r} vs {b[tuple(differ[0])]!r}"
    )


# -------------------------------------------------------------- hypothesis property test


def sizes(max_value):
    """Sizes in [1, max_value], the register-tile edges drawn often."""
    max_value = max(1, max_value)
    edges = [s for s in EDGE_SIZES + list(MULTI_TILE_SIZES) if s <= max_value]
    return st.one_of(st.sampled_from(edges), st.integers(1, max_value))


clamps = st.tuples(st.floats(-4, 0, width=32), st.floats(0, 4, width=32))
activations = st.one_of(st.none(), st.sampled_from(["relu", "relu6"]), clamps)


@dataclass
class Problem:
    layout: str
    n: int
    c: int
    k: int
    h: int
    w: int
    groups: int
    stride: int | tuple
    activation: object
    bias: bool
    weight_4d: bool
    x_memory: str
    out_kind: str | None
    out_pad: tuple
    num_threads: int | None
    seed: int


@st.composite
def conv_problems(draw, max_macs=3_000_000, max_x_elements=1_000_000):
    """One conv1x1 call. Sizes are capped so that N*K*(C/groups)*Ho*Wo <= max_macs (the
    float64 einsum reference is the slow part) and x stays under max_x_elements."""
    layout = draw(st.sampled_from(LAYOUTS))
    groups = draw(st.one_of(st.just(1), st.integers(2, 4)))
    cg = draw(sizes(300 // groups))
    kg = draw(sizes(300 // groups))
    c, k = cg * groups, kg * groups
    stride = draw(st.sampled_from([1, 2, (2, 1), (1, 3)]))
    sh, sw = stride_pair(stride)
    n = draw(st.integers(1, 3))
    pixels = min(max_macs // (n * k * cg), max_x_elements // (n * c * sh * sw))
    ho = draw(sizes(min(200, pixels)))
    wo = draw(sizes(min(200, pixels // ho)))
    h = ho * sh - draw(st.integers(0, sh - 1))
    w = wo * sw - draw(st.integers(0, sw - 1))
    return Problem(
        layout=layout,
        n=n,
        c=c,
        k=k,
        h=h,
        w=w,
        groups=groups,
        stride=stride,
        activation=draw(activations),
        bias=draw(st.booleans()),
        weight_4d=draw(st.booleans()),
        x_memory=draw(st.sampled_from(X_MEMORY)),
        out_kind=draw(st.sampled_from(OUT_KINDS)),
        out_pad=(draw(st.integers(0, 17)), draw(st.integers(0, 17))),
        num_threads=draw(st.sampled_from([None, 1, 2, 3])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@given(p=conv_problems())
def test_matches_reference(isa, p):
    rng = np.random.default_rng(p.seed)
    x, weight, bias = random_inputs(
        rng, p.layout, p.n, p.c, p.h, p.w, p.k, p.groups, p.bias, p.weight_4d
    )
    xv = with_memory(x, p.x_memory, p.layout)
    x_before = xv.copy()
    out, buf, outside = make_out(
        p.out_kind, y_shape(p.layout, p.n, p.k, p.h, p.w, p.stride), p.layout, *p.out_pad
    )
    y = fastpw.conv1x1(
        xv,
        weight,
        bias,
        layout=p.layout,
        stride=p.stride,
        groups=p.groups,
        activation=p.activation,
        out=out,
        num_threads=p.num_threads,
    )
    if out is not None:
        assert y is out
    assert_matches_reference(y, x, weight, bias, p.layout, p.stride, p.groups, p.activation)
    np.testing.assert_array_equal(xv, x_before, err_msg="x was modified")
    if outside is not None:
        assert (buf[outside] == SENTINEL).all(), "out: entries outside the slice were written"


# ------------------------------------------------------------ explicit shape coverage


@pytest.mark.parametrize("layout", LAYOUTS)
def test_edge_tiles(isa, layout):
    """Every pair (K, pixels) from the edge sizes of this family's kernel: K and H*W each
    land on MR+-1, NR+-1 and lanes+-1 (NCHW tiles K by MR and pixels by NR; NHWC the
    other way round)."""
    rng = np.random.default_rng(1)
    cs = (1, 3, 8, 17, 64)
    edges = sorted({1, 2, 3, *kernels.kernel_sizes(kernels.running_kernel(KERNEL_OPERATION))})
    for i, (k, p) in enumerate(itertools.product(edges, edges)):
        h, w = (1, p) if i % 2 else (p, 1)
        x, weight, bias = random_inputs(rng, layout, 1, cs[i % len(cs)], h, w, k)
        y = fastpw.conv1x1(x, weight, bias, layout=layout)
        assert_matches_reference(y, x, weight, bias, layout)


@pytest.mark.parametrize("k", [8, 12, 16, 24, 32])
def test_nchw_planes_a_multiple_of_4k(isa, k):
    """NCHW planes 4 KiB apart (32x32 floats) alias in L1: layers of at most NR output
    channels then pack their pixels or read them in place depending on K (F32Plan).
    Both ways, and the 16 KiB planes of 64x64, match the reference."""
    rng = np.random.default_rng(k)
    for c, side in ((40, 32), (9, 64)):
        x, weight, bias = random_inputs(rng, "NCHW", 1, c, side, side, k)
        y = fastpw.conv1x1(x, weight, bias, layout="NCHW")
        assert_matches_reference(y, x, weight, bias, "NCHW")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_multi_tile_sizes(isa, layout):
    rng = np.random.default_rng(2)
    for k, p in itertools.product(MULTI_TILE_SIZES, MULTI_TILE_SIZES):
        x, weight, bias = random_inputs(rng, layout, 1, 9, 1, p, k)
        y = fastpw.conv1x1(x, weight, bias, layout=layout, activation="relu")
        assert_matches_reference(y, x, weight, bias, layout, activation="relu")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("c", [63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1031])
def test_reduction_depth(isa, layout, c):
    """Long and odd channel counts (any blocking of the reduction must not drop or repeat
    a channel)."""
    rng = np.random.default_rng(c)
    x, weight, bias = random_inputs(rng, layout, 1, c, 3, 11, 13)
    y = fastpw.conv1x1(x, weight, bias, layout=layout)
    assert_matches_reference(y, x, weight, bias, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", ["relu6", (-0.5, 0.75)], ids=str)
def test_blocked_reduction_applies_bias_and_clamp_once(isa, layout, activation):
    """Reductions over more than 512 channels run in blocks (partial sums stored and
    reloaded); bias and activation must apply once, after the last block, for every
    thread count alike."""
    rng = np.random.default_rng(1100)
    x, weight, bias = random_inputs(rng, layout, 2, 1100, 9, 10, 37)
    layer = fastpw.Conv1x1(weight, bias, layout=layout, activation=activation)
    y = layer(x, num_threads=1)
    assert_matches_reference(y, x, weight, bias, layout, activation=activation)
    np.testing.assert_array_equal(layer(x, num_threads=2), y)


@pytest.mark.parametrize("restride_rows", [1, None], ids=["restrided", "family-rule"])
@pytest.mark.parametrize("channels_used", [1024, 700, 1])
@pytest.mark.parametrize("n", [1, 2])
def test_nhwc_pixel_rows_4k_apart(isa, channels_used, n, restride_rows):
    """NHWC pixels 1024 floats (4 KiB) apart are copied to a padded row stride before
    the tiles read them, for families whose tiles have enough rows to evict each other
    (forced here for every family with restride_rows=1); whole rows and channel slices
    of such a buffer must still be exact, and the padding must never leak into a
    result."""
    old = None if restride_rows is None else _kernels._set_restride_min_rows(restride_rows)
    try:
        _check_4k_apart_rows(channels_used, n)
    finally:
        if old is not None:
            _kernels._set_restride_min_rows(old)


def _check_4k_apart_rows(channels_used, n):
    rng = np.random.default_rng(channels_used)
    buffer = rng.standard_normal((n, 5, 7, 1024), dtype=np.float32)
    x = buffer[..., :channels_used]
    weight = rng.standard_normal((40, channels_used), dtype=np.float32)
    bias = rng.standard_normal(40, dtype=np.float32)
    layer = fastpw.Conv1x1(weight, bias, layout="NHWC")
    for num_threads in (1, 2):
        y = layer(x, num_threads=num_threads)
        assert_matches_reference(y, x, weight, bias, "NHWC")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "n,c,k,h,w", [(1, 64, 96, 56, 56), (2, 35, 67, 28, 28), (3, 3, 17, 19, 23)]
)
def test_realistic_shapes(isa, layout, n, c, k, h, w):
    rng = np.random.default_rng(3)
    x, weight, bias = random_inputs(rng, layout, n, c, h, w, k)
    y = fastpw.conv1x1(x, weight, bias, layout=layout, activation="relu6")
    assert_matches_reference(y, x, weight, bias, layout, activation="relu6")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [2, 3, (2, 1), (1, 2), (3, 2), (10, 4)])
def test_stride(isa, layout, stride):
    """Output is ceil(H/sh) x ceil(W/sw) and uses x[..., ::sh, ::sw] (odd H and W)."""
    rng = np.random.default_rng(4)
    x, weight, bias = random_inputs(rng, layout, 2, 5, 7, 9, 19)
    y = fastpw.conv1x1(x, weight, bias, layout=layout, stride=stride)
    assert y.shape == y_shape(layout, 2, 19, 7, 9, stride)
    assert_matches_reference(y, x, weight, bias, layout, stride)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stride_int_equals_pair(isa, layout):
    rng = np.random.default_rng(5)
    x, weight, bias = random_inputs(rng, layout, 1, 6, 9, 10, 7)
    assert_bitwise_equal(
        fastpw.conv1x1(x, weight, bias, layout=layout, stride=2),
        fastpw.conv1x1(x, weight, bias, layout=layout, stride=(2, 2)),
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [2, (2, 1), (1, 3)])
def test_stride_never_reads_skipped_pixels(isa, layout, stride):
    """NaN in every pixel the stride skips must not reach the output."""
    rng = np.random.default_rng(6)
    x, weight, bias = random_inputs(rng, layout, 1, 7, 9, 11, 13)
    sh, sw = stride_pair(stride)
    nchw = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)  # a view: writes go to x
    keep = np.zeros(nchw.shape[2:], dtype=bool)
    keep[::sh, ::sw] = True
    nchw[:, :, ~keep] = np.nan
    y = fastpw.conv1x1(x, weight, bias, layout=layout, stride=stride)
    assert np.isfinite(y).all()
    assert_matches_reference(y, x, weight, bias, layout, stride)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "c,k,groups", [(6, 12, 2), (12, 6, 3), (8, 8, 8), (30, 45, 15), (64, 128, 4), (26, 39, 13)]
)
def test_groups(isa, layout, c, k, groups):
    rng = np.random.default_rng(7)
    x, weight, bias = random_inputs(rng, layout, 2, c, 5, 13, k, groups)
    y = fastpw.conv1x1(x, weight, bias, layout=layout, groups=groups)
    assert_matches_reference(y, x, weight, bias, layout, groups=groups)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_groups_use_their_own_channel_block(isa, layout):
    """Output block g depends only on input block g: zeroing block 1 of x changes only
    output block 1."""
    rng = np.random.default_rng(8)
    x, weight, bias = random_inputs(rng, layout, 1, 12, 4, 5, 9, groups=3)
    y = fastpw.conv1x1(x, weight, bias, layout=layout, groups=3)
    x2 = x.copy()
    index = [slice(None)] * 4
    index[channel_axis(layout)] = slice(4, 8)
    x2[tuple(index)] = 0
    y2 = fastpw.conv1x1(x2, weight, bias, layout=layout, groups=3)
    for g, changed in enumerate((False, True, False)):
        index[channel_axis(layout)] = slice(3 * g, 3 * g + 3)
        block, block2 = y[tuple(index)], y2[tuple(index)]
        if changed:
            assert not np.array_equal(block, block2)
        else:
            assert_bitwise_equal(block, block2)


ACTIVATIONS = [
    None,
    "relu",
    "relu6",
    (-1.0, 1.0),
    (0.25, 0.5),
    (-2.5, -0.5),
    (0.0, 0.0),
    (-0.1, 7.3),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_activation(isa, layout, activation):
    rng = np.random.default_rng(9)
    x, weight, bias = random_inputs(rng, layout, 1, 17, 6, 7, 29, scale=3.0)
    y = fastpw.conv1x1(x, weight, bias, layout=layout, activation=activation)
    assert_matches_reference(y, x, weight, bias, layout, activation=activation)
    if activation is not None:
        lo, hi = {"relu": (0, np.inf), "relu6": (0, 6)}.get(activation, activation)
        assert (y >= np.float32(lo)).all() and (y <= np.float32(hi)).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_activation_is_applied_after_bias(isa, layout):
    x = np.zeros(x_shape(layout, 1, 3, 2, 2), dtype=np.float32)
    weight = np.ones((4, 3), dtype=np.float32)
    bias = np.array([-1.0, 3.0, 7.0, 5.5], dtype=np.float32)
    y = fastpw.conv1x1(x, weight, bias, layout=layout, activation="relu6")
    per_channel = y if layout == "NCHW" else y.transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(per_channel[0, :, 0, 0], [0.0, 3.0, 6.0, 5.5])
    assert (per_channel == per_channel[:, :, :1, :1]).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_without_bias(isa, layout):
    rng = np.random.default_rng(10)
    x, weight, _ = random_inputs(rng, layout, 2, 13, 5, 5, 15, bias=False)
    y = fastpw.conv1x1(x, weight, layout=layout)
    assert_matches_reference(y, x, weight, None, layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "nchw", "nhwc", "Nhwc"])
def test_layout_is_case_insensitive(isa, layout):
    rng = np.random.default_rng(11)
    x, weight, bias = random_inputs(rng, layout, 1, 9, 4, 6, 10)
    assert_bitwise_equal(
        fastpw.conv1x1(x, weight, bias, layout=layout),
        fastpw.conv1x1(x, weight, bias, layout=layout.upper()),
    )


def test_layouts_agree(isa):
    """NCHW and NHWC are two views of one convolution."""
    rng = np.random.default_rng(12)
    x, weight, bias = random_inputs(rng, "NCHW", 2, 21, 9, 7, 33)
    y_nchw = fastpw.conv1x1(x, weight, bias, layout="NCHW", stride=(1, 2))
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y_nhwc = fastpw.conv1x1(x_nhwc, weight, bias, layout="NHWC", stride=(1, 2))
    np.testing.assert_allclose(y_nhwc.transpose(0, 3, 1, 2), y_nchw, rtol=1e-5, atol=1e-5)
    assert_matches_reference(y_nhwc, x_nhwc, weight, bias, "NHWC", (1, 2))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_weight_4d_equals_2d(isa, layout):
    rng = np.random.default_rng(13)
    x, weight, bias = random_inputs(rng, layout, 1, 10, 5, 7, 14, groups=2)
    assert_bitwise_equal(
        fastpw.conv1x1(x, weight.reshape(14, 5, 1, 1), bias, layout=layout, groups=2),
        fastpw.conv1x1(x, weight, bias, layout=layout, groups=2),
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_weight_and_bias(isa, layout):
    rng = np.random.default_rng(14)
    x, weight, bias = random_inputs(rng, layout, 1, 11, 5, 7, 13)
    weight_t = np.asfortranarray(weight)
    bias_strided = np.repeat(bias, 2)[::2]
    assert not weight_t.flags.c_contiguous and not bias_strided.flags.c_contiguous
    assert_bitwise_equal(
        fastpw.conv1x1(x, weight_t, bias_strided, layout=layout),
        fastpw.conv1x1(x, weight, bias, layout=layout),
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", X_MEMORY)
def test_non_contiguous_x(isa, layout, kind):
    rng = np.random.default_rng(15)
    x, weight, bias = random_inputs(rng, layout, 2, 19, 6, 9, 23)
    xv = with_memory(x, kind, layout)
    x_before = xv.copy()
    y = fastpw.conv1x1(xv, weight, bias, layout=layout, stride=(1, 2), activation="relu")
    assert_bitwise_equal(
        y, fastpw.conv1x1(x, weight, bias, layout=layout, stride=(1, 2), activation="relu")
    )
    assert_matches_reference(y, x, weight, bias, layout, (1, 2), activation="relu")
    np.testing.assert_array_equal(xv, x_before)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("out_kind", OUT_KINDS[1:])
@pytest.mark.parametrize("stride", [1, 2])
def test_out(isa, layout, out_kind, stride):
    """``out`` is written and returned, whatever its strides; a channel slice of a larger
    buffer (as in a concatenation) leaves every entry outside the slice untouched."""
    rng = np.random.default_rng(16)
    n, c, h, w, k = 2, 24, 7, 10, 64
    x, weight, bias = random_inputs(rng, layout, n, c, h, w, k)
    out, buf, outside = make_out(out_kind, y_shape(layout, n, k, h, w, stride), layout, 64, 61)
    y = fastpw.conv1x1(x, weight, bias, layout=layout, stride=stride, out=out)
    assert y is out
    assert_matches_reference(y, x, weight, bias, layout, stride)
    assert (buf[outside] == SENTINEL).all()
    assert_bitwise_equal(y, fastpw.conv1x1(x, weight, bias, layout=layout, stride=stride))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("axis", ["batch", "pixels"])
def test_broadcast_x(isa, layout, axis):
    """Zero strides (np.broadcast_to, read-only) are strides too."""
    rng = np.random.default_rng(26)
    x, weight, bias = random_inputs(rng, layout, 1, 12, 4, 1, 20)
    shape = list(x.shape)
    if axis == "batch":
        shape[0] = 3
    else:
        shape[3 if layout == "NCHW" else 2] = 9
    xb = np.broadcast_to(x, shape)
    assert 0 in xb.strides and not xb.flags.writeable
    y = fastpw.conv1x1(xb, weight, bias, layout=layout)
    assert_bitwise_equal(y, fastpw.conv1x1(np.ascontiguousarray(xb), weight, bias, layout=layout))
    assert_matches_reference(y, xb, weight, bias, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_out_slices_build_a_concatenation(isa, layout):
    """Two calls into neighbouring channel slices equal np.concatenate of two results."""
    rng = np.random.default_rng(17)
    x, w1, b1 = random_inputs(rng, layout, 1, 16, 5, 6, 7)
    _, w2, b2 = random_inputs(rng, layout, 1, 16, 5, 6, 9)
    axis = channel_axis(layout)
    buf = np.full(y_shape(layout, 1, 16, 5, 6), SENTINEL, dtype=np.float32)
    first = buf[:, :7] if layout == "NCHW" else buf[..., :7]
    second = buf[:, 7:] if layout == "NCHW" else buf[..., 7:]
    fastpw.conv1x1(x, w1, b1, layout=layout, out=first)
    fastpw.conv1x1(x, w2, b2, layout=layout, out=second, activation="relu")
    expected = np.concatenate(
        [
            fastpw.conv1x1(x, w1, b1, layout=layout),
            fastpw.conv1x1(x, w2, b2, layout=layout, activation="relu"),
        ],
        axis=axis,
    )
    assert_bitwise_equal(buf, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("zero", ["N", "H", "W", "HW"])
@pytest.mark.parametrize("with_out", [False, True])
def test_zero_size(isa, layout, zero, with_out):
    n, h, w = (0 if "N" in zero else 2), (0 if "H" in zero else 5), (0 if "W" in zero else 6)
    rng = np.random.default_rng(18)
    x, weight, bias = random_inputs(rng, layout, n, 8, h, w, 12)
    shape = y_shape(layout, n, 12, h, w, stride=2)
    out = np.empty(shape, dtype=np.float32) if with_out else None
    y = fastpw.conv1x1(x, weight, bias, layout=layout, stride=2, out=out, activation="relu")
    assert y.shape == shape and y.dtype == np.float32 and y.size == 0
    if with_out:
        assert y is out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", [None, "relu", "relu6", (-1.0, 1.0)], ids=str)
def test_nan_and_inf_propagate(isa, layout, activation):
    """NaN in x gives NaN in every output of its group at that pixel (through the
    activation too); Inf gives what numpy gives (+-Inf, NaN, or a clamped bound)."""
    rng = np.random.default_rng(19)
    n, c, h, w, k, groups = 2, 6, 3, 21, 20, 2
    x, weight, bias = random_inputs(rng, layout, n, c, h, w, k, groups)
    nchw = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)  # a view: writes go to x
    nchw[0, 1, 1, 2] = np.nan  # group 0
    nchw[1, 4, 2, 20] = np.inf  # group 1
    nchw[0, 5, 0, 0] = -np.inf  # group 1
    nchw[1, 0, 0, 7] = np.inf  # group 0, same pixel as a NaN in group 1:
    nchw[1, 3, 0, 7] = np.nan
    y = fastpw.conv1x1(x, weight, bias, layout=layout, groups=groups, activation=activation)
    assert_matches_reference(y, x, weight, bias, layout, groups=groups, activation=activation)
    y_nchw = y if layout == "NCHW" else y.transpose(0, 3, 1, 2)
    assert np.isnan(y_nchw[0, :10, 1, 2]).all()
    assert np.isnan(y_nchw[1, 10:, 0, 7]).all()
    assert np.isfinite(y_nchw[0, 10:, 1, 2]).all()
    # Five poisoned (image, pixel, group) triples, ten output channels each.
    assert np.count_nonzero(~np.isfinite(y_nchw)) <= 5 * 10


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", [None, "relu", (-1.0, 1.0)], ids=str)
def test_nan_in_weight_and_bias(isa, layout, activation):
    rng = np.random.default_rng(20)
    x, weight, bias = random_inputs(rng, layout, 1, 9, 4, 17, 15)
    weight[3, 4] = np.nan
    bias[11] = np.nan
    weight[7, 0] = np.inf
    y = fastpw.conv1x1(x, weight, bias, layout=layout, activation=activation)
    assert_matches_reference(y, x, weight, bias, layout, activation=activation)
    y_nchw = y if layout == "NCHW" else y.transpose(0, 3, 1, 2)
    assert np.isnan(y_nchw[:, 3]).all() and np.isnan(y_nchw[:, 11]).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_repeated_calls_and_input_untouched(isa, layout):
    rng = np.random.default_rng(21)
    x, weight, bias = random_inputs(rng, layout, 1, 20, 7, 7, 30)
    copies = [a.copy() for a in (x, weight, bias)]
    first = fastpw.conv1x1(x, weight, bias, layout=layout)
    for _ in range(3):
        assert_bitwise_equal(fastpw.conv1x1(x, weight, bias, layout=layout), first)
    for a, before in zip((x, weight, bias), copies, strict=False):
        np.testing.assert_array_equal(a, before)


# ------------------------------------------------------------------------ Conv1x1 layer

LAYER_CONFIGS = [
    dict(layout="NCHW"),
    dict(layout="NHWC", activation="relu"),
    dict(layout="nchw", stride=2, activation="relu6"),
    dict(layout="NHWC", stride=(2, 1), groups=3, activation=(-0.5, 0.5)),
    dict(layout="NCHW", groups=4, bias=False),
]


@pytest.mark.parametrize("config", LAYER_CONFIGS, ids=str)
def test_layer_equals_function(isa, config):
    config = dict(config)
    has_bias = config.pop("bias", True)
    layout = config["layout"]
    groups = config.get("groups", 1)
    rng = np.random.default_rng(22)
    x, weight, bias = random_inputs(rng, layout, 2, 24, 9, 13, 36, groups, has_bias)
    layer = fastpw.Conv1x1(weight, bias, **config)
    assert layer.isa == fastpw.isa("float32")  # the kernel the selected family runs
    expected = fastpw.conv1x1(x, weight, bias, **config)
    assert_bitwise_equal(layer(x), expected)
    assert_bitwise_equal(layer(x, num_threads=1), expected)
    out = np.full(expected.shape, SENTINEL, dtype=np.float32)
    assert layer(x, out=out) is out
    assert_bitwise_equal(out, expected)
    # A layer serves any batch and spatial size.
    x_other, _, _ = random_inputs(rng, layout, 1, 24, 3, 70, 36, groups)
    assert_bitwise_equal(layer(x_other), fastpw.conv1x1(x_other, weight, bias, **config))
    assert_matches_reference(
        layer(x_other),
        x_other,
        weight,
        bias,
        layout,
        config.get("stride", 1),
        groups,
        config.get("activation"),
    )


@given(p=conv_problems(max_macs=1_000_000))
def test_layer_equals_function_property(isa, p):
    rng = np.random.default_rng(p.seed)
    x, weight, bias = random_inputs(
        rng, p.layout, p.n, p.c, p.h, p.w, p.k, p.groups, p.bias, p.weight_4d
    )
    config = dict(layout=p.layout, stride=p.stride, groups=p.groups, activation=p.activation)
    layer = fastpw.Conv1x1(weight, bias, **config)
    xv = with_memory(x, p.x_memory, p.layout)
    out, buf, outside = make_out(
        p.out_kind, y_shape(p.layout, p.n, p.k, p.h, p.w, p.stride), p.layout, *p.out_pad
    )
    y = layer(xv, out=out, num_threads=p.num_threads)
    if out is not None:
        assert y is out
        assert (buf[outside] == SENTINEL).all(), "out: entries outside the slice were written"
    assert_bitwise_equal(y, fastpw.conv1x1(x, weight, bias, **config))


def test_layer_attributes_and_repr(isa):
    rng = np.random.default_rng(23)
    weight = rng.standard_normal((12, 5, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(12).astype(np.float32)
    layer = fastpw.Conv1x1(
        weight, bias, layout="nhwc", stride=(2, 1), groups=3, activation=(-1.0, 2.0)
    )
    assert layer.weight.dtype == np.float32 and layer.weight.shape == (12, 5)
    np.testing.assert_array_equal(layer.weight, weight[:, :, 0, 0])
    np.testing.assert_array_equal(layer.bias, bias)
    assert layer.in_channels == 15
    assert layer.out_channels == 12
    assert layer.layout.upper() == "NHWC"
    assert tuple(np.broadcast_to(layer.stride, 2)) == (2, 1)
    assert layer.groups == 3
    assert tuple(layer.activation) == (-1.0, 2.0)
    assert layer.isa == fastpw.isa("float32")
    text = repr(layer)
    assert "Conv1x1" in text and "15" in text and "12" in text, text

    plain = fastpw.Conv1x1(weight[:, :, 0, 0])
    assert plain.bias is None
    assert plain.in_channels == 5 and plain.out_channels == 12
    assert plain.layout.upper() == "NCHW"
    assert tuple(np.broadcast_to(plain.stride, 2)) == (1, 1)
    assert plain.groups == 1 and plain.activation is None
    assert "Conv1x1" in repr(plain)


def test_layer_keeps_the_isa_it_was_packed_for(isa):
    rng = np.random.default_rng(24)
    x, weight, bias = random_inputs(rng, "NCHW", 1, 29, 7, 9, 31)
    layer = fastpw.Conv1x1(weight, bias, activation="relu")
    packed_for = fastpw.isa("float32")  # the kernel the selected family runs
    expected = fastpw.conv1x1(x, weight, bias, activation="relu")
    for other in fastpw.available_isas():
        fastpw._set_isa(other)
        assert layer.isa == packed_for
        assert_bitwise_equal(layer(x), expected)
        assert fastpw.Conv1x1(weight, bias).isa == fastpw.isa("float32")
    fastpw._set_isa(isa)


def test_layer_packs_weights_once(isa):
    """Changing the caller's arrays after construction does not change the layer."""
    rng = np.random.default_rng(25)
    x, weight, bias = random_inputs(rng, "NHWC", 1, 10, 6, 6, 18)
    layer = fastpw.Conv1x1(weight, bias, layout="NHWC")
    expected = fastpw.conv1x1(x, weight, bias, layout="NHWC")
    weight[:] = 0
    bias[:] = 0
    assert_bitwise_equal(layer(x), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [1, 2])
def test_layer_out_channel_slice(isa, layout, stride):
    rng = np.random.default_rng(27)
    x, weight, bias = random_inputs(rng, layout, 2, 16, 9, 8, 24)
    layer = fastpw.Conv1x1(weight, bias, layout=layout, stride=stride, activation="relu")
    out, buf, outside = make_out(
        "channel_slice", y_shape(layout, 2, 24, 9, 8, stride), layout, 8, 5
    )
    assert layer(x, out=out) is out
    assert (buf[outside] == SENTINEL).all()
    assert_matches_reference(out, x, weight, bias, layout, stride, activation="relu")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("zero", ["N", "H", "W"])
def test_layer_zero_size(isa, layout, zero):
    n, h, w = (0 if zero == "N" else 2), (0 if zero == "H" else 5), (0 if zero == "W" else 6)
    rng = np.random.default_rng(28)
    x, weight, bias = random_inputs(rng, layout, n, 8, h, w, 12)
    y = fastpw.Conv1x1(weight, bias, layout=layout)(x)
    assert y.shape == y_shape(layout, n, 12, h, w) and y.dtype == np.float32
