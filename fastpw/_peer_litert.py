"""XNNPACK, through LiteRT (the TensorFlow Lite runtime, ``pip install ai-edge-litert``),
as a peer of ``python -m fastpw`` and ``bench/``.

XNNPACK is the CPU engine LiteRT applies by default, and the fastest open 1x1
convolution for edge CPUs that fastpw measures itself against. It has no Python API of its
own; LiteRT runs it on a TensorFlow Lite model. LiteRT ships the model's flatbuffer
schema as Python (``ai_edge_litert.schema_py_generated``), so the one-operator model
(a CONV_2D with a 1x1 filter, VALID padding, the layer's stride and groups) is built here,
in memory, from the same operands fastpw gets: no converter, no TensorFlow, no file.

- ``litert_version``: the installed version, or None (then the peer is absent);
- ``xnnpack_conv``: float32 CONV_2D on NHWC input (TensorFlow Lite has no NCHW);
- ``xnnpack_qconv``: int8 CONV_2D with per-channel weights, TensorFlow Lite's int8
  scheme, on the operands of fastpw's ``QConv1x1``: see its docstring.

Each returns ``(call, out)`` like the peers of ``fastpw._peers``: the interpreter is
built, the input written and the XNNPACK delegate checked to have taken the operator
here, outside any timing; ``call()`` runs the interpreter (``invoke``) and returns the
output, read in place from the interpreter's own buffer: a view that must be dropped
before the next call (LiteRT refuses to run while one lives). Not API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from .shapes import Int8Inputs

#: The install command named where LiteRT is missing.
LITERT_INSTALL = "pip install ai-edge-litert"

#: TensorFlow Lite's int8 activations are signed: fastpw's uint8 data (and zero points)
#: shifted by this are the same real numbers.
UINT8_TO_INT8 = 128


def litert_version() -> str | None:
    """ai-edge-litert's version when LiteRT and the flatbuffers package import, else None."""
    try:
        from importlib.metadata import version

        import flatbuffers  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
        from ai_edge_litert import (  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
            interpreter,
        )
    except ImportError:
        return None
    return version("ai-edge-litert")


def _conv_model(
    x_shape: tuple[int, ...],
    weight: np.ndarray,
    bias: np.ndarray,
    stride: int,
    quantization: dict[str, Any] | None,
) -> bytes:
    """A TensorFlow Lite flatbuffer holding one CONV_2D: NHWC ``x_shape``, ``weight``
    (K, C/groups) as a (K, 1, 1, C/groups) filter, ``bias`` (K,), VALID padding, square
    ``stride``; groups follow from C and the filter's depth, as TensorFlow Lite reads
    them. ``quantization``: None for float32, else the int8 tensors' parameters by
    tensor name (x, w, b, y): ``(scales, zero_points)``."""
    import flatbuffers  # type: ignore[import-untyped, unused-ignore]
    from ai_edge_litert import (  # type: ignore[import-untyped, unused-ignore]
        schema_py_generated as schema,
    )

    n, h, w, _ = x_shape
    k, c_per_group = weight.shape
    y_shape = (n, -(-h // stride), -(-w // stride), k)

    def buffer(data: np.ndarray | None = None) -> Any:
        b = schema.BufferT()
        if data is not None:
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        return b

    def tensor(name: str, shape: tuple[int, ...], dtype: npt.DTypeLike, buffer_index: int) -> Any:
        t = schema.TensorT()
        t.name, t.shape, t.buffer = name, list(shape), buffer_index
        t.type = {
            np.dtype(np.float32): schema.TensorType.FLOAT32,
            np.dtype(np.int8): schema.TensorType.INT8,
            np.dtype(np.int32): schema.TensorType.INT32,
        }[np.dtype(dtype)]
        if quantization is not None:
            scales, zero_points = quantization[name]
            q = schema.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scales)]
            q.zeroPoint = [int(z) for z in np.atleast_1d(zero_points)]
            q.quantizedDimension = 0  # w and b: per output channel; x and y: one scale
            t.quantization = q
        return t

    activation_dtype = np.float32 if quantization is None else np.int8
    subgraph = schema.SubGraphT()
    subgraph.tensors = [
        tensor("x", x_shape, activation_dtype, 0),
        tensor("w", (k, 1, 1, c_per_group), weight.dtype, 1),
        tensor("b", (k,), bias.dtype, 2),
        tensor("y", y_shape, activation_dtype, 0),
    ]
    subgraph.inputs, subgraph.outputs = [0], [3]
    options = schema.Conv2DOptionsT()
    options.padding = schema.Padding.VALID
    options.strideH = options.strideW = stride
    options.dilationHFactor = options.dilationWFactor = 1
    options.fusedActivationFunction = schema.ActivationFunctionType.NONE
    conv = schema.OperatorT()
    conv.opcodeIndex, conv.inputs, conv.outputs = 0, [0, 1, 2], [3]
    conv.builtinOptionsType = schema.BuiltinOptions.Conv2DOptions
    conv.builtinOptions = options
    subgraph.operators = [conv]

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CONV_2D
    # Version 3 is CONV_2D with per-channel int8 weights; 1 the float32 operator.
    code.version = 1 if quantization is None else 3
    model = schema.ModelT()
    model.version = 3  # the schema version every TensorFlow Lite runtime reads
    model.operatorCodes = [code]
    model.subgraphs = [subgraph]
    model.buffers = [buffer(), buffer(weight), buffer(bias)]  # buffer 0: "no data"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _delegated_call(
    model: bytes, x_nhwc: np.ndarray, threads: int
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """Build the interpreter for ``model`` on ``threads`` threads, write ``x_nhwc`` into
    its input, and check that the XNNPACK delegate runs the operator (RuntimeError if
    TensorFlow Lite's own kernel would: that is not the peer this module promises)."""
    from ai_edge_litert.interpreter import (  # type: ignore[import-untyped, unused-ignore]
        Interpreter,
        OpResolverType,
    )

    # BUILTIN applies LiteRT's default delegate, XNNPACK, to every operator it supports.
    interpreter = Interpreter(
        model_content=model,
        num_threads=threads,
        experimental_op_resolver_type=OpResolverType.BUILTIN,
    )
    interpreter.allocate_tensors()
    if "DELEGATE" not in [op["op_name"] for op in interpreter._get_ops_details()]:
        raise RuntimeError("LiteRT's XNNPACK delegate declined this CONV_2D")
    x_index = interpreter.get_input_details()[0]["index"]
    y_index = interpreter.get_output_details()[0]["index"]
    interpreter.set_tensor(x_index, x_nhwc)
    output_view = interpreter.tensor(y_index)  # a function returning a view of y

    def call() -> np.ndarray:
        interpreter.invoke()
        result: np.ndarray = output_view()
        return result

    call.keepalive = interpreter  # type: ignore[attr-defined]
    # A view of the interpreter's buffer blocks the next invoke while it lives: ``out``
    # is a copy, and callers drop what call() returns before calling it again.
    return call, call().copy()


def xnnpack_conv(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, threads: int, *, stride: int = 1
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """XNNPACK's float32 1x1 convolution (with bias) on NHWC ``x``: returns
    ``(call, out)``. ``weight`` is (K, C/groups). ``out`` (NHWC) is a copy of the
    first call's result. XNNPACK packs the weights (with
    the bias) once, when the interpreter is built."""
    if x.ndim != 4 or x.dtype != np.float32:
        raise ValueError("xnnpack_conv takes a float32 NHWC x")
    model = _conv_model(
        x.shape,
        np.ascontiguousarray(weight, np.float32),
        np.asarray(bias, np.float32),
        stride,
        None,
    )
    return _delegated_call(model, np.ascontiguousarray(x), threads)


def xnnpack_qconv(inputs: Int8Inputs, threads: int) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """XNNPACK's int8 1x1 convolution on ``inputs`` (fastpw's ``QConv1x1`` operands):
    returns ``(call, out)`` with ``out`` uint8 NHWC.

    TensorFlow Lite's int8 scheme: signed int8 activations with a zero point, int8
    weights symmetric per output channel, an int32 bias in units of
    ``x_scale * w_scale[k]``. fastpw's uint8 x and y are the same real numbers shifted
    by 128 (data and zero points): x is shifted once, here, untimed, and ``call()``
    shifts the int8 output back (one pass over K*H*W bytes, as a uint8 user would). The
    weights, scales and bias are fastpw's own, so where XNNPACK requantizes as ONNX does
    (float32 multiply, round half to even) its result is fastpw's bit for bit.
    """
    if inputs.x.dtype != np.uint8 or inputs.layout != "NHWC":
        raise ValueError("xnnpack_qconv takes uint8 NHWC activations")
    x_int8 = (inputs.x.astype(np.int16) - UINT8_TO_INT8).astype(np.int8)
    x_scale, x_zero_point = inputs.x_quant
    w_scale = np.asarray(inputs.w_quant[0], np.float32)
    y_scale, y_zero_point = inputs.y_quant
    k = inputs.weight.shape[0]
    quantization = {
        "x": (x_scale, x_zero_point - UINT8_TO_INT8),
        "w": (w_scale, np.zeros(k, np.int64)),
        "b": (np.float32(x_scale) * w_scale, np.zeros(k, np.int64)),
        "y": (y_scale, y_zero_point - UINT8_TO_INT8),
    }
    model = _conv_model(x_int8.shape, inputs.weight, inputs.bias, inputs.stride, quantization)
    run, _ = _delegated_call(model, np.ascontiguousarray(x_int8), threads)

    def call() -> np.ndarray:
        result: np.ndarray = run().view(np.uint8) ^ np.uint8(UINT8_TO_INT8)
        return result

    call.keepalive = run  # type: ignore[attr-defined]
    return call, call()
