"""Pickle, copy and multiprocessing of the layers: by their parameters, repacked on load.

``Conv1x1``, ``QConv1x1`` and ``quant.QuantizedSequential`` keep their constructor's
arguments (weights, bias, qparams, layout, stride, groups, activation, out_dtype) in a
pickle, never the packed panels, and build again when loaded: for the kernel family
active in the loading process. So a loaded layer gives the original's bits on the same
family; on another family, int8 results are the same bits (the int8 arithmetic is exact)
and float32 ones are within fastpw.testing's bound (families sum in other orders).
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import pickle
import pickletools

import numpy as np
import pytest

import fastpw
from fastpw.quant import QuantizedSequential
from fastpw.testing import assert_matches_reference

ISAS = fastpw.available_isas()
PROTOCOLS = list(range(pickle.HIGHEST_PROTOCOL + 1))
N, C, H, W, K = 2, 12, 5, 7, 18  # C and K divide by every groups value used below
SPAWN_TIMEOUT_S = 120  # a worker that hangs fails the test instead of the run

# (id, Conv1x1 keyword arguments; "bias": whether to give one)
FLOAT_CASES = [
    ("nchw", dict()),
    ("nhwc-bias-relu", dict(layout="NHWC", bias=True, activation="relu")),
    ("nchw-groups-stride-relu6", dict(groups=3, stride=2, bias=True, activation="relu6")),
    ("nhwc-groups-clamp", dict(layout="NHWC", groups=2, activation=(-0.5, 0.75))),
    ("nchw-stride-pair-bias-clamp", dict(stride=(1, 2), bias=True, activation=(0.0, 2.0))),
    ("nhwc-lowercase-stride-relu", dict(layout="nhwc", stride=(2, 3), activation="relu")),
]

# (id, QConv1x1 keyword arguments; "bias": whether to give one, "per_channel": w_quant
# scales per output channel or per tensor, "x_dtype": the input's dtype)
QUANTIZED_CASES = [
    ("u8-nchw-per-channel", dict(per_channel=True, bias=True)),
    ("u8-nhwc-per-tensor-relu", dict(layout="NHWC", per_channel=False, activation="relu")),
    (
        "i8-nchw-groups-relu6",
        dict(x_dtype=np.int8, groups=3, bias=True, per_channel=True, activation="relu6"),
    ),
    ("u8-out-int8-stride", dict(out_dtype=np.int8, stride=2, per_channel=False, bias=True)),
    ("i8-out-uint8-clamp", dict(x_dtype=np.int8, out_dtype=np.uint8, activation=(-1.0, 1.5))),
    ("u8-out-int32", dict(out_dtype=np.int32, layout="NHWC", groups=2, bias=True)),
    ("i8-out-float32-relu", dict(x_dtype=np.int8, out_dtype=np.float32, activation="relu")),
    ("u8-out-float32-no-y_quant", dict(out_dtype=np.float32, y_quant=None, stride=(1, 3))),
]


@pytest.fixture
def restore_family():
    """Whatever family a test forces, the one active before it is active after it."""
    before = fastpw.isa()
    try:
        yield
    finally:
        fastpw._set_isa(before)


def float_layer(case):
    settings = dict(case)
    rng = np.random.default_rng(1)
    groups = settings.get("groups", 1)
    weight = rng.standard_normal((K, C // groups)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32) if settings.pop("bias", False) else None
    return fastpw.Conv1x1(weight, bias, **settings)


def quantized_layer(case):
    settings = dict(case)
    rng = np.random.default_rng(2)
    groups = settings.get("groups", 1)
    x_dtype = np.dtype(settings.pop("x_dtype", np.uint8))
    weight = rng.integers(-127, 128, (K, C // groups)).astype(np.int8)
    bias = rng.integers(-5000, 5000, K).astype(np.int32) if settings.pop("bias", False) else None
    if settings.pop("per_channel", True):
        w_scale = rng.uniform(0.002, 0.02, K).astype(np.float32)
    else:
        w_scale = 0.007
    y_zero_point = -3 if (settings.get("out_dtype") or x_dtype) == np.int8 else 120
    settings.setdefault("y_quant", (0.37, y_zero_point))
    x_zero_point = 5 if x_dtype == np.int8 else 128
    layer = fastpw.QConv1x1(
        weight, bias, x_quant=(0.05, x_zero_point), w_quant=(w_scale, 0), **settings
    )
    return layer, x_dtype


def float_input(layer):
    rng = np.random.default_rng(3)
    shape = (N, C, H, W) if layer.layout == "NCHW" else (N, H, W, C)
    return rng.standard_normal(shape).astype(np.float32)


def quantized_input(layer, x_dtype):
    rng = np.random.default_rng(4)
    shape = (N, C, H, W) if layer.layout == "NCHW" else (N, H, W, C)
    info = np.iinfo(x_dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(x_dtype)


FLOAT_ATTRIBUTES = ("layout", "stride", "groups", "activation", "in_channels", "out_channels")
QUANTIZED_ATTRIBUTES = FLOAT_ATTRIBUTES + ("x_quant", "w_quant", "y_quant", "out_dtype")


def assert_same_value(a, b, what):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert type(a) is type(b) and a.dtype == b.dtype, (what, a, b)
        np.testing.assert_array_equal(a, b, err_msg=what)
    elif isinstance(a, tuple):
        assert type(a) is type(b) and len(a) == len(b), (what, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            assert_same_value(x, y, f"{what}[{i}]")
    else:
        assert type(a) is type(b) and a == b, (what, a, b)


def assert_same_layer(loaded, original, attributes):
    """Same class and parameters; its own arrays, read-only as the original's."""
    assert type(loaded) is type(original)
    for name in attributes:
        assert_same_value(getattr(loaded, name), getattr(original, name), name)
    for name in ("weight", "bias"):
        array, before = getattr(loaded, name), getattr(original, name)
        if before is None:
            assert array is None, name
            continue
        assert array.dtype == before.dtype and array.shape == before.shape, name
        np.testing.assert_array_equal(array, before, err_msg=name)
        assert not array.flags.writeable, f"the loaded layer's {name} is writeable"
        assert not np.shares_memory(array, before), f"the loaded layer shares {name}"
    w_scale = getattr(loaded, "w_quant", (0.0,))[0]
    if isinstance(w_scale, np.ndarray):
        assert not w_scale.flags.writeable, "the loaded layer's w_quant scales are writeable"


def assert_bitwise(got, expected, what):
    assert got.dtype == expected.dtype and got.shape == expected.shape, what
    assert got.tobytes() == expected.tobytes(), f"{what}: not the same bits"


def round_trips(layer):
    """(how, loaded copy) for every pickle protocol, copy.copy and copy.deepcopy."""
    for protocol in PROTOCOLS:
        yield f"pickle protocol {protocol}", pickle.loads(pickle.dumps(layer, protocol))
    buffers = []
    data = pickle.dumps(layer, 5, buffer_callback=buffers.append)
    yield "pickle protocol 5, out-of-band buffers", pickle.loads(data, buffers=buffers)
    yield "copy.copy", copy.copy(layer)
    yield "copy.deepcopy", copy.deepcopy(layer)


# --------------------------------------------------------------- same family: same bits


@pytest.mark.parametrize("case", [c[1] for c in FLOAT_CASES], ids=[c[0] for c in FLOAT_CASES])
def test_float_layer_round_trips(case):
    layer = float_layer(case)
    x = float_input(layer)
    expected = layer(x)
    for how, loaded in round_trips(layer):
        assert_same_layer(loaded, layer, FLOAT_ATTRIBUTES)
        assert loaded.isa == layer.isa, how
        assert_bitwise(loaded(x), expected, how)
        assert_bitwise(loaded(x, num_threads=1), expected, how)


@pytest.mark.parametrize(
    "case", [c[1] for c in QUANTIZED_CASES], ids=[c[0] for c in QUANTIZED_CASES]
)
def test_quantized_layer_round_trips(case):
    layer, x_dtype = quantized_layer(case)
    x = quantized_input(layer, x_dtype)
    expected = layer(x)
    for how, loaded in round_trips(layer):
        assert_same_layer(loaded, layer, QUANTIZED_ATTRIBUTES)
        assert loaded.isa == layer.isa, how
        assert_bitwise(loaded(x), expected, how)


def test_from_float_layer_round_trips():
    """A layer from from_float pickles its quantized weights, not the float ones: loading
    does not quantize again."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((K, C)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    layer = fastpw.QConv1x1.from_float(
        weight, bias, x_quant=(0.03, 128), y_quant=(0.2, 100), activation="relu6"
    )
    x = quantized_input(layer, np.uint8)
    for how, loaded in round_trips(layer):
        assert_same_layer(loaded, layer, QUANTIZED_ATTRIBUTES)
        assert_bitwise(loaded(x), layer(x), how)


def make_network(layout, x_dtype, per_channel):
    """A three-layer chain calibrated as in test_quant.py, and an input for it."""
    rng = np.random.default_rng(6)
    layers = []
    for (c, k), activation in zip(
        [(8, 32), (32, 16), (16, 4)], ["relu", "relu6", None], strict=False
    ):
        weight = (rng.normal(0, 1, (k, c)) / math.sqrt(c)).astype(np.float32)
        bias = rng.normal(0, 0.3, k).astype(np.float32)
        layers.append(fastpw.Conv1x1(weight, bias, layout=layout, activation=activation))
    shape = (2, 8, 6, 7) if layout == "NCHW" else (2, 6, 7, 8)
    calibration = [rng.normal(0.5, 1.5, shape).astype(np.float32) for _ in range(3)]
    net = QuantizedSequential.calibrate(
        layers, calibration, x_dtype=x_dtype, per_channel=per_channel
    )
    return net, rng.normal(0.5, 1.5, shape).astype(np.float32)


def assert_same_network(loaded, net):
    assert type(loaded) is QuantizedSequential
    assert loaded.x_dtype == net.x_dtype
    assert len(loaded.layers) == len(net.layers) == len(loaded.float_layers)
    for what, a, b in zip(
        ["boundary qparams"] * len(net.boundary_qparams),
        loaded.boundary_qparams,
        net.boundary_qparams,
        strict=False,
    ):
        assert_same_value(tuple(a), tuple(b), what)
    for a, b in zip(loaded.layers, net.layers, strict=False):
        assert_same_layer(a, b, QUANTIZED_ATTRIBUTES)
    for a, b in zip(loaded.float_layers, net.float_layers, strict=False):
        assert_same_layer(a, b, FLOAT_ATTRIBUTES)


@pytest.mark.parametrize(
    "layout,x_dtype,per_channel",
    [("NCHW", np.uint8, True), ("NHWC", np.int8, False)],
    ids=["nchw-uint8-per-channel", "nhwc-int8-per-tensor"],
)
def test_quantized_sequential_round_trips(layout, x_dtype, per_channel):
    net, x = make_network(layout, x_dtype, per_channel)
    expected = net(x)
    xq = net.quantize_input(x)
    expected_q = net.run_quantized(xq)
    for how, loaded in round_trips(net):
        if how == "copy.copy":  # shallow, as for any Python object: the same layers
            assert loaded.layers == net.layers and loaded.float_layers == net.float_layers
        else:
            assert_same_network(loaded, net)
        assert_bitwise(loaded(x), expected, how)
        assert_bitwise(loaded.run_quantized(xq), expected_q, how)
        assert_bitwise(loaded.float_layers[0](x), net.float_layers[0](x), how)


def test_pickled_state_names_no_family():
    """Nothing in the pickle ties it to this machine's kernel family: no family name, no
    packed panels (whose layout depends on the family's tile)."""
    layer, _ = quantized_layer(dict(per_channel=True, bias=True))
    net, _ = make_network("NCHW", np.uint8, True)
    for obj in (float_layer(dict(bias=True, activation="relu")), layer, net):
        for protocol in PROTOCOLS:
            strings = {  # names, keys and other text (array data is bytes)
                arg
                for _, arg, _ in pickletools.genops(pickle.dumps(obj, protocol))
                if isinstance(arg, str)
            }
            forbidden = strings.intersection(ISAS + ["isa", "_plan"])
            assert not forbidden, (type(obj).__name__, protocol, forbidden)


def test_loaded_weights_are_read_only_copies():
    """A loaded layer owns read-only copies, whatever the pickle's arrays were: writing
    into them would change the weights behind the packed panels' back."""
    layer, _ = quantized_layer(dict(per_channel=True, bias=True))
    buffers = []
    data = pickle.dumps(layer, 5, buffer_callback=buffers.append)
    writable = [bytearray(buffer.raw()) for buffer in buffers]  # buffers the caller may reuse
    loaded = pickle.loads(data, buffers=writable)
    for name in ("weight", "bias"):
        array = getattr(loaded, name)
        assert not array.flags.writeable, name
        with pytest.raises(ValueError):
            array[0] = 0
    for buffer in writable:
        buffer[:] = bytes(len(buffer))  # the loaded layer must not see this
    x = quantized_input(layer, np.uint8)
    assert_bitwise(loaded(x), layer(x), "after the buffers were overwritten")


# ------------------------------------------------------- loaded under another family


def loaded_under_other_families(obj):
    """(family, obj loaded there) for every family but the best, which obj is built for."""
    data = pickle.dumps(obj)
    for other in ISAS[1:]:
        fastpw._set_isa(other)
        yield other, pickle.loads(data)


@pytest.mark.parametrize("case", [c[1] for c in FLOAT_CASES], ids=[c[0] for c in FLOAT_CASES])
def test_float_layer_loads_for_the_loading_family(case, restore_family):
    fastpw._set_isa(ISAS[0])
    layer = float_layer(case)
    settings = {name: getattr(layer, name) for name in ("layout", "stride", "groups", "activation")}
    x = float_input(layer)
    for other, loaded in loaded_under_other_families(layer):
        assert loaded.isa == fastpw.isa("float32")  # the kernel `other` selects
        y = loaded(x)
        assert_matches_reference(y, x, layer.weight, layer.bias, **settings)
        fresh = fastpw.Conv1x1(layer.weight, layer.bias, **settings)  # built on that family
        assert_bitwise(y, fresh(x), f"loaded vs built under {other}")


@pytest.mark.parametrize(
    "case", [c[1] for c in QUANTIZED_CASES], ids=[c[0] for c in QUANTIZED_CASES]
)
def test_quantized_layer_loads_for_the_loading_family(case, restore_family):
    fastpw._set_isa(ISAS[0])
    layer, x_dtype = quantized_layer(case)
    x = quantized_input(layer, x_dtype)
    expected = layer(x)
    for other, loaded in loaded_under_other_families(layer):
        assert loaded.isa == fastpw.isa("int8")  # the kernel `other` selects
        assert_bitwise(loaded(x), expected, f"loaded under {other}")


def test_quantized_sequential_loads_for_the_loading_family(restore_family):
    fastpw._set_isa(ISAS[0])
    net, x = make_network("NHWC", np.uint8, True)
    expected = net(x)
    for other, loaded in loaded_under_other_families(net):
        assert all(layer.isa == fastpw.isa("int8") for layer in loaded.layers)
        assert all(layer.isa == fastpw.isa("float32") for layer in loaded.float_layers)
        assert_bitwise(loaded(x), expected, f"loaded under {other}")


# ------------------------------------------------------------------- multiprocessing


def test_layers_cross_a_spawned_process():
    """A fresh interpreter (the "spawn" start method, as on macOS and Windows) unpickles
    the layers, runs them and sends results and layers back. One worker for all of it:
    starting one costs about a second."""
    float_layer_ = float_layer(dict(layout="NHWC", bias=True, activation="relu6", groups=2))
    qlayer, x_dtype = quantized_layer(dict(per_channel=True, bias=True, stride=2))
    net, x_net = make_network("NCHW", np.uint8, True)
    x_float = float_input(float_layer_)
    x_q = quantized_input(qlayer, x_dtype)
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # terminated on exit
        family = pool.apply_async(fastpw.isa)
        y_float = pool.apply_async(float_layer_, (x_float,))
        y_q = pool.apply_async(qlayer, (x_q,))
        y_net = pool.apply_async(net, (x_net,))
        back = pool.apply_async(copy.copy, (qlayer,))  # loaded there, pickled again
        family = family.get(timeout=SPAWN_TIMEOUT_S)
        results = [r.get(timeout=SPAWN_TIMEOUT_S) for r in (y_float, y_q, y_net, back)]
    y_float, y_q, y_net, back = results
    assert_bitwise(y_q, qlayer(x_q), "QConv1x1 in the worker")
    assert_bitwise(y_net, net(x_net), "QuantizedSequential in the worker")
    assert_same_layer(back, qlayer, QUANTIZED_ATTRIBUTES)
    assert_bitwise(back(x_q), qlayer(x_q), "QConv1x1 back from the worker")
    if family == fastpw.isa():
        assert_bitwise(y_float, float_layer_(x_float), "Conv1x1 in the worker")
    else:  # (FASTPW_ISA differs there): the float bound, as for any other family
        assert_matches_reference(
            y_float,
            x_float,
            float_layer_.weight,
            float_layer_.bias,
            layout="NHWC",
            groups=2,
            activation="relu6",
        )
