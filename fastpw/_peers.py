"""The peers fastpw is timed against in ``python -m fastpw`` and ``bench/``.

- ``numpy_baseline``: the numpy GEMM (float32 ``matmul``) that fastpw's float32 layers
  are compared with;
- ``onnxruntime_qlinearconv``: ONNX Runtime's QLinearConv on the same operands as
  fastpw's ``QConv1x1``, the int8 baseline, and ``onnxruntime_version`` to tell first
  whether it can run.

Not API: the command line and the benchmarks are its only users. onnxruntime and onnx
are optional (``pip install "fastpw[bench]"``): they are imported inside
``onnxruntime_qlinearconv`` and ``onnxruntime_version`` only. ONNX Runtime's and
OpenBLAS's worker threads spin after a call: see ``fastpw._timing`` for how long.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .shapes import Int8Inputs, empty_output


def numpy_baseline(
    x: np.ndarray, weight: np.ndarray, layout: str = "NCHW"
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """The numpy GEMM that fastpw is compared with: returns ``(call, out)``.

    NCHW: ``W (K, C) @ X (C, HW)``; NHWC: ``X (HW, C) @ W.T (C, K)``, with ``W.T`` made
    contiguous here, outside any timing. ``call()`` writes the plain matmul into the
    preallocated ``out`` (same layout as fastpw's output) and returns it. It adds no
    bias, although the fastpw layers it is compared with do (fused, at no extra pass):
    the baseline is the bare GEMM, the strictest comparison. Batch 1 only.
    """
    if x.shape[0] != 1:
        raise ValueError("the numpy baseline handles batch 1 only")
    out = empty_output(x, weight.shape[0], layout)
    if layout == "NCHW":
        operands = (weight, x.reshape(x.shape[1], -1))
        out_2d = out.reshape(weight.shape[0], -1)  # (K, HW), a view of out
    else:
        operands = (x.reshape(-1, x.shape[3]), np.ascontiguousarray(weight.T))
        out_2d = out.reshape(-1, weight.shape[0])  # (HW, K), a view of out

    def call() -> np.ndarray:
        np.matmul(*operands, out=out_2d)
        return out

    return call, out


def onnxruntime_version() -> str | None:
    """onnxruntime's version when both it and onnx import (the int8 baseline needs
    both), else None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def onnxruntime_qlinearconv(
    inputs: Int8Inputs, threads: int
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """ONNX Runtime's QLinearConv on ``inputs``, the int8 baseline: returns ``(call, out)``.

    Builds a one-node ONNX model (opset 13, the operands as initializers, 1x1 kernel)
    and its session once: CPU execution provider, ``intra_op_num_threads = threads``,
    ``inter_op_num_threads = 1``, sequential execution, all graph optimizations on
    (``ORT_ENABLE_ALL``, ONNX Runtime's default). The input is always NCHW, QLinearConv's
    layout: NHWC ``inputs`` are transposed once, here, untimed. ``call()`` runs the
    session through an I/O binding that reads ``x`` in place and writes the
    preallocated uint8 NCHW ``out``, and returns ``out``.

    onnxruntime and onnx are imported here, not at module import (ImportError when
    either is missing; ``onnxruntime_version()`` tells first). ONNX Runtime's worker
    threads spin after a run: see ``fastpw._timing.ORT_IDLE_SECONDS``.
    """
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]
    from onnx import TensorProto, helper, numpy_helper

    x = inputs.x_nchw
    n, c, h, w = x.shape
    k = inputs.weight.shape[0]
    x_scale, x_zero_point = inputs.x_quant
    w_scale, _ = inputs.w_quant
    y_scale, y_zero_point = inputs.y_quant
    initializers = [
        numpy_helper.from_array(np.array(x_scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(x_zero_point, np.uint8), "x_zero_point"),
        numpy_helper.from_array(inputs.weight.reshape(k, c, 1, 1), "w"),
        numpy_helper.from_array(np.asarray(w_scale, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(k, np.int8), "w_zero_point"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(y_zero_point, np.uint8), "y_zero_point"),
        numpy_helper.from_array(inputs.bias, "bias"),
    ]
    node = helper.make_node(
        "QLinearConv",
        ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point"]
        + ["y_scale", "y_zero_point", "bias"],
        ["y"],
        kernel_shape=[1, 1],
    )
    graph = helper.make_graph(
        [node],
        "qlinearconv1x1",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [n, k, h, w])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="fastpw._peers"
    )
    model.ir_version = 8  # opset 13's IR version: read by every onnxruntime since 1.8

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    out = np.empty((n, k, h, w), np.uint8)
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
    return call, out
