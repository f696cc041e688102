"""The one reference for fastpw's float32 1x1 convolution: plain numpy, float64.

It is written to be obviously right, not fast: one ``np.einsum`` per group on the
strided input, then bias, then the activation. It never imports fastpw, so a bug in the
package cannot leak into the expected values.

The tolerance is a rigorous bound, not a guess. For a dot product of n float32 terms
summed in any order (with or without fused multiply-add), the rounding error is at most
gamma_n * sum_i |w_i x_i| with gamma_n = n u / (1 - n u) and u = 2**-24. Adding the bias,
storing the float32 result and clamping (min/max are 1-Lipschitz) stay inside
``4 * eps32 * (n + 2) * (|W| @ |X| + |b|)``, which is what ``conv1x1_tolerance`` returns,
elementwise and computed in float64. A wrong tile, a missed edge or a dropped channel
is off by about one term, far above this bound for the well-scaled data the tests use.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
TINY32 = float(np.finfo(np.float32).tiny)


def _stride_pair(stride):
    if isinstance(stride, (int, np.integer)):
        return int(stride), int(stride)
    sh, sw = stride
    return int(sh), int(sw)


def _weight_2d(weight):
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 4:
        assert w.shape[2:] == (1, 1), w.shape
        w = w[:, :, 0, 0]
    assert w.ndim == 2, w.shape
    return w


def _to_nchw(x, layout):
    layout = layout.upper()
    if layout == "NCHW":
        return x
    assert layout == "NHWC", layout
    return x.transpose(0, 3, 1, 2)


def _from_nchw(y, layout):
    return y if layout.upper() == "NCHW" else y.transpose(0, 2, 3, 1)


def apply_activation(y, activation):
    """relu = max(y, 0), relu6 = min(max(y, 0), 6), (lo, hi) = min(max(y, lo), hi); NaN stays."""
    if activation is None:
        return y
    if isinstance(activation, str):
        hi = {"relu": np.inf, "relu6": 6.0}[activation.lower()]
        return np.minimum(np.maximum(y, 0.0), hi)
    lo, hi = activation
    return np.minimum(np.maximum(y, float(lo)), float(hi))


def conv1x1_reference(x, weight, bias=None, layout="NCHW", stride=1, groups=1, activation=None):
    """float64 ``y[n,k,h,w] = act(sum_c W[k,c] * x[n, g*Cg + c, h*sh, w*sw] + b[k])``.

    ``x`` is (N, C, H, W) for "NCHW" or (N, H, W, C) for "NHWC"; the result has the same
    layout, with spatial size ceil(H/sh) x ceil(W/sw) (PyTorch conv2d, 1x1 kernel, no
    padding). ``weight`` is (K, C/groups) or (K, C/groups, 1, 1).
    """
    sh, sw = _stride_pair(stride)
    xs = _to_nchw(np.asarray(x, dtype=np.float64), layout)[:, :, ::sh, ::sw]
    w = _weight_2d(weight)
    n, c, ho, wo = xs.shape
    k, cg = w.shape
    assert c == cg * groups and k % groups == 0, (xs.shape, w.shape, groups)
    kg = k // groups
    y = np.empty((n, k, ho, wo), dtype=np.float64)
    for g in range(groups):
        y[:, g * kg : (g + 1) * kg] = np.einsum(
            "kc,nchw->nkhw", w[g * kg : (g + 1) * kg], xs[:, g * cg : (g + 1) * cg]
        )
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return _from_nchw(apply_activation(y, activation), layout)


def conv1x1_tolerance(x, weight, bias=None, layout="NCHW", stride=1, groups=1, activation=None):
    """Elementwise float64 bound on |float32 result - reference| (see the module docstring)."""
    w = _weight_2d(weight)
    cg = w.shape[1]
    magnitude = conv1x1_reference(
        np.abs(np.asarray(x, dtype=np.float64)),
        np.abs(w),
        None if bias is None else np.abs(np.asarray(bias, dtype=np.float64)),
        layout=layout,
        stride=stride,
        groups=groups,
    )
    tol = 4.0 * EPS32 * (cg + 2) * magnitude
    # Slack for flushed float32 subnormals, and for clamp bounds that float32 rounds.
    tol += (cg + 2) * TINY32
    if activation is not None and not isinstance(activation, str):
        tol += EPS32 * max([abs(float(v)) for v in activation if np.isfinite(v)] + [0.0])
    return tol


def assert_matches_reference(
    got, x, weight, bias=None, layout="NCHW", stride=1, groups=1, activation=None
):
    """Check a float32 result against the reference: same shape, the same NaN and +-Inf
    entries, and every finite entry within ``conv1x1_tolerance``."""
    kwargs = dict(layout=layout, stride=stride, groups=groups, activation=activation)
    expected = conv1x1_reference(x, weight, bias, **kwargs)
    got = np.asarray(got)
    assert got.dtype == np.float32, f"result dtype is {got.dtype}, expected float32"
    assert got.shape == expected.shape, f"result shape {got.shape}, expected {expected.shape}"
    if got.size == 0:
        return
    g = got.astype(np.float64)
    tol = conv1x1_tolerance(x, weight, bias, **kwargs)
    finite = np.isfinite(expected)
    with np.errstate(invalid="ignore"):
        ok = np.where(
            finite,
            np.isfinite(g) & (np.abs(g - expected) <= tol),
            (np.isnan(expected) & np.isnan(g)) | (expected == g),
        )
    if not ok.all():
        bad = np.argwhere(~ok)
        i = tuple(bad[0])
        raise AssertionError(
            f"{len(bad)} of {got.size} entries differ from the reference "
            f"(layout={layout}, stride={stride}, groups={groups}, activation={activation}); "
            f"first at {i}: got {got[i]!r}, expected {expected[i]!r} +- {tol[i]:.3g}"
        )
