"""Accumulators that tell fastpw's requantization order apart from near-miss formulas.

The int8 contract (``fastpw.testing``, ``qconv1x1_reference``) rounds the multiplier
M = float32(float32(xs * ws) / ys) and then v = float32(acc) * M, each step in float32.
Random data rarely tells that order apart from a formula that is off by one float32
rounding of the multiplier: v moves by about 1e-7 * |v|, which only changes rint(v) when v
sits that close to a half-integer. ``requantization_witnesses`` searches for such
accumulators on purpose; tests/test_int8.py gives them to fastpw and
tests/test_onnxruntime.py to ONNX Runtime.
"""

from __future__ import annotations

import numpy as np


def near_miss_requantizations(acc, x_scale, w_scale, y_scale):
    """v = acc * M under the contract ("contract") and under formulas an implementation
    might use instead (float64 arithmetic, another order, a reciprocal)."""
    xs, ws, ys = np.float32(x_scale), np.float32(w_scale), np.float32(y_scale)
    acc = np.asarray(acc, dtype=np.int64)
    acc32 = acc.astype(np.float32)
    f64 = np.float64
    exact = f64(xs) * f64(ws) / f64(ys)
    return {
        "contract": acc32 * ((xs * ws) / ys),
        "xs * (ws / ys)": acc32 * (xs * (ws / ys)),
        "(xs / ys) * ws": acc32 * ((xs / ys) * ws),
        "float32(float64 multiplier)": acc32 * np.float32(exact),
        "float64 throughout": acc.astype(f64) * exact,
        "float32(acc) times float64 multiplier": acc32.astype(f64) * exact,
        "dequantize, then divide by ys": (acc32 * (xs * ws)) / ys,
        "times float32(1 / ys)": acc32 * ((xs * ws) * (np.float32(1) / ys)),
    }


def requantization_witnesses(x_scale=0.03, y_scale=3.7, per_formula=4, seed=0, tries=400):
    """(w_scales, accs): float32 weight scales and accumulators for which rint(v) under
    the contract differs from rint(v) under each near-miss formula (up to per_formula
    witnesses each), with |v| < 121 so an 8-bit output with a mid-range zero point never
    saturates. With the defaults M = x_scale * w_scale / y_scale lies in [8e-7, 8e-4]
    and |acc| < 1.6e8, inside int32."""
    rng = np.random.default_rng(seed)
    centers = np.arange(-120, 120) + 0.5
    found = {}
    w_scales, accs = [], []
    for _ in range(tries):
        ws = np.float32(10 ** rng.uniform(-4, -1))
        multiplier = np.float32(np.float32(x_scale) * ws) / np.float32(y_scale)
        near = np.rint(centers / float(multiplier)).astype(np.int64)
        acc = (near[:, None] + np.arange(-2, 3)).ravel()
        v = near_miss_requantizations(acc, x_scale, ws, y_scale)
        q = {name: np.rint(values.astype(np.float64)) for name, values in v.items()}
        for name, q_alt in q.items():
            if name == "contract" or found.get(name, 0) >= per_formula:
                continue
            for i in np.flatnonzero(q_alt != q["contract"])[: per_formula - found.get(name, 0)]:
                found[name] = found.get(name, 0) + 1
                w_scales.append(ws)
                accs.append(int(acc[i]))
        if len(found) == len(q) - 1 and min(found.values()) >= per_formula:
            break
    return np.array(w_scales, dtype=np.float32), np.array(accs, dtype=np.int64)
