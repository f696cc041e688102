"""Layout helpers the tests share: tensor shapes in NCHW and NHWC, the channel axis,
strides as pairs and per-axis parameters broadcast along their axis.

The stride and axis conventions are the reference's own (``fastpw.testing``), imported
from it so that tests and reference cannot disagree on them.
"""

from __future__ import annotations

from fastpw.testing import _along_axis as along_axis
from fastpw.testing import _stride_pair as stride_pair

__all__ = ["along_axis", "channel_axis", "stride_pair", "x_shape", "y_shape"]


def channel_axis(layout):
    return 1 if layout.upper() == "NCHW" else 3


def x_shape(layout, n, c, h, w):
    """The shape of an (n, c, h, w) tensor in ``layout``."""
    return (n, c, h, w) if layout.upper() == "NCHW" else (n, h, w, c)


def y_shape(layout, n, k, h, w, stride=1):
    """The output shape of a 1x1 convolution: ceil(h / sh) x ceil(w / sw) pixels."""
    sh, sw = stride_pair(stride)
    return x_shape(layout, n, k, -(-h // sh), -(-w // sw))
