"""A user's script: every public function, class and method of fastpw, called as a user
would call them, with the results in annotated variables.

tests/test_typing.py runs ``mypy --strict`` on this file against the installed fastpw (its
py.typed marker and the _kernels.pyi stub), then runs it. ``assert_type`` pins what the
API promises: float32 out of the float path, ``NDArray[Any]`` where the dtype depends on
the arguments. The function under TYPE_CHECKING never runs: each line in it is a misuse
that mypy must reject (under --strict an unused ``type: ignore`` is itself an error).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import fastpw
from fastpw.quant import (
    Observer,
    QuantizedSequential,
    choose_qparams,
    dequantize,
    fold_batchnorm,
    quantize,
    sqnr,
)
from fastpw.testing import (
    INT32_MAX,
    INT32_MIN,
    QDTYPE_RANGES,
    RELATIVE_TOLERANCE,
    assert_matches_reference,
    conv1x1_reference,
    conv1x1_tolerance,
    dequantize_reference,
    max_relative_error,
    qactivation_bounds,
    qconv1x1_accumulators,
    qconv1x1_reference,
    qparams_reference,
    quantize_reference,
    wrap_to_int32,
)

if TYPE_CHECKING:
    from typing import assert_type  # (mypy has it; running needs no package)
else:

    def assert_type(value, expected_type):  # what typing.assert_type does at run time
        return value


F32 = npt.NDArray[np.float32]


def machine() -> None:
    version: str = fastpw.__version__
    family: str = fastpw.isa()
    families: list[str] = fastpw.available_isas()
    features: dict[str, bool] = fastpw.cpu_features()
    threaded: bool = fastpw.openmp_enabled()
    threads: int = fastpw.max_threads()
    assert_type(fastpw.cpu_features(), dict[str, bool])
    assert version and family in families and "avx2" in features and threads >= 1
    assert threaded in (True, False)


def float_path(rng: np.random.Generator) -> tuple[F32, fastpw.Conv1x1, fastpw.Conv1x1]:
    x = rng.standard_normal((2, 16, 7, 7), dtype=np.float32)  # NCHW
    w = rng.standard_normal((32, 16), dtype=np.float32)  # (K, C)
    b = np.zeros(32, np.float32)

    y = fastpw.conv1x1(x, w, b, activation="relu")
    assert_type(y, npt.NDArray[Any])  # float32 here; int8 x would give another dtype
    y32: F32 = fastpw.conv1x1(
        np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
        w[:, :8].reshape(32, 8, 1, 1),  # PyTorch's (K, C/groups, 1, 1)
        layout="NHWC",
        stride=(2, 2),
        groups=2,
        activation=(0.0, 6.0),
        num_threads=1,
    )
    assert y.shape == (2, 32, 7, 7) and y32.shape == (2, 4, 4, 32)
    concat = np.zeros((2, 64, 7, 7), np.float32)
    fastpw.conv1x1(x, w, b, out=concat[:, 32:], activation="relu6")  # zero-copy concat
    assert np.array_equal(concat[:, 32:], np.clip(y, 0.0, 6.0))

    layer = fastpw.Conv1x1(w, b, stride=1, activation="relu")
    z = layer(x)
    assert_type(z, F32)
    layer(x, out=concat[:, :32], num_threads=2)
    assert np.array_equal(z, y) and np.array_equal(concat[:, :32], y)
    strided = fastpw.Conv1x1(w, None, layout="NCHW", stride=2, groups=1, activation=None)

    weight: F32 = layer.weight
    bias: F32 | None = layer.bias
    in_channels: int = layer.in_channels
    out_channels: int = layer.out_channels
    layout: str = layer.layout
    stride: tuple[int, int] = strided.stride
    groups: int = layer.groups
    activation: str | tuple[float, float] | None = layer.activation
    isa: str = layer.isa
    assert weight.shape == (out_channels, in_channels // groups) and bias is not None
    assert (layout, stride, activation, isa) == ("NCHW", (2, 2), "relu", fastpw.isa("float32"))
    assert "Conv1x1(" in repr(strided)
    return x, layer, fastpw.Conv1x1(rng.standard_normal((8, 32), dtype=np.float32))


def quantized_path(rng: np.random.Generator, x: F32) -> None:
    xq = rng.integers(0, 256, (2, 16, 7, 7), dtype=np.uint8)
    wq = rng.integers(-127, 128, (32, 16), dtype=np.int8)
    bq = rng.integers(-1000, 1000, 32, dtype=np.int32)
    y_quant = fastpw.QParams(0.05, 0)

    layer = fastpw.QConv1x1(
        wq, bq, x_quant=(0.02, 128), w_quant=(0.005, 0), y_quant=y_quant, activation="relu"
    )
    yq = layer(xq)
    assert_type(yq, npt.NDArray[Any])
    assert yq.dtype == np.uint8 and yq.shape == (2, 32, 7, 7)
    out = np.empty((2, 32, 7, 7), np.uint8)
    layer(xq, out=out, num_threads=1)
    assert np.array_equal(out, yq)

    per_channel = (np.full(32, 0.005, np.float32), np.zeros(32, np.int32))
    acc: npt.NDArray[Any] = fastpw.conv1x1(
        xq, wq, bq, x_quant=(0.02, 128), w_quant=per_channel, out_dtype=np.int32
    )
    assert acc.dtype == np.int32
    same: npt.NDArray[Any] = fastpw.conv1x1(
        xq, wq, bq, x_quant=(0.02, 128), w_quant=(0.005, 0), y_quant=(0.05, 0),
        activation="relu",
    )  # fmt: skip
    assert np.array_equal(same, yq)

    w = rng.standard_normal((32, 16), dtype=np.float32)
    from_float = fastpw.QConv1x1.from_float(
        w,
        np.zeros(32, np.float32),
        x_quant=(0.02, 128),
        y_quant=(0.05, 0),
        per_channel=True,
        x_dtype=np.uint8,
        out_dtype=np.float32,
        layout="NCHW",
        stride=1,
        groups=1,
        activation="relu6",
    )
    assert_type(from_float, fastpw.QConv1x1)
    real = from_float(xq)
    assert real.dtype == np.float32

    weight: npt.NDArray[np.int8] = layer.weight
    bias: npt.NDArray[np.int32] | None = layer.bias
    x_quant: fastpw.QParams = layer.x_quant
    w_quant: fastpw.QParams = layer.w_quant
    y_params: fastpw.QParams | None = layer.y_quant
    out_dtype: np.dtype[Any] | None = from_float.out_dtype
    isa: str = layer.isa
    assert weight.shape == (layer.out_channels, layer.in_channels // layer.groups)
    assert bias is not None and y_params is not None and y_params.zero_point == 0
    assert out_dtype == np.float32
    assert x_quant.scale > 0 and w_quant.zero_point == 0 and isa == fastpw.isa()
    assert (layer.layout, layer.stride, layer.activation) == ("NCHW", (1, 1), "relu")
    assert "QConv1x1(" in repr(layer)


def quant_helpers(rng: np.random.Generator, x: F32) -> None:
    qparams = choose_qparams(x, np.uint8)
    assert_type(qparams, fastpw.QParams)
    xq = quantize(x, qparams)
    assert_type(xq, npt.NDArray[Any])  # uint8 or int8, as dtype says
    back = dequantize(xq, qparams)
    assert_type(back, F32)
    noise_db = sqnr(x, back)
    assert_type(noise_db, float)
    assert noise_db > 30

    per_axis = choose_qparams(x, np.int8, symmetric=True, axis=1, method="minmax")
    xq8 = fastpw.quant.quantize(x, per_axis, np.int8, axis=1, num_threads=1)
    into: F32 = np.empty_like(x)
    dequantize(xq8, per_axis, axis=1, out=into, num_threads=2)
    assert xq8.dtype == np.int8 and fastpw.quant.sqnr(x, into) > 30
    assert choose_qparams(x, method="percentile", percentile=99.9).zero_point > 0

    observer = Observer(np.uint8, symmetric=False, axis=None, method="percentile")
    observer.update(x)
    observer.update(2 * x)
    observed: fastpw.QParams = observer.qparams()
    batches: int = observer.batches
    assert batches == 2 and observed.scale > qparams.scale and "Observer(" in repr(observer)

    w = rng.standard_normal((32, 16, 1, 1), dtype=np.float32)
    gamma, beta = np.ones(32), np.zeros(32)
    mean, var = rng.standard_normal(32), rng.uniform(0.5, 2.0, 32)
    folded_w, folded_b = fold_batchnorm(w, None, gamma, beta, mean, var, eps=1e-3)
    assert_type(folded_w, F32)
    assert_type(folded_b, F32)
    assert folded_w.shape == w.shape and folded_b.shape == (32,)


def quantized_chain(x: F32, first: fastpw.Conv1x1, second: fastpw.Conv1x1) -> None:
    calibration = [x, 0.5 * x]
    net = QuantizedSequential.calibrate(
        [first, second], calibration, x_dtype=np.uint8, per_channel=True, method="minmax"
    )
    assert_type(net, QuantizedSequential)
    y = net(x, num_threads=1)
    assert_type(y, F32)
    xq = net.quantize_input(x)
    yq = net.run_quantized(xq, num_threads=1)
    assert_type(yq, npt.NDArray[Any])
    assert np.array_equal(dequantize(yq, net.output_qparams), y)
    rows: list[dict[str, Any]] = net.report(x, file=io.StringIO())
    assert [row["layer"] for row in rows] == [0, 1]

    float_layers: list[fastpw.Conv1x1] = net.float_layers
    layers: list[fastpw.QConv1x1] = net.layers
    boundaries: list[fastpw.QParams] = net.boundary_qparams
    first_qparams: fastpw.QParams = net.input_qparams
    x_dtype: np.dtype[Any] = net.x_dtype
    assert len(float_layers) == len(layers) == len(boundaries) - 1 == 2
    assert first_qparams == boundaries[0] and x_dtype == np.uint8
    assert "QuantizedSequential(" in repr(net)
    assert QuantizedSequential.calibrate([first], x).layers[0].in_channels == 16


def checked_against_the_reference(rng: np.random.Generator, x: F32, layer: fastpw.Conv1x1) -> None:
    """A user's own tests: fastpw's results against the float64/int64 reference."""
    y = layer(x)
    expected = conv1x1_reference(x, layer.weight, layer.bias, activation=layer.activation)
    assert_type(expected, npt.NDArray[np.float64])
    bound = conv1x1_tolerance(x, layer.weight, layer.bias, activation=layer.activation)
    assert np.all(np.abs(y - expected) <= bound)
    assert_matches_reference(y, x, layer.weight, layer.bias, "NCHW", 1, 1, layer.activation)
    error: float = max_relative_error(y, expected)
    assert error <= RELATIVE_TOLERANCE

    xq = rng.integers(0, 256, (1, 16, 5, 5), dtype=np.uint8)
    wq = rng.integers(-127, 128, (8, 16), dtype=np.int8)
    quantized = fastpw.QConv1x1(
        wq, None, x_quant=(0.02, 128), w_quant=(0.005, 0), y_quant=(0.05, 3), activation="relu"
    )
    exact: npt.NDArray[Any] = qconv1x1_reference(
        xq, wq, x_quant=(0.02, 128), w_quant=(0.005, 0), y_quant=(0.05, 3), activation="relu"
    )
    assert np.array_equal(quantized(xq), exact)
    acc = wrap_to_int32(qconv1x1_accumulators(xq, wq, None, x_zero_point=128))
    assert_type(acc, npt.NDArray[np.int64])
    assert INT32_MIN <= acc.min() and acc.max() <= INT32_MAX
    lo, hi = qactivation_bounds("relu", np.uint8, 0.05, 3)
    assert (lo, hi) == (3, QDTYPE_RANGES[np.dtype(np.uint8)][1])

    qparams = choose_qparams(x, np.uint8)
    assert tuple(qparams) == qparams_reference(x.min(), x.max(), np.uint8)
    x8 = quantize(x, qparams)
    assert np.array_equal(x8, quantize_reference(x, qparams.scale, qparams.zero_point, np.uint8))
    back: F32 = dequantize_reference(x8, qparams.scale, qparams.zero_point)
    assert np.array_equal(dequantize(x8, qparams), back)


if TYPE_CHECKING:

    def misuse(x: F32, w: F32) -> None:
        """Each call breaks the annotated contract; mypy flags every one."""
        fastpw.conv1x1(x, w, stride="2")  # type: ignore[arg-type]
        fastpw.conv1x1(x, w, num_threads=2.5)  # type: ignore[arg-type]
        fastpw.Conv1x1(w, groups="2")  # type: ignore[arg-type]
        fastpw.QConv1x1(w, x_quant=(0.02, 128))  # type: ignore[call-arg]
        dequantize(x, (0.1, 0), axis="1")  # type: ignore[arg-type]
        fastpw.isa(1)  # type: ignore[arg-type]

    def int8_out_of_the_float_layer(x: F32, w: F32) -> npt.NDArray[np.int8]:
        return fastpw.Conv1x1(w)(x)  # type: ignore[return-value]


def main() -> None:
    rng = np.random.default_rng(0)
    machine()
    x, first, second = float_path(rng)
    quantized_path(rng, x)
    quant_helpers(rng, x)
    quantized_chain(x, first, second)
    checked_against_the_reference(rng, x, first)


if __name__ == "__main__":
    main()
