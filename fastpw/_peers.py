"""The peers fastpw is timed against in ``python -m fastpw`` and ``bench/``.

- ``numpy_baseline``: the numpy GEMM (float32 ``matmul``) that fastpw's float32 layers
  are compared with;
- ``onnxruntime_qlinearconv``: ONNX Runtime's QLinearConv on the same operands as
  fastpw's ``QConv1x1``, the int8 baseline (NCHW), ``onnxruntime_qlinearconv_nhwc`` the
  same fed NHWC (the ``com.microsoft`` QLinearConv with ``channels_last=1``), and
  ``onnxruntime_version`` to tell first whether they can run;
- ``onnxruntime_conv``: ONNX Runtime's float32 Conv, NCHW or NHWC;
- ``torch_conv2d`` and ``torch_qconv2d``: PyTorch's float32 conv2d (NCHW or
  channels_last) and its quantized Conv2d on one quantized engine, with
  ``torch_version`` to tell first whether torch imports;
- ``float32_errors`` and ``int8_differences``: how a peer's result compares with
  ``fastpw.testing``'s reference;
- ``implementation_label``: how tables and plots name fastpw or a peer in a layout.

Every peer returns ``(call, out)``: its session or module is built here, outside any
timing, and ``call()`` returns the result as a numpy array in the layout of the inputs.

Not API: the command line, the benchmarks and tests/test_peers.py are its only users.
onnxruntime and onnx are optional (``pip install "fastpw[bench]"``), and so is torch
(installed by hand: it is too big for an extra): each is imported inside the functions
that use it. ONNX Runtime's and OpenBLAS's worker threads spin after a call: see
``fastpw._timing`` for how long.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .shapes import Int8Inputs, empty_output


def numpy_baseline(
    x: np.ndarray, weight: np.ndarray, layout: str = "NCHW", stride: int = 1, groups: int = 1
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """The numpy GEMM that fastpw is compared with: returns ``(call, out)``.

    NCHW: ``W (K, C) @ X (N, C, HW)`` (one GEMM per image, broadcast by matmul); NHWC:
    ``X (N*HW, C) @ W.T (C, K)``, with ``W.T`` made contiguous here, outside any timing.
    ``call()`` writes the plain matmul into the preallocated ``out`` (same layout as
    fastpw's output) and returns it. It adds no bias, although the fastpw layers it is
    compared with do (fused, at no extra pass): the baseline is the bare GEMM, the
    strictest comparison.

    A ``stride`` other than 1 subsamples x inside ``call()`` (a copy of the pixels the
    layer reads: numpy's matmul takes no strided pixel grid); ``groups`` other than 1
    is refused (ValueError): one GEMM per group is not how a numpy user would write it.
    """
    if groups != 1:
        raise ValueError("the numpy baseline is one GEMM: groups must be 1")
    out = empty_output(x, weight.shape[0], layout, stride=stride)
    out_2d: np.ndarray  # the GEMM's view of out
    if layout == "NCHW":
        out_2d = out.reshape(x.shape[0], weight.shape[0], -1)  # (N, K, HW), a view of out

        def operands() -> tuple[np.ndarray, np.ndarray]:
            pixels = x if stride == 1 else x[:, :, ::stride, ::stride]
            return weight, pixels.reshape(x.shape[0], x.shape[1], -1)
    else:
        weight_t = np.ascontiguousarray(weight.T)
        out_2d = out.reshape(-1, weight.shape[0])  # (N*HW, K), a view of out

        def operands() -> tuple[np.ndarray, np.ndarray]:
            pixels = x if stride == 1 else x[:, ::stride, ::stride]
            return pixels.reshape(-1, x.shape[3]), weight_t

    def call() -> np.ndarray:
        np.matmul(*operands(), out=out_2d)
        return out

    return call, out


#: Short names of the peers in tables and plots.
LABELS = {"onnxruntime": "ORT", "xnnpack": "XNNPACK"}


def implementation_label(key: str) -> str:
    """How tables and plots name an implementation timed in one layout: the report keys
    them "<implementation>_<LAYOUT>" (torch's quantized engines "torch-<engine>"), e.g.
    "onnxruntime_NHWC" -> "ORT NHWC", "torch-fbgemm_NCHW" -> "torch fbgemm NCHW"."""
    name, layout = key.rsplit("_", 1)
    return f"{LABELS.get(name, name.replace('-', ' '))} {layout}"


def onnxruntime_version() -> str | None:
    """onnxruntime's version when both it and onnx import (the int8 baseline needs
    both), else None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return None
    return str(onnxruntime.__version__)


# ------------------------------------------------------------------------- ONNX Runtime


def _onnxruntime_session(
    nodes: list[Any],
    inputs: list[Any],
    outputs: list[Any],
    initializers: list[Any],
    threads: int,
) -> Any:
    """A CPU session for a one-graph model (opset 13, plus ``com.microsoft`` version 1):
    ``intra_op_num_threads = threads``, ``inter_op_num_threads = 1``, sequential
    execution, all graph optimizations on (``ORT_ENABLE_ALL``, ONNX Runtime's default)."""
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]
    from onnx import helper

    graph = helper.make_graph(nodes, "conv1x1", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="fastpw._peers")
    model.ir_version = 8  # opset 13's IR version: read by every onnxruntime since 1.8

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _onnxruntime_bound_call(
    session: Any, x: np.ndarray, out: np.ndarray
) -> Callable[[], np.ndarray]:
    """``call()`` runs ``session`` through an I/O binding that reads ``x`` in place and
    writes the preallocated ``out``, and returns ``out``."""
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

    x_value = ort.OrtValue.ortvalue_from_numpy(x)  # shares x's memory
    out_value = ort.OrtValue.ortvalue_from_numpy(out)  # shares out's memory
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", x_value)
    binding.bind_ortvalue_output("y", out_value)

    def call() -> np.ndarray:
        session.run_with_iobinding(binding)
        return out

    # The OrtValues borrow x's and out's memory: keep them (and x) alive with the call.
    call.keepalive = (x, x_value, out_value)  # type: ignore[attr-defined]
    return call


def _qlinearconv_call(
    inputs: Int8Inputs, threads: int, channels_last: bool
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """One QLinearConv node on ``inputs`` (the operands as initializers, 1x1 kernel):
    the ONNX operator on NCHW, or ``com.microsoft.QLinearConv`` with ``channels_last=1``
    on NHWC. x and y have x's 8-bit type (ONNX Runtime has no mixed-type kernel)."""
    from onnx import TensorProto, helper, numpy_helper

    x = inputs.x_nchw
    if channels_last:
        x = inputs.x if inputs.layout == "NHWC" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    k, c = inputs.weight.shape  # c: C/groups
    x_scale, x_zero_point = inputs.x_quant
    w_scale, _ = inputs.w_quant
    y_scale, y_zero_point = inputs.y_quant
    initializers = [
        numpy_helper.from_array(np.array(x_scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(x_zero_point, x.dtype), "x_zero_point"),
        numpy_helper.from_array(inputs.weight.reshape(k, c, 1, 1), "w"),
        numpy_helper.from_array(np.asarray(w_scale, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(k, np.int8), "w_zero_point"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(y_zero_point, x.dtype), "y_zero_point"),
        numpy_helper.from_array(inputs.bias, "bias"),
    ]
    layout = "NHWC" if channels_last else "NCHW"
    node = helper.make_node(
        "QLinearConv",
        ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point"]
        + ["y_scale", "y_zero_point", "bias"],
        ["y"],
        kernel_shape=[1, 1],
        strides=[inputs.stride, inputs.stride],
        group=inputs.groups,
        domain="com.microsoft" if channels_last else None,
    )
    if channels_last:
        node.attribute.append(helper.make_attribute("channels_last", 1))
    out = empty_output(x, k, layout, x.dtype, inputs.stride)
    elem_type = TensorProto.UINT8 if x.dtype == np.uint8 else TensorProto.INT8
    session = _onnxruntime_session(
        [node],
        [helper.make_tensor_value_info("x", elem_type, list(x.shape))],
        [helper.make_tensor_value_info("y", elem_type, list(out.shape))],
        initializers,
        threads,
    )
    return _onnxruntime_bound_call(session, x, out), out


def onnxruntime_qlinearconv(
    inputs: Int8Inputs, threads: int
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """ONNX Runtime's QLinearConv on ``inputs``, the int8 baseline: returns ``(call, out)``.

    A one-node ONNX model (opset 13, the operands as initializers, 1x1 kernel) and its
    session are built once, here (see ``_onnxruntime_session``). The input is always
    NCHW, QLinearConv's layout: NHWC ``inputs`` are transposed once, here, untimed.
    ``call()`` runs the session through an I/O binding that reads ``x`` in place and
    writes the preallocated uint8 NCHW ``out``, and returns ``out``.

    What runs: ONNX Runtime's CPU layout transformer rewrites the node into
    Transpose -> ``com.microsoft.QLinearConv`` (channels_last=1) -> Transpose, so each
    call pays two transposes besides the NHWC kernel; ``onnxruntime_qlinearconv_nhwc``
    is the same kernel without them.

    onnxruntime and onnx are imported here, not at module import (ImportError when
    either is missing; ``onnxruntime_version()`` tells first). ONNX Runtime's worker
    threads spin after a run: see ``fastpw._timing.ORT_IDLE_SECONDS``.
    """
    return _qlinearconv_call(inputs, threads, channels_last=False)


def onnxruntime_qlinearconv_nhwc(
    inputs: Int8Inputs, threads: int
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """ONNX Runtime's NHWC QLinearConv on ``inputs``: returns ``(call, out)``.

    ``com.microsoft.QLinearConv`` with ``channels_last=1`` (a CPU contrib op), fed the
    NHWC x directly; ``out`` is NHWC. NCHW ``inputs`` are transposed once, here,
    untimed. Otherwise as ``onnxruntime_qlinearconv``.
    """
    return _qlinearconv_call(inputs, threads, channels_last=True)


def onnxruntime_conv(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    threads: int,
    layout: str = "NCHW",
    stride: int = 1,
    groups: int = 1,
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """ONNX Runtime's float32 Conv (1x1, with bias) on ``x``: returns ``(call, out)``.

    NCHW: one Conv node. NHWC: ONNX Runtime 1.32's CPU provider has no float32 NHWC
    Conv kernel (``com.microsoft.NhwcConv`` and ``NhwcFusedConv`` are not registered for
    float32 on CPU), so the model is what an NHWC user exports: Transpose -> Conv ->
    Transpose. In both layouts the graph optimizer (``ORT_ENABLE_ALL``) rewrites the
    Conv to its NCHWc blocked kernel between ``ReorderInput`` and ``ReorderOutput``
    nodes; in NHWC those read and write NHWC themselves (``channels_last=1``), taking
    the place of the Transposes. So each call pays a reorder of x and of y around the
    kernel, in either layout: that is what ONNX Runtime users get. Session and I/O
    binding as in ``onnxruntime_qlinearconv``; ``out`` is float32 in ``layout``.
    """
    from onnx import TensorProto, helper, numpy_helper

    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    k, c = weight.shape  # c: C/groups
    out = empty_output(x, k, layout, stride=stride)
    conv_io = (["x", "w", "b"], ["y"]) if layout == "NCHW" else (["x_nchw", "w", "b"], ["y_nchw"])
    conv = helper.make_node(
        "Conv", *conv_io, kernel_shape=[1, 1], strides=[stride, stride], group=groups
    )
    nodes = [conv]
    if layout == "NHWC":
        nodes.insert(0, helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        nodes.append(helper.make_node("Transpose", ["y_nchw"], ["y"], perm=[0, 2, 3, 1]))
    session = _onnxruntime_session(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out.shape))],
        [
            numpy_helper.from_array(np.ascontiguousarray(weight.reshape(k, c, 1, 1)), "w"),
            numpy_helper.from_array(np.ascontiguousarray(bias), "b"),
        ],
        threads,
    )
    return _onnxruntime_bound_call(session, x, out), out


# ------------------------------------------------------------------------------ PyTorch


def torch_version() -> str | None:
    """torch's version when it imports, else None."""
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return str(torch.__version__)


def torch_cpu_capability() -> str | None:
    """The ISA torch's own CPU kernels were dispatched to (``ATEN_CPU_CAPABILITY``
    overrides it), e.g. "AVX2"; None without torch."""
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return str(torch.backends.cpu.get_cpu_capability())


def torch_quantized_engines() -> tuple[str, ...]:
    """The quantized engines this torch build supports (without "none"); () without
    torch."""
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return ()
    return tuple(e for e in torch.backends.quantized.supported_engines if e != "none")


def _torch_threads(threads: int) -> None:
    """torch's intra-op thread count is process-wide: set it when it differs."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def torch_conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    threads: int,
    layout: str = "NCHW",
    stride: int = 1,
    groups: int = 1,
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """PyTorch's float32 ``conv2d`` (1x1, with bias) on ``x``: returns ``(call, out)``.

    NCHW: x as a contiguous tensor; NHWC: x as an NCHW tensor in ``torch.channels_last``
    memory format (a view of the same memory), so torch picks its channels-last path
    and returns a channels-last result. The tensors share x's, weight's and bias's
    memory. ``call()`` sets torch's thread count to ``threads`` when it differs (a
    process-wide setting), runs ``conv2d`` under ``torch.inference_mode()`` and returns
    the result as a numpy view in ``layout``: torch allocates its output on every call
    (``conv2d`` has no ``out=``), as its users get it. ``out`` is the first call's result.
    """
    import torch  # type: ignore[import-not-found, unused-ignore]

    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    k, c = weight.shape
    x_t = torch.from_numpy(x) if layout == "NCHW" else torch.from_numpy(x).permute(0, 3, 1, 2)
    w_t = torch.from_numpy(np.ascontiguousarray(weight)).reshape(k, c, 1, 1)
    if layout == "NHWC":
        w_t = w_t.contiguous(memory_format=torch.channels_last)  # (K, C, 1, 1): same bytes
    b_t = torch.from_numpy(np.ascontiguousarray(bias))
    conv2d = torch.nn.functional.conv2d

    def call() -> np.ndarray:
        _torch_threads(threads)
        with torch.inference_mode():
            y = conv2d(x_t, w_t, b_t, stride, 0, 1, groups)
        result: np.ndarray = (y if layout == "NCHW" else y.permute(0, 2, 3, 1)).numpy()
        return result

    call.keepalive = (x, weight, bias)  # type: ignore[attr-defined]
    backend = torch_conv_backend(x_t, w_t, b_t, threads, stride, groups)
    call.backend = backend  # type: ignore[attr-defined]
    return call, call()


def torch_conv_backend(
    x_t: Any, w_t: Any, b_t: Any, threads: int, stride: int = 1, groups: int = 1
) -> str:
    """Which of ATen's convolution backends torch picks for these tensors on
    ``threads`` threads (1x1, no padding), e.g. "Mkldnn" (oneDNN: see
    ``onednn_kernels``) or "Slow2d" (a GEMM): torch's choice depends on the thread
    count. "unknown" where this torch lacks the private helper that tells."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    select = getattr(torch._C, "_select_conv_backend", None)
    if select is None:
        return "unknown"
    _torch_threads(threads)
    with torch.inference_mode():
        strides = [stride, stride]
        backend = select(x_t, w_t, b_t, strides, [0, 0], [1, 1], False, [0, 0], groups, None)
    return str(backend).rsplit(".", 1)[-1]


def torch_qconv2d(
    inputs: Int8Inputs, threads: int, engine: str
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """PyTorch's quantized ``Conv2d`` on ``inputs`` with quantized engine ``engine``
    (one of ``torch_quantized_engines()``): returns ``(call, out)``.

    A ``torch.ao.nn.quantized.Conv2d`` module (1x1) holds the int8 weight per channel
    (``w_quant``'s scales, zero point 0) packed for ``engine``; x is a quint8 tensor with
    ``x_quant``; the output is quint8 with ``y_quant``: the operands of fastpw's
    ``QConv1x1`` and of QLinearConv. torch takes a float bias: it gets
    ``bias[k] * x_scale * w_scale[k]`` (the int32 bias in real units), which each engine
    adds in its own way. NHWC ``inputs`` go in as a ``torch.channels_last`` tensor.

    ``call()`` sets the engine and thread count when they differ (both process-wide),
    runs the module under ``torch.inference_mode()`` and returns the uint8 result in
    ``inputs.layout``: ``int_repr()`` copies the K*H*W output bytes once per call (a
    quantized tensor has no uint8 view). ``out`` is the first call's result.
    """
    import torch  # type: ignore[import-not-found, unused-ignore]
    import torch.ao.nn.quantized as nnq  # type: ignore[import-not-found, unused-ignore]

    if inputs.x.dtype != np.uint8:
        raise ValueError("torch's quantized Conv2d takes quint8 activations only")
    torch.backends.quantized.engine = engine
    k, c = inputs.weight.shape
    x_scale, x_zero_point = inputs.x_quant
    w_scale = torch.from_numpy(np.asarray(inputs.w_quant[0], np.float32)).double()
    y_scale, y_zero_point = inputs.y_quant
    with warnings.catch_warnings():
        # torch 2.13 deprecates its quantized tensors; they are what this peer measures.
        warnings.simplefilter("ignore", UserWarning)
        weight = torch._make_per_channel_quantized_tensor(
            torch.from_numpy(inputs.weight).reshape(k, c, 1, 1),
            w_scale,
            torch.zeros(k, dtype=torch.long),
            0,
        )
    bias = torch.from_numpy(inputs.bias.astype(np.float64) * x_scale * w_scale.numpy())
    module = nnq.Conv2d(  # type: ignore[no-untyped-call, unused-ignore]
        c * inputs.groups, k, 1, stride=inputs.stride, groups=inputs.groups
    )
    module.set_weight_bias(weight, bias.float())
    module.scale, module.zero_point = float(y_scale), int(y_zero_point)
    x_t = torch.from_numpy(inputs.x)
    if inputs.layout == "NHWC":
        x_t = x_t.permute(0, 3, 1, 2)  # an NCHW tensor in channels_last memory format
    x_q = torch._make_per_tensor_quantized_tensor(x_t, x_scale, x_zero_point)
    if inputs.layout == "NHWC":
        x_q = x_q.contiguous(memory_format=torch.channels_last)

    def call() -> np.ndarray:
        if torch.backends.quantized.engine != engine:
            torch.backends.quantized.engine = engine
        _torch_threads(threads)
        with torch.inference_mode():
            y = module(x_q).int_repr()
        result: np.ndarray = (y if inputs.layout == "NCHW" else y.permute(0, 2, 3, 1)).numpy()
        return result

    return call, call()


def onednn_kernels(call: Callable[[], object]) -> str | None:
    """The oneDNN convolution implementations one ``call()`` of a PyTorch peer ran, as
    oneDNN's verbose log names them (e.g. "brgconv_1x1:avx2": the kernel and its ISA),
    or None when the call ran no oneDNN convolution (fbgemm, qnnpack). The log goes to
    file descriptor 1, so it is caught there, around this one call."""
    import ctypes
    import tempfile

    import torch  # type: ignore[import-not-found, unused-ignore]

    c_library = ctypes.CDLL(None)  # oneDNN prints with C stdio: its buffer is flushed too
    sys.stdout.flush()
    c_library.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):  # type: ignore[no-untyped-call, unused-ignore]
                call()
        finally:
            sys.stdout.flush()
            c_library.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
    # onednn_verbose,v1,primitive,exec,cpu,convolution,<implementation>,...
    found = [
        fields[6]
        for fields in (line.split(",") for line in lines)
        if len(fields) > 6 and fields[3] == "exec" and fields[5] == "convolution"
    ]
    return " ".join(dict.fromkeys(found)) or None


# -------------------------------------------------------------------------- correctness


def float32_errors(
    result: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    layout: str,
    stride: int = 1,
    groups: int = 1,
) -> tuple[int, float]:
    """How a float32 peer's ``result`` compares with ``fastpw.testing``'s reference:
    ``(outside, relative)``, the number of entries outside ``conv1x1_tolerance`` (0 for
    a correct float32 result) and ``max_relative_error`` (compare it with
    ``RELATIVE_TOLERANCE``)."""
    from .testing import conv1x1_reference, conv1x1_tolerance, max_relative_error

    expected = conv1x1_reference(x, weight, bias, layout=layout, stride=stride, groups=groups)
    tolerance = conv1x1_tolerance(x, weight, bias, layout=layout, stride=stride, groups=groups)
    error = np.abs(np.asarray(result, np.float64) - expected)
    return int(np.count_nonzero(~(error <= tolerance))), max_relative_error(result, expected)


@dataclass(frozen=True)
class Int8Differences:
    """How an 8-bit peer's result differs from fastpw's int8 formula
    (``fastpw.testing.qconv1x1_reference``): counts of values off by exactly 1 and by
    more, the largest difference, and the number of values."""

    by_one: int
    by_more: int
    largest: int
    size: int

    @property
    def exact(self) -> bool:
        """True when the result equals the formula bit for bit."""
        return self.by_one == self.by_more == 0


def int8_differences(
    result: np.ndarray, inputs: Int8Inputs, expected: np.ndarray | None = None
) -> Int8Differences:
    """Compare a peer's 8-bit ``result`` (in ``inputs.layout``) with the formula's
    output, ``expected`` when the caller has it already."""
    from .testing import qconv1x1_reference

    if expected is None:
        expected = qconv1x1_reference(inputs.x, inputs.weight, inputs.bias, **inputs.layer_options)
    if result.shape != expected.shape:
        raise ValueError(f"result shape {result.shape}, expected {expected.shape}")
    diff = np.abs(result.astype(np.int16) - expected.astype(np.int16))
    by_one = int(np.count_nonzero(diff == 1))
    return Int8Differences(
        by_one, int(np.count_nonzero(diff > 1)), int(diff.max(initial=0)), int(diff.size)
    )
