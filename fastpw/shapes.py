"""The layers fastpw is benchmarked on, and their inputs.

This module is the one source of truth for which layers fastpw is measured on: the
pytest-benchmark suite (``bench/``) and the command-line report (``python -m fastpw``)
both import ``STANDARD_SHAPES`` from here, so their rows always describe the same work.

Besides the shape list it holds the input makers:

- ``make_inputs``: deterministic float32 inputs, weights and bias for a shape and layout,
  and ``empty_output``, the output buffer a timed call writes into;
- ``make_int8_inputs``: deterministic quantized operands (uint8 x, int8 weight, int32
  bias, per-channel weight scales) for the int8 path, and ``quantized_layer``, the
  prepacked ``fastpw.QConv1x1`` for them.

How a call is timed is ``fastpw._timing``; the peers fastpw is timed against (numpy,
ONNX Runtime) are ``fastpw._peers``; the reference results are checked against is
``fastpw.testing``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ._api import QConv1x1

LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class LayerShape:
    """One 1x1 convolution layer: C input and K output channels on an H x W input, a
    square ``stride`` (output ceil(H/stride) x ceil(W/stride), no padding, as
    ``fastpw.Conv1x1`` computes it), ``groups`` (C and K both divide by it) and
    ``batch`` images (1 for every standard layer; ``with_batch`` gives the others)."""

    network: str
    c_in: int
    c_out: int
    height: int
    width: int
    stride: int = 1
    groups: int = 1
    batch: int = 1

    def __post_init__(self) -> None:
        sizes = (
            self.c_in,
            self.c_out,
            self.height,
            self.width,
            self.stride,
            self.groups,
            self.batch,
        )
        if any(not isinstance(size, int) or size < 1 for size in sizes):
            raise ValueError(f"a layer's sizes, stride, groups and batch are integers >= 1: {self}")
        if self.c_in % self.groups or self.c_out % self.groups:
            raise ValueError(
                f"C={self.c_in} and K={self.c_out} must both divide by groups={self.groups}"
            )

    @property
    def out_height(self) -> int:
        return -(-self.height // self.stride)

    @property
    def out_width(self) -> int:
        return -(-self.width // self.stride)

    @property
    def flops(self) -> int:
        """Multiply-adds count twice: 2 * (C/groups) * K * output pixels * batch."""
        c_per_group = self.c_in // self.groups
        return 2 * c_per_group * self.c_out * self.out_height * self.out_width * self.batch

    def _suffix(self, separator: str) -> str:
        """ " s2" / " g4" / " b8" for a stride, groups or batch other than 1: standard
        names stay short."""
        parts = (
            [f"s{self.stride}"] * (self.stride != 1)
            + [f"g{self.groups}"] * (self.groups != 1)
            + [f"b{self.batch}"] * (self.batch != 1)
        )
        return "".join(separator + part for part in parts)

    @property
    def name(self) -> str:
        """Human-readable label, e.g. ``"resnet50 1024->256 14x14"``, with ``" s2"`` and
        ``" g4"`` / ``" b8"`` appended for a stride, groups or batch other than 1."""
        name = f"{self.network} {self.c_in}->{self.c_out} {self.height}x{self.width}"
        return name + self._suffix(" ")

    @property
    def slug(self) -> str:
        """The name without spaces, for pytest ids: ``"resnet50-1024to256-14x14"``."""
        slug = f"{self.network}-{self.c_in}to{self.c_out}-{self.height}x{self.width}"
        return slug + self._suffix("-")

    @property
    def options(self) -> dict[str, int]:
        """The keyword arguments of ``fastpw.Conv1x1`` (and the references) for the
        layer's stride and groups."""
        return {"stride": self.stride, "groups": self.groups}

    def with_batch(self, batch: int) -> LayerShape:
        """The same layer on ``batch`` images (``python -m fastpw --batch``, bench's
        ``--fastpw-batch``)."""
        return dataclasses.replace(self, batch=batch)


def parse_layer_shape(text: str, network: str = "custom") -> LayerShape:
    """A layer from ``"C,K,H,W[,stride][,groups]"`` (``python -m fastpw --shape``);
    ValueError saying what is wrong otherwise."""
    parts = [part.strip() for part in text.split(",")]
    if not 4 <= len(parts) <= 6:
        raise ValueError(f"{text!r}: expected C,K,H,W[,stride][,groups] (4 to 6 integers)")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"{text!r}: C,K,H,W[,stride][,groups] are integers") from None
    return LayerShape(network, *numbers)


def _layers(network: str, *specs: tuple[int, int, int]) -> list[LayerShape]:
    return [LayerShape(network, c, k, hw, hw) for c, k, hw in specs]


#: The benchmark layers, in report order: (C_in, C_out, spatial size), batch 1. ConvNeXt-T's
#: are the channel MLP of its first stage (a 1x1 convolution in NCHW, a Linear layer in
#: NHWC, as ConvNeXt writes it).
STANDARD_SHAPES: tuple[LayerShape, ...] = tuple(
    _layers(
        "mobilenetv2",
        (16, 96, 112),
        (144, 24, 56),
        (32, 192, 28),
        (384, 64, 14),
        (160, 960, 7),
        (320, 1280, 7),
    )
    + _layers("resnet50", (256, 64, 56), (64, 256, 56), (1024, 256, 14), (512, 2048, 7))
    + _layers("squeezenet", (96, 16, 55), (16, 64, 55), (512, 64, 13))
    + _layers("convnext_t", (96, 384, 56), (384, 96, 56))
)


def make_inputs(
    shape: LayerShape, layout: str = "NCHW", *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic ``(x, weight, bias)`` for ``shape``: float32, standard normal.

    ``x`` is (N, C, H, W) for "NCHW" and (N, H, W, C) for "NHWC", N = ``shape.batch``;
    ``weight`` is
    (K, C/groups) and ``bias`` is (K,). The same seed gives the same numbers on every machine.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    rng = np.random.default_rng(seed)
    x_nchw = rng.standard_normal((shape.batch, shape.c_in, shape.height, shape.width), np.float32)
    weight = rng.standard_normal((shape.c_out, shape.c_in // shape.groups), np.float32)
    bias = rng.standard_normal(shape.c_out, np.float32)
    x = x_nchw if layout == "NCHW" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    return x, weight, bias


def empty_output(
    x: np.ndarray,
    c_out: int,
    layout: str = "NCHW",
    dtype: npt.DTypeLike = np.float32,
    stride: int = 1,
) -> np.ndarray:
    """Uninitialised output (float32 unless ``dtype``) of a layer with ``c_out`` channels
    and a square ``stride`` on ``x``: ceil(H/stride) x ceil(W/stride) pixels."""
    if layout == "NCHW":
        n, _, h, w = x.shape
    else:
        n, h, w, _ = x.shape
    h, w = -(-h // stride), -(-w // stride)
    return np.empty((n, c_out, h, w) if layout == "NCHW" else (n, h, w, c_out), dtype)


# ------------------------------------------------------------------------------- int8

#: (scale, zero point) of every int8 benchmark input x. The scale is a float32 value, so
#: fastpw (which rounds scales to float32) and ONNX (which stores float32) see one number.
#: The zero point is off centre (the uint8 data has mean 127.5): a kernel that dropped
#: the zero-point correction, or applied it with the wrong sign, fails the exact check.
INT8_X_QUANT = (float(np.float32(0.025)), 121)

#: Output zero point. Weights have zero mean, so outputs are centred: use the middle.
INT8_Y_ZERO_POINT = 128

#: The output scale maps this many standard deviations of the real output onto each half
#: of the uint8 range: the outputs spread over all of 0..255 and only a few percent
#: saturate (more in the channels whose weight scale is above the average).
INT8_Y_SIGMAS = 3.0


@dataclass(frozen=True, eq=False)
class Int8Inputs:
    """Quantized operands of one layer, in ONNX QLinearConv's conventions.

    real x = x_scale * (x - x_zero_point); real weight[k, c] = w_scale[k] * weight[k, c];
    ``bias`` is int32 in units of x_scale * w_scale[k]; output q = y / y_scale +
    y_zero_point. ``x_quant``, ``w_quant`` and ``y_quant`` are (scale, zero_point) pairs
    as ``fastpw.QConv1x1`` takes them; ``w_quant``'s scale is a float32 array (K,), its
    zero point 0 (symmetric weights).
    """

    x: np.ndarray  # uint8, (N, C, H, W) for "NCHW", (N, H, W, C) for "NHWC"
    weight: np.ndarray  # int8 (K, C), values in -127..127
    bias: np.ndarray  # int32 (K,)
    x_quant: tuple[float, int]
    w_quant: tuple[np.ndarray, int]
    y_quant: tuple[float, int]
    layout: str
    stride: int = 1
    groups: int = 1

    @property
    def layer_options(self) -> dict[str, Any]:
        """The keyword arguments of ``fastpw.QConv1x1`` for these operands (quantization,
        uint8 output, layout, stride, groups); ``fastpw.testing.qconv1x1_reference``
        takes the same."""
        return dict(
            x_quant=self.x_quant,
            w_quant=self.w_quant,
            y_quant=self.y_quant,
            out_dtype=np.uint8,
            layout=self.layout,
            stride=self.stride,
            groups=self.groups,
        )

    @property
    def x_nchw(self) -> np.ndarray:
        """``x`` as a contiguous NCHW array (a copy for "NHWC" inputs)."""
        if self.layout == "NCHW":
            return self.x
        return np.ascontiguousarray(self.x.transpose(0, 3, 1, 2))


def make_int8_inputs(shape: LayerShape, layout: str = "NCHW", *, seed: int = 0) -> Int8Inputs:
    """Deterministic quantized operands for ``shape``: uint8 x, int8 weight, int32 bias.

    x is uniform over 0..255 with zero point ``INT8_X_QUANT[1]``; the weight is uniform
    over -127..127 (the symmetric range ``QConv1x1.from_float`` produces) with
    per-channel scales spread over a factor 4, so a kernel that applies one channel's
    scale to another fails the exact check; the bias is about half the size of the
    dot products. The output scale is chosen from the operands' second moments (no
    GEMM is needed) so the uint8 outputs use the whole range without mostly saturating:
    see ``INT8_Y_SIGMAS``. Both layouts hold the same numbers; the same seed gives the
    same operands on every machine.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    rng = np.random.default_rng(seed)
    c, k = shape.c_in // shape.groups, shape.c_out  # c: the channels each output sums
    x_nchw = rng.integers(
        0, 256, (shape.batch, shape.c_in, shape.height, shape.width), dtype=np.uint8
    )
    weight = rng.integers(-127, 128, (k, c), dtype=np.int8)
    x_scale, x_zero_point = INT8_X_QUANT
    w_scale = (rng.uniform(0.5, 2.0, k) / (127 * math.sqrt(c))).astype(np.float32)
    # x and the weight are independent, so the integer dot products have second moment
    # C * E[(x - zp)^2] * E[w^2].
    x_moment = float(np.mean(np.square(x_nchw.astype(np.float64) - x_zero_point)))
    w_moment = float(np.mean(np.square(weight.astype(np.float64))))
    acc_rms = math.sqrt(c * x_moment * w_moment)
    bias = np.rint(rng.standard_normal(k) * 0.5 * acc_rms).astype(np.int32)
    w_rms = math.sqrt(float(np.mean(np.square(w_scale.astype(np.float64)))))
    out_rms = x_scale * w_rms * math.sqrt(acc_rms**2 + float(np.mean(np.square(bias, dtype=float))))
    y_scale = float(np.float32(INT8_Y_SIGMAS * out_rms / 127.5))
    x = x_nchw if layout == "NCHW" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    return Int8Inputs(
        x=x,
        weight=weight,
        bias=bias,
        x_quant=(x_scale, x_zero_point),
        w_quant=(w_scale, 0),
        y_quant=(y_scale, INT8_Y_ZERO_POINT),
        layout=layout,
        stride=shape.stride,
        groups=shape.groups,
    )


def quantized_layer(inputs: Int8Inputs) -> QConv1x1:
    """The prepacked fastpw layer for ``inputs`` (uint8 output), as bench/ and the CLI
    time it."""
    import fastpw  # here, so this module stays importable before the extension is built

    return fastpw.QConv1x1(inputs.weight, inputs.bias, **inputs.layer_options)
