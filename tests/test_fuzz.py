"""API fuzzing: arbitrary arguments thrown at every public entry point.

Targets: ``conv1x1`` (float and quantized paths), ``Conv1x1`` and ``QConv1x1`` (build,
then call), and ``fastpw.quant``'s ``quantize``, ``dequantize``, ``choose_qparams``,
``Observer``, ``fold_batchnorm``, ``sqnr`` and ``QuantizedSequential.calibrate``.

Every example starts from a valid call and then, with some probability, changes its
arguments: other dtypes (bool, complex, object, datetime64, float16, ...), 0 to 6
dimensions, zero-size and huge dimensions (zero-stride views of 2**24..2**27 pixels,
which cost no memory), negative and zero strides, read-only, misaligned, Fortran-ordered
and byte-swapped arrays, lists, scalars, None and strings in place of arrays, and
keyword and quantization parameters of the wrong type or value. Each change carries a
verdict taken from the documentation (README, docstrings):

- VALID: documented as accepted. The call must succeed.
- INVALID: documented (or, where the docs are silent, unmistakably meant) to be an
  error. The call must raise TypeError or ValueError.
- GRAY: the docs do not say (a numeric string as a scale, a list of float32 arrays as
  x, a non-native byte order, ...). The call may raise TypeError/ValueError or succeed.
- HUGE: the output would need at least a PiB. The call must not succeed; MemoryError
  is accepted as well as TypeError/ValueError (numpy's own answer to such a request).

An example is VALID when all its changes are; INVALID as soon as one is. Whatever the
verdict, a call that raises anything but TypeError/ValueError (IndexError,
OverflowError, SystemError, ...) fails the test, and so does one that modifies an input
(or, when it fails, its ``out``). A call that succeeds must give the independent
reference's result: ``fastpw.testing`` for the convolutions (float64 within its rigorous
float32 bound; the int64 quantized reference bit for bit), numpy float32 expressions of
the documented formulas for the quant helpers, bit for bit. Kernel families are drawn
per example (and the family a layer is built under may differ from the one it is
called under).

Each target has two tests: ``test_fuzz_<target>`` (200 examples that make no INVALID
change: valid calls in every arrangement, plus GRAY ones) and ``test_fuzz_<target>_changes``,
parametrized by a "focus": the kind of change that all of the item's 16-20 examples
make (``x``, ``qparams:scale``, ``fault:none``, ...; "mixed" items combine random
changes). So every kind of change gets its share of examples in every run (left alone,
hypothesis' generation, which mutates earlier examples, leaves some rare nested choices
out of a whole run of hundreds), and a failure's test id names the kind of change. In
the "ci" profile that is 420 to 560 examples per target, 40-55 % of them valid; "dev"
runs ten times as many. The counts (examples per target, by verdict and outcome, replays
and shrinking of failing examples included) are printed at the end of the run in a
"fastpw API fuzzing" section.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layouts import channel_axis, y_shape
from numpy.lib.stride_tricks import as_strided

import fastpw
from fastpw import QParams
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
    assert_matches_reference,
    dequantize_reference,
    qconv1x1_accumulators,
    qconv1x1_reference,
    qparams_reference,
    quantize_reference,
    wrap_to_int32,
)

FUZZ = settings(
    deadline=None,
    report_multiple_bugs=False,  # one bug per item: shrinking several costs minutes
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

# The fuzzing feeds overflowing values on purpose; numpy's RuntimeWarnings about them
# (overflow in a cast, log10 of 0) are expected noise here.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

ISAS = fastpw.available_isas()
LAYOUTS = ("NCHW", "NHWC")
EPS32 = float(np.finfo(np.float32).eps)
SMALL_BYTES = 1 << 20  # inputs up to this size are checked for modification

VALID, GRAY, INVALID, HUGE = "valid", "gray", "invalid", "huge"

# dtypes that are never right for a float32 / 8-bit argument
ODD_DTYPES = [
    "bool",
    "complex64",
    "complex128",
    "object",
    "datetime64[s]",
    "timedelta64[ms]",
    "float16",
    "float64",
    "longdouble",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "int64",
    "uint64",
    "U3",
    "S2",
    [("a", "<f4")],
]


# ---------------------------------------------------------------------------------------
# Bookkeeping: verdicts, outcomes, counts


class Case:
    """What an example passes, what it means, and the verdict of each change made."""

    def __init__(self, focus="clean"):
        # the kind of change this example makes for sure, and which one ("x:dtype")
        self.focus, _, self.detail = focus.partition(":")
        self.focus = self.focus.removesuffix("-2")  # ("mixed-2": a second item of "mixed")
        # no INVALID change but the focused one (the observer's batches keep to the axis)
        self.clean = self.focus != "mixed"
        self.notes = []  # (phase, verdict, text, promised exception type or None)
        self.huge_output = False
        self.args = {}

    def add(self, text, verdict=INVALID, phase="call", exc=None):
        """Record a change; `exc`: the exception type the docs (or test_api_errors.py)
        promise when this is the only INVALID change."""
        self.notes.append((phase, verdict, text, exc))
        if verdict == HUGE:
            self.huge_output = True

    def expect(self, phase=None):
        verdicts = {v for ph, v, *_ in self.notes if phase is None or ph == phase}
        if verdicts & {INVALID, HUGE}:
            return INVALID
        return GRAY if GRAY in verdicts else VALID

    def changes(self, phase=None):
        return "; ".join(
            f"{verdict} [{ph}] {text}" for ph, verdict, text, _ in self.notes if phase in (None, ph)
        )

    def promised_exception(self, phase=None):
        """The exception type promised for the only change (INVALID), if any."""
        changes = [n for n in self.notes if phase in (None, n[0]) and n[1] != VALID]
        return changes[0][3] if len(changes) == 1 and changes[0][1] == INVALID else None

    def __repr__(self):
        args = ", ".join(f"{name}={brief(value)}" for name, value in self.args.items())
        return f"Case({self.changes() or 'no changes: valid'} | {args})"


def brief(value):
    if isinstance(value, np.ndarray):
        flags = [] if value.flags.writeable else ["read-only"]
        if not value.flags.aligned:
            flags.append("misaligned")
        extra = "".join(", " + f for f in flags)
        return f"ndarray({value.shape}, {value.dtype}, strides={value.strides}{extra})"
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"<{type(value).__name__} of {len(value)}>"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(brief(v) for v in value)
        return (
            f"[{inner}]"
            if isinstance(value, list)
            else f"({inner}{',' if len(value) == 1 else ''})"
        )
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


COUNTS: dict[str, Counter] = defaultdict(Counter)


class _FuzzSummary:
    """A plugin registered by the module's fixture: prints COUNTS in the terminal summary."""

    def pytest_terminal_summary(self, terminalreporter):
        if not COUNTS:
            return
        terminalreporter.section("fastpw API fuzzing: examples per target")
        for target in sorted(COUNTS):
            c = COUNTS[target]
            memory = c["rejected: MemoryError"]
            failed = c["examples"] - c["accepted"] - c["rejected"] - memory
            terminalreporter.write_line(
                f"{target:<20} {c['examples']:5d} examples: {c[VALID]:4d} valid, "
                f"{c[INVALID] + c[HUGE]:4d} invalid, {c[GRAY]:4d} gray -> "
                f"{c['accepted']:4d} accepted and checked, "
                f"{c['rejected'] + memory:4d} rejected"
                + (f" ({memory} with MemoryError for >= 1 PiB)" if memory else "")
                + (f", {failed} FAILED the test" if failed else "")
            )


@pytest.fixture(scope="module", autouse=True)
def _fuzz_summary(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("fastpw-fuzz-summary"):
        manager.register(_FuzzSummary(), "fastpw-fuzz-summary")
    return None


def begin(target):
    """Count an example (at its start, so that failing runs are counted too)."""
    COUNTS[target]["examples"] += 1


def tally(target, case, outcome):
    """Count a finished example's verdict and outcome."""
    c = COUNTS[target]
    c[HUGE if case.huge_output else case.expect()] += 1
    c[outcome] += 1


class Rejected(Exception):
    """Raised by `attempt` when the call was (correctly) refused."""

    def __init__(self, outcome):
        self.outcome = outcome


def attempt(target, case, fn, phase=None, watch=()):
    """Run fn() under the contract and return its result, or raise Rejected.

    `watch`: arrays that must be unchanged after a failed call (an `out`)."""
    expect = case.expect(phase)
    saved = snapshot(watch)
    try:
        result = fn()
    except (TypeError, ValueError) as exc:
        assert str(exc).strip(), f"{target}: {type(exc).__name__} with an empty message"
        if expect == VALID:
            raise AssertionError(
                f"{target}: a call documented as valid raised {type(exc).__name__}: {exc}\n{case!r}"
            ) from exc
        promised = case.promised_exception(phase)
        if expect == INVALID and promised and not isinstance(exc, promised):
            raise AssertionError(
                f"{target}: {case.changes(phase)} raised {type(exc).__name__} ({exc}), "
                f"not the promised {promised.__name__}"
            ) from exc
        assert_unchanged(saved, f"{target} (failed call's out)")
        raise Rejected("rejected") from None
    except MemoryError:
        if not case.huge_output:
            raise
        raise Rejected("rejected: MemoryError") from None
    if expect == INVALID:
        raise AssertionError(
            f"{target}: accepted a call documented as an error: "
            f"{case.changes(phase)}; it returned {brief(result)}\n{case!r}"
        )
    return result


def snapshot(arrays):
    saved = []
    for a in arrays:
        if isinstance(a, np.ndarray) and a.dtype != object and a.nbytes <= SMALL_BYTES:
            saved.append((a, a.copy()))
    return saved


def assert_unchanged(saved, what):
    for a, before in saved:
        if a.tobytes() != before.tobytes():
            raise AssertionError(f"{what}: an array was modified: {brief(a)}")


@contextlib.contextmanager
def kernel_family(name):
    previous = fastpw._set_isa(name)
    try:
        yield
    finally:
        fastpw._set_isa(previous)


def chance(draw, percent):
    """True about `percent` % of the time; shrinks to False."""
    return draw(st.integers(0, 99)) >= 100 - percent


def faulty(draw, case, category, percent):
    """Whether to make the (INVALID or GRAY) change of `category` here: always in a case
    focused on it, about `percent` % of the time in a "mixed" case, else never."""
    if case.focus == category:
        return True
    return case.focus == "mixed" and chance(draw, percent)


def kinds(case, options, category):
    """`options`: only the "bad" ones in a case focused on `category`, all of them in a
    "mixed" case, all but the bad ones in the others."""
    if case.focus == category:
        return [o for o in options if o == "bad"]
    if case.focus == "mixed":
        return options
    return [o for o in options if o != "bad"]


def exotic(case):
    """Whether to draw rare VALID values too (1e308 clamp bounds, subnormal data, empty
    arrays with a 2**40 axis): in clean, mixed and "exotic" cases (which draw them for
    sure), not in other focused ones, so that a bug those values show fails the clean
    test and the exotic item, not every focused item as well."""
    return case.focus in ("clean", "mixed", "exotic")


def pick(draw, case, options, category):
    """One of `options`: the case's detail where it focuses on `category` with one."""
    if case.focus == category and case.detail:
        assert case.detail in options, (case.detail, options)
        return case.detail
    return draw(st.sampled_from(options))


def details(category, options):
    """Focus names for every detail of a category: "x:dtype", "x:ndim", ..."""
    return [f"{category}:{option}" for option in options]


def fuzz_settings(examples_per_item):
    """`examples_per_item` examples per test item in the "ci" profile, 10 times as many in
    "dev"."""
    scale = settings.default.max_examples / 200
    return settings(FUZZ, max_examples=max(examples_per_item, round(examples_per_item * scale)))


def seeded(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


# ---------------------------------------------------------------------------------------
# Arrays in odd memory arrangements


ARRANGEMENTS = ["contiguous"] * 3 + ["fortran", "negative", "strided", "misaligned"]
ARRANGEMENTS += ["broadcast", "zero-stride", "channels-last"]


def arrange(draw, values, case, name, phase, *, byteorder=GRAY, readonly=True, swap=False):
    """`values` (a fresh C-contiguous array) in a memory arrangement drawn at random.

    Most arrangements keep the values; "broadcast" and "zero-stride" repeat one slice
    (the reference sees the returned array, so that is fine). The byte-swapped variant
    (where `swap`, or now and then where that is VALID) changes the dtype to non-native
    order and gets verdict `byteorder`."""
    options = ARRANGEMENTS + (["byteswapped"] if byteorder == VALID else [])
    kind = "byteswapped" if swap else draw(st.sampled_from(options))
    shape = values.shape
    out = values
    if values.ndim == 0 and kind in ("fortran", "negative"):
        pass  # (numpy makes those 1-D or a scalar)
    elif kind == "fortran":
        out = np.asfortranarray(values)
    elif kind == "negative":
        out = np.flip(np.flip(values).copy())
    elif kind == "strided" and values.ndim:
        big = np.zeros(shape[:-1] + (2 * shape[-1],), values.dtype)
        if values.dtype.kind == "f":
            big[...] = np.nan  # poison what the view skips
        big[..., ::2] = values
        out = big[..., ::2]
    elif kind == "misaligned":
        raw = np.zeros(values.nbytes + 1, np.uint8)
        out = raw[1:].view(values.dtype).reshape(shape)
        out[...] = values
    elif kind in ("broadcast", "zero-stride") and any(s > 1 for s in shape):
        axis = draw(st.sampled_from([d for d, s in enumerate(shape) if s > 1]))
        one = np.take(values, [0], axis=axis)
        if kind == "broadcast":
            out = np.broadcast_to(one, shape)
        else:  # writeable, with a 0 stride: an input may be one
            strides = list(one.strides)
            strides[axis] = 0
            out = as_strided(one, shape, strides)
    elif kind == "channels-last" and values.ndim == 4:
        out = np.ascontiguousarray(values.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif kind == "byteswapped" and values.dtype.itemsize > 1:
        out = values.astype(values.dtype.newbyteorder())
        case.add(f"{name} in non-native byte order ({out.dtype.str})", byteorder, phase)
    if readonly and out.flags.writeable and chance(draw, 25):
        out.flags.writeable = False
    return out


def cast_to(values, dtype):
    """`values` as `dtype` where numpy can cast it, else zeros of that dtype."""
    values = np.asarray(values)
    dtype = np.dtype(dtype)
    if dtype.kind in "OUSV" or dtype.kind in "mM":
        with contextlib.suppress(TypeError, ValueError):
            if dtype.kind in "US":
                return values.astype(dtype)
            if dtype.kind == "O":
                return values.astype(object)
        return np.zeros(values.shape, dtype)
    with np.errstate(all="ignore"):
        return values.astype(dtype)


def draw_odd_dtype(draw, exclude=()):
    return np.dtype(draw(st.sampled_from([d for d in ODD_DTYPES if d not in exclude])))


# ---------------------------------------------------------------------------------------
# Shared keyword arguments of the convolutions


def draw_layout(draw, case, layout, phase):
    kind = draw(st.sampled_from(kinds(case, ["plain", "plain", "lower", "omit", "bad"], "layout")))
    if kind == "omit" and layout == "NCHW":
        return None
    if kind == "lower":
        return draw(st.sampled_from([layout.lower(), layout.capitalize()]))
    if kind == "bad":
        bad = draw(st.sampled_from(["XYZ", "NCWH", "", "NCHW ", 4, b"NCHW", ("NCHW",)]))
        promised = ValueError if isinstance(bad, str) else None
        case.add(f"layout={bad!r}", INVALID, phase, promised)
        return bad
    return layout


def draw_stride(draw, case, phase):
    """(meaning (sh, sw), argument or None for the default)."""
    kind = draw(
        st.sampled_from(
            kinds(case, ["omit", "int", "int", "pair", "list", "numpy", "huge", "bad"], "stride")
        )
    )
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if kind == "omit":
        return (1, 1), None
    if kind == "int":
        return (sh, sh), sh
    if kind == "pair":
        return (sh, sw), (sh, sw)
    if kind == "list":
        return (sh, sw), [sh, sw]
    if kind == "numpy":
        return (sh, sw), (np.int64(sh), np.int32(sw))
    if kind == "huge":
        return (2**70, 2**70), 2**70
    bad = draw(
        st.sampled_from(
            [0, -1, (1, 0), (0, 1), (-2, 1), (1,), (1, 2, 3), "2", 1.5, (1.0, 1), True, (True, 1)]
        )
    )
    boolean = bad is True or (isinstance(bad, tuple) and bad[0] is True)
    verdict = GRAY if boolean else INVALID
    promised = ValueError if not boolean and bad in (0, -1, (1, 0), (0, 1), (-2, 1)) else None
    case.add(f"stride={bad!r}", verdict, phase, promised if verdict == INVALID else None)
    return (1, 1), bad


def draw_groups_arg(draw, case, groups, phase):
    kind = draw(st.sampled_from(kinds(case, ["plain", "plain", "numpy", "bad"], "groups")))
    if kind == "plain":
        return None if groups == 1 and chance(draw, 50) else groups
    if kind == "numpy":
        return np.int64(groups)
    bad = draw(st.sampled_from([0, -1, float(groups), str(groups), True]))
    promised = ValueError if bad in (0, -1) and bad is not True else None
    verdict = GRAY if bad is True else INVALID
    case.add(f"groups={bad!r} (meaning {groups})", verdict, phase, promised)
    return bad


def draw_activation(draw, case, phase):
    """(meaning for the reference, argument)."""
    kind = draw(
        st.sampled_from(kinds(case, ["none", "named", "clamp", "clamp", "bad"], "activation"))
    )
    if faulty(draw, case, "activation-gray", 10):
        kind = "gray"
    if case.focus == "exotic":
        kind = "clamp"
    if kind == "none":
        return None, None
    if kind == "named":
        name = draw(st.sampled_from(["relu", "relu6"]))
        return name, name
    if kind == "clamp":
        bound = st.one_of(
            st.floats(-8, 8, width=32),
            st.sampled_from([0.0, -math.inf, math.inf]),
            st.integers(-10, 10),
        )
        if exotic(case):
            bound = st.one_of(bound, st.sampled_from([1e300, -1e300, 1e307, 1e308, -1e308]))
        big = st.sampled_from([1e300, -1e300, 1e307, -1e307, 1e308, -1e308, 3.5e38])
        lo, hi = sorted([draw(big if case.focus == "exotic" else bound), draw(bound)])
        if any(math.isfinite(b) and abs(b) > 1e30 for b in (lo, hi)):
            case.add(f"activation ({lo}, {hi}): a finite bound beyond 1e30", VALID, phase)
        return (lo, hi), (lo, hi)
    if kind == "gray":
        option = draw(st.sampled_from(["RELU", "Relu6", "list", "huge-int", "numpy"]))
        if option == "list":
            case.add("activation as a [lo, hi] list", GRAY, phase)
            return (-1.0, 2.0), [-1.0, 2.0]
        if option == "huge-int":
            case.add("activation=(0, 10**400): a finite real bound beyond float", GRAY, phase)
            return (0.0, math.inf), (0, 10**400)
        if option == "numpy":
            return (-0.5, 0.5), (np.float32(-0.5), np.float64(0.5))
        case.add(f"activation={option!r} (not lower case)", GRAY, phase)
        return option.lower(), option
    bad = draw(
        st.sampled_from(
            ["gelu", "", (3.0, 1.0), (math.nan, 1.0), (0.0, math.nan), (1.0,), (0, 1, 2), 6]
            + [("a", 1), (True, 1.0), (None, 1.0), (1j, 2.0)]
        )
    )
    case.add(f"activation={bad!r}", INVALID, phase)
    return None, bad


def draw_threads(draw, case, phase="call"):
    kind = draw(
        st.sampled_from(kinds(case, ["omit", "omit", "int", "numpy", "huge", "bad"], "threads"))
    )
    if kind == "omit":
        return None
    if kind == "int":
        return draw(st.integers(1, 4))
    if kind == "numpy":
        return np.int64(2)
    if kind == "huge":
        return draw(st.sampled_from([10**6, 2**80]))
    bad = draw(st.sampled_from([0, -1, -(2**80), 2.5, 2.0, "2", [2], np.float64(2), True]))
    promised = ValueError if isinstance(bad, int) and not isinstance(bad, bool) else None
    case.add(f"num_threads={bad!r}", GRAY if bad is True else INVALID, phase, promised)
    return bad


def draw_out(draw, case, shape, dtype, x, phase, layout, swap_out=False):
    """(out argument or None, (buffer, sentinel copy) for a channel slice, or None)."""
    dtype = np.dtype(dtype)
    options = ["none", "none", "none", "fresh", "slice", "arranged"]
    if case.focus == "mixed":
        options += ["readonly", "dtype", "shape", "list", "overlap-x"]
    if case.focus == "out":
        options = ["readonly", "dtype", "shape", "list", "overlap-x"]
    if case.focus == "byteorder" and swap_out:
        options = ["byteswapped"]
    kind = draw(st.sampled_from(options))
    if kind == "none" or math.prod(shape) * dtype.itemsize > SMALL_BYTES:
        return None, None
    if kind == "fresh":
        return np.empty(shape, dtype), None
    if kind == "slice" and len(shape) == 4:
        axis = channel_axis(layout)
        extra = draw(st.integers(1, 3))
        before = draw(st.integers(0, extra))
        big = list(shape)
        big[axis] += extra
        buffer = np.full(big, 77, dtype)
        index = [slice(None)] * 4
        index[axis] = slice(before, before + shape[axis])
        return buffer[tuple(index)], (buffer, buffer.copy(), tuple(index))
    if kind == "arranged":
        out = arrange(draw, np.zeros(shape, dtype), case, "out", phase, readonly=False)
        if out.flags.writeable and (out.size < 2 or min(out.strides) != 0):
            return out, None
        return np.empty(shape, dtype), None
    if kind == "readonly":
        out = np.zeros(shape, dtype)
        out.flags.writeable = False
        case.add("read-only out", INVALID, phase, exc=ValueError)
        return out, None
    if kind == "dtype":
        other = draw(st.sampled_from(["float64", "float32", "int32", "uint8", "int8", "bool"]))
        if np.dtype(other) != dtype:
            case.add(f"out of dtype {other} (expected {dtype})", INVALID, phase)
            return np.zeros(shape, other), None
        return None, None
    if kind == "shape" and len(shape):
        bad = list(shape)
        bad[draw(st.integers(0, len(shape) - 1))] += 1
        if math.prod(bad) * dtype.itemsize > SMALL_BYTES:
            return None, None
        case.add(f"out of shape {tuple(bad)} (expected {shape})", INVALID, phase, ValueError)
        return np.zeros(bad, dtype), None
    if kind == "list":
        case.add("out as a list", INVALID, phase)
        return np.zeros(shape, dtype).tolist(), None
    if kind == "overlap-x":
        if (
            isinstance(x, np.ndarray)
            and x.shape == shape
            and x.dtype == dtype
            and x.flags.writeable
            and x.size
        ):
            case.add("out is x itself", INVALID, phase, exc=ValueError)
            return x, None
        return None, None
    if kind == "byteswapped" and dtype.itemsize > 1:
        case.add(f"out in non-native byte order {dtype.newbyteorder().str}", GRAY, phase)
        return np.zeros(shape, dtype.newbyteorder()), None
    return None, None


# ---------------------------------------------------------------------------------------
# Convolution problems (float or quantized), with the meaning kept for the reference


def draw_scale(draw, low=1e-3, high=1.0):
    return float(np.float32(10 ** draw(st.floats(math.log10(low), math.log10(high)))))


def draw_qpair(draw, case, name, scale, zero_point, phase):
    """A valid (or gray) spelling of the pair (scale, zero_point).

    Returns (meaning scale, meaning zero point, argument)."""
    form = draw(st.sampled_from(["tuple", "tuple", "QParams", "list", "numpy", "0-d", "1-element"]))
    if faulty(draw, case, "qparams-gray", 8):
        form = draw(st.sampled_from(["str-scale", "iterator", "dict", "bool-scale"]))
    if form == "tuple":
        return scale, zero_point, (scale, zero_point)
    if form == "QParams":
        return scale, zero_point, QParams(scale, zero_point)
    if form == "list":
        return scale, zero_point, [scale, zero_point]
    if form == "numpy":
        return scale, zero_point, (np.float32(scale), np.int64(zero_point))
    if form == "0-d":
        return scale, zero_point, (np.array(scale), np.array(zero_point))
    if form == "1-element":  # shape (1,), as ONNX initializers often hold per-tensor values
        return scale, zero_point, (np.array([scale]), np.array([zero_point]))
    if np.ndim(scale) != 0:
        return scale, zero_point, (scale, zero_point)
    if form == "str-scale":
        case.add(f"{name} scale as the string {str(scale)!r}", GRAY, phase)
        return scale, zero_point, (str(scale), zero_point)
    if form == "iterator":
        case.add(f"{name} as an iterator", GRAY, phase)
        return scale, zero_point, iter((scale, zero_point))
    if form == "dict" and scale != zero_point:
        case.add(f"{name} as a dict {{scale: ..., zero_point: ...}}", GRAY, phase)
        return scale, zero_point, {scale: "s", zero_point: "z"}
    if form == "bool-scale":
        case.add(f"{name} scale True (meaning 1.0)", GRAY, phase)
        return 1.0, zero_point, (True, zero_point)
    return scale, zero_point, (scale, zero_point)


def bad_qpair(draw, case, name, scale, zero_point, phase, zp_range):
    """An invalid spelling or value for a (scale, zero_point) pair."""
    lo, hi = zp_range
    promised = {
        "missing": TypeError,
        "scale 0": ValueError,
        "negative scale": ValueError,
        "NaN scale": ValueError,
        "infinite scale": ValueError,
        "zero point above the range": ValueError,
        "zero point below the range": ValueError,
    }
    options = [
        ("missing", None),
        ("a bare scale", scale),
        ("a 1-tuple", (scale,)),
        ("a 3-tuple", (scale, zero_point, 0)),
        ("scale 0", (0.0, zero_point)),
        ("negative scale", (-0.25, zero_point)),
        ("NaN scale", (math.nan, zero_point)),
        ("infinite scale", (math.inf, zero_point)),
        ("scale beyond float32", (1e39, zero_point)),
        ("scale 'a'", ("a", zero_point)),
        ("scale None", (None, zero_point)),
        ("complex scale", (1j, zero_point)),
        ("empty scale array", (np.zeros(0), zero_point)),
        ("2-D scale", (np.full((1, 1), 0.5), zero_point)),
        ("zero point above the range", (scale, hi + 1)),
        ("zero point below the range", (scale, lo - 1)),
        ("huge zero point", (scale, 2**70)),
        ("zero point 1.5", (scale, 1.5)),
        ("zero point '1'", (scale, "1")),
        ("zero point None", (scale, None)),
        ("zero point NaN", (scale, math.nan)),
    ]
    what, arg = draw(st.sampled_from(options))
    case.add(f"{name}: {what} ({brief(arg)})", INVALID, phase, promised.get(what))
    return arg


CONV_X_FAULTS = ["dtype", "ndim", "channels", "list", "arrays", "scalar"]
WEIGHT_FAULTS = ["dtype", "kernel", "ndim", "empty", "K", "list", "rows"]
BIAS_FAULTS = ["dtype", "length", "2d", "0d", "list"]


@st.composite
def conv_problems(draw, quantized, focus):
    """A convolution problem: case.args holds the arguments, case.p their meaning.

    Arguments split in `build` (weight, bias, layout, ... as Conv1x1/QConv1x1 take
    them) and `call` (x, out, num_threads)."""
    case = Case(focus)
    swap = None  # the argument given in non-native byte order
    if case.focus == "byteorder":
        swap = draw(
            st.sampled_from(["bias", "out"] if quantized else ["x", "weight", "bias", "out"])
        )
    p = {}
    build, call = {}, {}
    rng = seeded(draw)
    layout = draw(st.sampled_from(LAYOUTS))
    p["layout"] = layout
    build["layout"] = draw_layout(draw, case, layout, "build")
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, kg = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    channels, out_channels = cg * groups, kg * groups
    p["groups"] = groups
    build["groups"] = draw_groups_arg(draw, case, groups, "build")

    # x's shape: small, or huge (zero-stride) with an output that is tiny, empty or
    # absurd (>= 1 PiB); never in between, so nothing here allocates or computes much.
    huge = draw(st.sampled_from([None] * 9 + ["tiny-out", "empty"] + kinds(case, ["bad"], "")))
    if case.focus == "huge":
        huge = "bad"
    if huge:
        n = {"tiny-out": 2, "empty": 0, "bad": 1}[huge]
        h, w = 2 ** draw(st.integers(24, 27)), 2 ** draw(st.integers(24, 27))
        stride_meaning, stride_arg = (1, 1), None
        if huge == "tiny-out":
            stride_meaning = (h, w * draw(st.sampled_from([1, 2])))
            stride_arg = stride_meaning
        elif huge == "bad":  # an absurd output
            case.add(f"output of {n}x{out_channels}x{h}x{w} elements", HUGE, "call")
    else:
        n = draw(st.sampled_from([1, 2, 3, 1, 2, 0]))
        h = draw(st.integers(1, 6)) if not chance(draw, 8) else 0
        w = draw(st.integers(1, 6)) if not chance(draw, 8) else 0
        stride_meaning, stride_arg = draw_stride(draw, case, "build")
    p["stride"] = stride_meaning
    build["stride"] = stride_arg
    p["shape"] = (n, channels, h, w)
    xshape = (n, channels, h, w) if layout == "NCHW" else (n, h, w, channels)

    # weight, bias, x values (and quantization parameters)
    if quantized:
        x_dtype = np.dtype(draw(st.sampled_from([np.uint8, np.int8])))
        qmin, qmax = QDTYPE_RANGES[x_dtype]
        weight = rng.integers(-128, 128, (out_channels, cg)).astype(np.int8)
        bias = rng.integers(-(2**20), 2**20, out_channels).astype(np.int32)
        if huge:
            base = rng.integers(qmin, qmax + 1, channels).astype(x_dtype)
        else:
            values = rng.integers(qmin, qmax + 1, xshape).astype(x_dtype)
    else:
        x_dtype = np.dtype(np.float32)
        weight = rng.standard_normal((out_channels, cg)).astype(np.float32)
        bias = rng.standard_normal(out_channels).astype(np.float32)
        if huge:
            base = rng.standard_normal(channels).astype(np.float32)
        else:
            values = rng.standard_normal(xshape).astype(np.float32)
            if chance(draw, 10):
                specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
                mask = rng.random(xshape) < 0.1
                values[mask] = rng.choice(specials, mask.sum())
    if huge:
        strides = [0, 0, 0, 0]
        strides[channel_axis(layout)] = base.itemsize
        x = as_strided(base, xshape, strides, writeable=False)
        case.add(f"x of shape {xshape} with zero strides (huge: {huge})", VALID, "call")
    else:
        x = arrange(draw, values, case, "x", "call", swap=swap == "x")
    p["x"] = x
    call["x"] = x

    def filled(shape, dtype):  # (a zero-stride view where x is huge)
        one = cast_to(np.ones(1, np.float32), dtype)
        return np.broadcast_to(one[0], shape) if huge else np.full(shape, one[0], one.dtype)

    # faults in x
    if faulty(draw, case, "x", 25):
        fault = pick(draw, case, CONV_X_FAULTS, "x")
        if fault == "dtype":
            dtype = draw_odd_dtype(draw, exclude=("int8", "uint8") if quantized else ())
            if not quantized and dtype.kind in "iu" and dtype.itemsize == 1:
                # an 8-bit image for float weights: told to convert it (test_api_errors.py)
                case.add(f"x of dtype {dtype} for float weights", INVALID, "call", TypeError)
            else:
                case.add(f"x of dtype {dtype}", INVALID, "call", TypeError)
            call["x"] = filled(xshape, dtype)
        elif fault == "ndim":
            ndim = draw(st.sampled_from([0, 1, 2, 3, 5, 6]))
            shape = tuple(draw(st.integers(0, 3)) for _ in range(ndim))
            case.add(f"x of shape {shape}", INVALID, "call", ValueError)
            call["x"] = filled(shape, x_dtype)
        elif fault == "channels":
            bad = list(xshape)
            axis = channel_axis(layout)
            bad[axis] = draw(st.sampled_from([channels + 1, channels - 1, 2 * channels + 1]))
            what = f"x of shape {tuple(bad)}: {bad[axis]} channels, not {channels}"
            case.add(what, INVALID, "call", ValueError)
            call["x"] = filled(tuple(bad), x_dtype)
        elif fault == "list" and not huge:
            case.add("x as nested Python lists (int64 or float64 to numpy)", INVALID, "call")
            call["x"] = np.asarray(x).tolist()
        elif fault == "arrays" and n >= 1 and not huge:
            case.add("x as a list of 3-D arrays of the right dtype", GRAY, "call")
            call["x"] = [np.array(x[i]) for i in range(n)]
            p["x"] = np.asarray(call["x"])
        elif fault == "scalar":
            bad = draw(st.sampled_from([None, 1.5, "abc", np.float32(1), 3]))
            case.add(f"x={bad!r}", INVALID, "call")
            call["x"] = bad

    # weight
    warg = weight.reshape(out_channels, cg, 1, 1) if chance(draw, 30) else weight.copy()
    warg = arrange(draw, warg, case, "weight", "build", swap=swap == "weight")
    p["weight"] = np.array(warg, weight.dtype).reshape(out_channels, cg)  # (a broadcast repeats)
    if faulty(draw, case, "weight", 20):
        fault = pick(draw, case, WEIGHT_FAULTS, "weight")
        if fault == "dtype":
            dtype = draw_odd_dtype(draw, exclude=("int8",) if quantized else ("float32",))
            promised = TypeError if dtype.kind == "f" or not quantized else None
            case.add(f"weight of dtype {dtype}", INVALID, "build", promised)
            warg = cast_to(weight, dtype)
        elif fault == "kernel":
            shape = draw(st.sampled_from([(3, 3), (1, 3), (3, 1), (1,), (1, 1, 1)]))
            what = f"weight of shape {(out_channels, cg) + shape}"
            case.add(what, INVALID, "build", ValueError)
            warg = np.zeros((out_channels, cg) + shape, weight.dtype)
        elif fault == "ndim":
            shape = draw(
                st.sampled_from(
                    [(), (out_channels,), (1, out_channels, cg), (out_channels, cg, 1, 1, 1)]
                )
            )
            case.add(f"weight of shape {shape}", INVALID, "build")
            warg = np.zeros(shape, weight.dtype)
        elif fault == "empty":
            shape = draw(st.sampled_from([(0, cg), (out_channels, 0), (0, 0)]))
            case.add(f"weight of shape {shape} (no channels)", GRAY, "build")
            warg = np.zeros(shape, weight.dtype)
        elif fault == "K" and groups > 1:
            case.add(f"weight with K={out_channels + 1} for groups={groups}", INVALID, "build")
            warg = np.zeros((out_channels + 1, cg), weight.dtype)
        elif fault == "list":
            case.add("weight as nested lists (int64 or float64 to numpy)", INVALID, "build")
            warg = weight.tolist()
        elif fault == "rows":
            case.add("weight as a list of 1-D arrays of the right dtype", GRAY, "build")
            warg = list(p["weight"])

    # bias
    p["bias"] = None
    barg = None
    if chance(draw, 60) or case.focus in ("bias", "bias-limit") or swap == "bias":
        p["bias"] = bias
        barg = arrange(draw, bias.copy(), case, "bias", "build", swap=swap == "bias")
        p["bias"] = np.array(barg, bias.dtype)
        if faulty(draw, case, "bias", 15):
            fault = pick(draw, case, BIAS_FAULTS, "bias")
            if fault == "dtype":
                dtype = draw_odd_dtype(draw, exclude=("int32",) if quantized else ())
                promised = TypeError if quantized and dtype.kind == "f" else None
                case.add(f"bias of dtype {dtype}", INVALID, "build", promised)
                barg = cast_to(bias, dtype)
            elif fault == "length":
                length = draw(st.sampled_from([out_channels - 1, out_channels + 1, 0]))
                what = f"bias of length {length}, K={out_channels}"
                case.add(what, INVALID, "build", ValueError)
                barg = np.zeros(length, bias.dtype)
            elif fault == "2d":
                case.add("bias of shape (K, 1)", INVALID, "build")
                barg = bias.reshape(-1, 1)
            elif fault == "0d":
                case.add("0-d bias", INVALID, "build")
                barg = bias[0]
            elif fault == "list":
                case.add("bias as a list of Python numbers", INVALID, "build")
                barg = bias.tolist()
        elif quantized and faulty(draw, case, "bias-limit", 5):
            p["bias"] = np.full(out_channels, draw(st.sampled_from([INT32_MAX, INT32_MIN])))
            p["bias"] = p["bias"].astype(np.int32)
            case.add("bias at the int32 limit (the accumulator may overflow)", GRAY, "build")
            barg = p["bias"].copy()
    build["weight"], build["bias"] = warg, barg

    p["activation"], build["activation"] = draw_activation(draw, case, "build")

    if quantized:
        out_dtype = draw_quant_args(draw, case, p, build, x_dtype, out_channels)
    else:
        out_dtype = np.dtype(np.float32)
        if faulty(draw, case, "quant-args", 4):
            name = draw(st.sampled_from(["x_quant", "w_quant", "y_quant", "out_dtype"]))
            value = np.float32 if name == "out_dtype" else (0.1, 0)
            case.add(f"{name} on the float path", INVALID, "build")
            build[name] = value
    p["out_dtype"] = out_dtype

    shape = y_shape(layout, n, out_channels, h, w, p["stride"])
    p["y_shape"] = shape
    out, out_info = draw_out(
        draw, case, shape, out_dtype, call["x"], "call", layout, swap_out=swap == "out"
    )
    size = math.prod(shape)
    if out is None and not quantized and 0 < size <= 4096 and faulty(draw, case, "overlap", 8):
        # out and the weight (or bias) in one buffer: conv1x1 reads them while it writes
        # out, so it must refuse; a layer has its own copies, so it may not.
        name = draw(st.sampled_from(["weight", "bias"]))
        given_array = p[name] if p[name] is not None else p["weight"]
        name = "bias" if given_array is p["bias"] else "weight"
        buffer = np.zeros(max(size, given_array.size) + 3, np.float32)
        start = draw(st.integers(0, min(3, size - 1)))  # (so that they do overlap)
        view = buffer[start : start + given_array.size].reshape(given_array.shape)
        view[...] = given_array
        build[name] = view
        out = buffer[:size].reshape(shape)
        case.add(f"out overlaps the {name} (conv1x1 reads it)", INVALID, "functional", ValueError)
    if out is not None:
        call["out"] = out
    p["out_info"] = out_info
    threads = draw_threads(draw, case)
    if threads is not None:
        call["num_threads"] = threads

    case.p, case.build, case.call = p, build, call
    case.args = {**{k: v for k, v in build.items() if v is not None}, **call}
    return case


def draw_quant_args(draw, case, p, build, x_dtype, out_channels):
    """x_quant, w_quant, y_quant, out_dtype for a quantized problem; returns the output
    dtype the call resolves to. Zero points outside [-128, 255] are build-time errors
    for the layer; inside it but outside x's (or the output's) range, call-time ones."""
    qmin, qmax = QDTYPE_RANGES[x_dtype]
    # out_dtype
    kind = draw(
        st.sampled_from(
            kinds(
                case,
                ["none", "none", "same", "other8", "int32", "float32", "bad"],
                "out_dtype",
            )
        )
    )
    if case.focus == "byteorder":  # an output dtype that has a byte order
        kind = draw(st.sampled_from(["int32", "float32"]))
    other8 = np.dtype(np.int8 if x_dtype == np.uint8 else np.uint8)
    spelled = {
        "same": x_dtype,
        "other8": other8,
        "int32": np.dtype(np.int32),
        "float32": np.dtype(np.float32),
    }
    out_dtype, out_arg = x_dtype, None
    if kind in spelled:
        out_dtype = spelled[kind]
        out_arg = draw(st.sampled_from([out_dtype, out_dtype.name, out_dtype.type]))
    elif kind == "bad":
        out_arg = draw(
            st.sampled_from([np.int16, np.float64, "int64", np.uint16, bool, "bogus", 3, float])
        )
        promised = None if out_arg in ("bogus", 3) else ValueError
        case.add(f"out_dtype={out_arg!r}", INVALID, "build", promised)
    build["out_dtype"] = out_arg
    eight_bit = out_dtype.itemsize == 1

    extreme = faulty(draw, case, "extreme-scales", 4)
    xs = draw_scale(draw)
    ws = (
        np.array([draw_scale(draw) for _ in range(out_channels)], np.float32)
        if chance(draw, 50)
        else draw_scale(draw)
    )
    ys = draw_scale(draw, 1e-2, 10.0)
    if extreme:
        which = draw(st.sampled_from(["x", "w", "y"]))
        value = draw(st.sampled_from([1e-40, 1e-45, 1e30, 3e38, 1e-30]))
        case.add(f"extreme {which} scale {value} (requantization may overflow)", GRAY, "build")
        if which == "x":
            xs = float(np.float32(value))
        elif which == "w":
            ws = float(np.float32(value))
        else:
            ys = float(np.float32(value))
    xzp = draw(st.integers(qmin, qmax))
    out_range = QDTYPE_RANGES[out_dtype] if eight_bit else (-128, 255)
    yzp = draw(st.integers(*out_range))

    p["xs"], p["xzp"], build["x_quant"] = draw_qpair(draw, case, "x_quant", xs, xzp, "build")
    # w_quant: a scale or K scales (array, list or tuple), zero point 0
    w_scale_arg = ws
    if np.ndim(ws):
        w_scale_arg = draw(st.sampled_from(["array", "float64", "list"]))
        w_scale_arg = {
            "array": ws.copy(),
            "float64": ws.astype(np.float64),
            "list": [float(v) for v in ws],
        }[w_scale_arg]
    elif chance(draw, 20):  # one scale in a shape-(1,) array: per tensor
        w_scale_arg = np.array([ws], np.float32)
    wzp_arg = draw(st.sampled_from([0, np.int8(0), np.int64(0)]))
    if faulty(draw, case, "qparams-gray", 8):
        wzp_arg = draw(st.sampled_from(["zeros", "false", "0.0"]))
        case.add(f"w_quant zero point {wzp_arg}", GRAY, "build")
        wzp_arg = {"zeros": np.zeros(out_channels, np.int32), "false": False, "0.0": 0.0}[wzp_arg]
    wrap = draw(st.sampled_from([tuple, QParams._make, list]))
    p["ws"], build["w_quant"] = ws, wrap((w_scale_arg, wzp_arg))
    y_needed = eight_bit
    if y_needed or chance(draw, 50):
        p["ys"], p["yzp"], build["y_quant"] = draw_qpair(draw, case, "y_quant", ys, yzp, "build")
    else:
        p["ys"], p["yzp"], build["y_quant"] = None, None, None

    # faults in the quantization parameters
    if faulty(draw, case, "qparams", 30):
        name = draw(st.sampled_from(["x_quant", "w_quant", "y_quant", "act-int32", "zp-call"]))
        if name == "x_quant":
            build["x_quant"] = bad_qpair(draw, case, "x_quant", xs, xzp, "build", (-128, 255))
            if draw(st.booleans()):
                case.notes.pop()
                build["x_quant"] = (np.full(2, xs), xzp)
                case.add("x_quant with two scales (per-tensor only)", INVALID, "build")
        elif name == "w_quant":
            what, arg = draw(
                st.sampled_from(
                    [
                        ("missing", None),
                        ("zero point 1", (ws, 1)),
                        ("zero point -3", (ws, -3)),
                        ("one zero point not 0", (ws, np.eye(1, out_channels, 0, np.int32)[0])),
                        ("K+1 scales", (np.full(out_channels + 1, 0.5), 0)),
                        ("K-1 scales", (np.full(out_channels - 1, 0.5), 0)),
                        ("QParams with K+2 scales", QParams(np.full(out_channels + 2, 0.5), 0)),
                        ("2-D scales", (np.full((out_channels, 1), 0.5), 0)),
                        ("a zero scale among K", (np.r_[np.full(out_channels - 1, 0.5), 0.0], 0)),
                        (
                            "a NaN scale among K",
                            (np.r_[math.nan, np.full(out_channels - 1, 0.5)], 0),
                        ),
                        ("scale 'a'", ("a", 0)),
                        ("a bare scale", 0.5),
                        ("zero points as 2-D", (ws, np.zeros((1, 1), np.int32))),
                    ]
                )
            )
            if what == "K-1 scales" and out_channels <= 2:
                # K-1 = 0 scales is no list, and one scale in an array is per tensor
                # (valid): neither is a wrong count of per-channel scales.
                what, arg = "zero point 1", (ws, 1)
            promised = {"missing": TypeError, "zero point 1": ValueError}.get(what)
            case.add(f"w_quant: {what}", INVALID, "build", promised)
            build["w_quant"] = arg
        elif name == "y_quant":
            if y_needed and chance(draw, 30):
                case.add("y_quant missing for an 8-bit output", INVALID, "build", TypeError)
                build["y_quant"] = None
            else:
                zp_range = out_range
                if build["out_dtype"] is None:
                    zp_range = (-128, 255)  # x's range is checked at call time
                build["y_quant"] = bad_qpair(draw, case, "y_quant", ys, yzp, "build", zp_range)
                if build["y_quant"] is None and not y_needed:
                    case.notes.pop()  # not needed: leaving it out is fine
        elif name == "act-int32" and out_dtype == np.int32 and p["activation"] is None:
            p["activation"] = "relu"
            build["activation"] = "relu"
            case.add("activation with int32 output", INVALID, "build", ValueError)
        elif name == "zp-call":
            # In [-128, 255] but outside x's range: found when x's dtype is known.
            zp = draw(st.sampled_from([v for v in (-128, -1, 128, 255) if not qmin <= v <= qmax]))
            if draw(st.booleans()):
                case.add(f"x_quant zero point {zp} outside {x_dtype}", INVALID, "call")
                build["x_quant"] = (xs, zp)
            elif build["out_dtype"] is None:
                case.add(f"y_quant zero point {zp} outside the {x_dtype} output", INVALID, "call")
                build["y_quant"] = (ys, zp)
    if p["activation"] is not None and out_dtype == np.int32 and build["activation"] is not None:
        if not any("activation with int32" in n[2] for n in case.notes):
            case.add("activation with int32 output", INVALID, "build", ValueError)
    return out_dtype


# ---------------------------------------------------------------------------------------
# Checking a convolution's result against fastpw.testing


def presliced(x, layout, stride):
    """x's pixels that a stride keeps (so the reference never touches a huge view)."""
    sh, sw = stride
    return x[:, :, ::sh, ::sw] if layout == "NCHW" else x[:, ::sh, ::sw, :]


def to_layout(nchw, layout):
    return nchw if layout == "NCHW" else nchw.transpose(0, 2, 3, 1)


def check_conv(case, y, quantized):
    """The result of an accepted convolution: shape, dtype, `out` identity, untouched
    surroundings of a channel-slice out, and the values against the reference."""
    p = case.p
    out = case.call.get("out")
    assert isinstance(y, np.ndarray), f"returned {type(y).__name__}"
    if out is not None:
        assert y is out, "a call with out= must return out"
    assert y.shape == p["y_shape"], f"shape {y.shape}, expected {p['y_shape']}"
    if out is not None and out.dtype.byteorder not in "=|":
        # a non-native `out` that was accepted must hold the right values
        y = y.astype(y.dtype.newbyteorder("="))
    assert y.dtype == p["out_dtype"], f"dtype {y.dtype}, expected {p['out_dtype']}"
    if p["out_info"] is not None:
        buffer, before, index = p["out_info"]
        outside = np.ones(buffer.shape, bool)
        outside[index] = False
        assert (buffer[outside] == before[outside]).all(), "wrote outside the out slice"
    if y.size == 0:
        return "accepted"
    x = presliced(p["x"], p["layout"], p["stride"])
    if not quantized:
        activation = p["activation"]
        if activation is not None and not isinstance(activation, str):
            # The kernel clamps in float32: bounds beyond its range become +-inf.
            with np.errstate(all="ignore"):
                activation = tuple(float(np.float32(b)) for b in activation)
        with np.errstate(all="ignore"):
            assert_matches_reference(
                y, x, p["weight"], p["bias"], p["layout"], 1, p["groups"], activation
            )
        return "accepted"
    return check_quantized(case, y, x)


def check_quantized(case, y, x):
    p = case.p
    layout, groups, out_dtype = p["layout"], p["groups"], p["out_dtype"]
    acc = qconv1x1_accumulators(
        x, p["weight"], p["bias"], x_zero_point=p["xzp"], layout=layout, groups=groups
    )
    acc = wrap_to_int32(acc)  # the contract's accumulator wraps past int32
    eight_bit = out_dtype.itemsize == 1
    activation = p["activation"]
    y_quant = None if p["ys"] is None else (p["ys"], p["yzp"])
    with np.errstate(all="ignore"):
        expected = qconv1x1_reference(
            x,
            p["weight"],
            p["bias"],
            x_quant=(p["xs"], p["xzp"]),
            w_quant=(p["ws"], 0),
            y_quant=y_quant,
            out_dtype=out_dtype,
            layout=layout,
            groups=groups,
            activation=activation,
        )
        # Entries the contract leaves undefined: NaN before rounding (0 * inf), which
        # only scales whose products overflow float32 can produce.
        k = acc.shape[1]
        ws = np.broadcast_to(np.asarray(p["ws"], np.float32), (k,))[None, :, None, None]
        dequant = np.float32(p["xs"]) * ws
        scale = dequant / np.float32(p["ys"]) if eight_bit else dequant
        undefined = to_layout(np.isnan(acc.astype(np.float32) * scale), layout)
    if undefined.any():
        assert "extreme" in case.changes(), "NaN before rounding with ordinary scales"
    if out_dtype == np.float32:
        same = (y == expected) | (np.isnan(y) & np.isnan(expected))
    else:
        same = y == expected
    bad = np.argwhere(~(same | undefined))
    if bad.size:
        i = tuple(bad[0])
        raise AssertionError(
            f"{len(bad)} of {y.size} entries differ from the int64 reference; first at {i}: "
            f"got {y[i]!r}, expected {expected[i]!r}"
        )
    return "accepted"


def arrays_in(*objects):
    """The numpy arrays among `objects` and inside their lists, tuples and dicts."""
    found = []
    for obj in objects:
        if isinstance(obj, np.ndarray):
            found.append(obj)
        elif isinstance(obj, (list, tuple)):
            found.extend(v for v in obj if isinstance(v, np.ndarray))
        elif isinstance(obj, dict):
            found.extend(arrays_in(*obj.values()))
    return found


def kwargs_of(args, skip=()):
    return {k: v for k, v in args.items() if v is not None and k not in skip}


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def functional_args(case, quantized):
    """conv1x1 keyword arguments in plain form for the problem's meaning."""
    p = case.p
    kwargs = dict(
        layout=p["layout"], stride=p["stride"], groups=p["groups"], activation=p["activation"]
    )
    if quantized:
        kwargs.update(
            x_quant=(p["xs"], p["xzp"]),
            w_quant=(p["ws"], 0),
            y_quant=None if p["ys"] is None else (p["ys"], p["yzp"]),
            out_dtype=p["out_dtype"],
        )
    return kwargs


# ---------------------------------------------------------------------------------------
# The convolution targets


def run_conv1x1(case, isa, quantized, target):
    build = kwargs_of(case.build, skip=("weight", "bias"))
    call = kwargs_of(case.call, skip=("x",))
    inputs = snapshot(arrays_in(case.build, case.call["x"], case.call.get("num_threads")))
    with kernel_family(isa):
        try:
            y = attempt(
                target,
                case,
                lambda: fastpw.conv1x1(
                    case.call["x"], case.build["weight"], case.build["bias"], **build, **call
                ),
                watch=[case.call.get("out")],
            )
        except Rejected as rejected:
            assert_unchanged(inputs, target)
            return rejected.outcome
        assert_unchanged(inputs, target)
        outcome = check_conv(case, y, quantized)
        if outcome == "accepted" and y.size:
            # Every thread count gives the same bits.
            again = fastpw.conv1x1(
                case.p["x"], case.p["weight"], case.p["bias"], num_threads=1,
                **functional_args(case, quantized),
            )  # fmt: skip
            assert same_bits(again, y), "num_threads=1 gives other bits"
    return outcome


CONV_CHANGES = ["mixed", "mixed-2", "exotic", "layout", "stride", "groups", "activation"]
CONV_CHANGES += ["activation-gray", "huge", "x", "weight", "bias", "out", "threads", "byteorder"]
FLOAT_CHANGES = CONV_CHANGES + ["quant-args", "overlap"]
QUANTIZED_CHANGES = CONV_CHANGES + ["out_dtype", "qparams", "qparams-gray", "extreme-scales"]
QUANTIZED_CHANGES += ["bias-limit"]
CLEAN_EXAMPLES = 200  # per target, in "ci"


def fuzz_conv1x1(data, focus, quantized):
    target = "conv1x1 (quantized)" if quantized else "conv1x1 (float)"
    case = data.draw(conv_problems(quantized, focus), label="case")
    isa = data.draw(st.sampled_from(ISAS), label="isa")
    begin(target)
    tally(target, case, run_conv1x1(case, isa, quantized, target))


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_conv1x1_float(data):
    fuzz_conv1x1(data, "clean", quantized=False)


@pytest.mark.parametrize("focus", FLOAT_CHANGES)
@fuzz_settings(16)
@given(data=st.data())
def test_fuzz_conv1x1_float_changes(focus, data):
    fuzz_conv1x1(data, focus, quantized=False)


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_conv1x1_quantized(data):
    fuzz_conv1x1(data, "clean", quantized=True)


@pytest.mark.parametrize("focus", QUANTIZED_CHANGES)
@fuzz_settings(16)
@given(data=st.data())
def test_fuzz_conv1x1_quantized_changes(focus, data):
    fuzz_conv1x1(data, focus, quantized=True)


def run_layer(case, build_isa, call_isa, quantized, target):
    cls = fastpw.QConv1x1 if quantized else fastpw.Conv1x1
    build = kwargs_of(case.build, skip=("weight", "bias"))
    call = kwargs_of(case.call, skip=("x",))
    p = case.p
    inputs = snapshot(arrays_in(case.build))
    with kernel_family(build_isa):
        try:
            layer = attempt(
                target,
                case,
                lambda: cls(case.build["weight"], case.build["bias"], **build),
                phase="build",
            )
        except Rejected as rejected:
            assert_unchanged(inputs, target)
            return rejected.outcome
    assert_unchanged(inputs, target)
    # The layer's attributes, and its copies of the weights.
    k, cg = p["weight"].shape
    assert layer.weight.shape == (k, cg) and not layer.weight.flags.writeable
    assert (layer.weight == p["weight"]).all(), "layer.weight differs from the weight"
    assert (layer.bias is None) == (p["bias"] is None)
    assert (layer.in_channels, layer.out_channels) == (cg * p["groups"], k)
    assert (layer.layout, layer.stride, layer.groups) == (p["layout"], p["stride"], p["groups"])
    if quantized and case.expect("call") != INVALID:
        assert tuple(layer.x_quant) == (p["xs"], p["xzp"])
    for name in ("weight", "bias"):  # the layer must not see later changes
        given_array = case.build[name]
        if isinstance(given_array, np.ndarray) and given_array.flags.writeable:
            given_array[...] = 1 if given_array.dtype.kind in "iu" else np.nan
    call_inputs = snapshot(arrays_in(case.call["x"]))
    with kernel_family(call_isa):
        try:
            y = attempt(
                target,
                case,
                lambda: layer(case.call["x"], **call),
                phase="call",
                watch=[case.call.get("out")],
            )
        except Rejected as rejected:
            assert_unchanged(call_inputs, target)
            return rejected.outcome
        assert_unchanged(call_inputs, target)
        outcome = check_conv(case, y, quantized)
        if outcome != "accepted" or not y.size:
            return outcome
        again = layer(p["x"], num_threads=1)
        assert same_bits(again, y), "num_threads=1 gives other bits"
    with kernel_family(build_isa):  # the layer packed for this family
        functional = fastpw.conv1x1(
            p["x"], p["weight"], p["bias"], **functional_args(case, quantized)
        )
    assert same_bits(functional, y), "the layer and conv1x1 give other bits"
    return outcome


def fuzz_layer(data, focus, quantized):
    target = "QConv1x1" if quantized else "Conv1x1"
    case = data.draw(conv_problems(quantized, focus), label="case")
    build_isa = data.draw(st.sampled_from(ISAS), label="build_isa")
    call_isa = data.draw(st.sampled_from(ISAS), label="call_isa")
    begin(target)
    tally(target, case, run_layer(case, build_isa, call_isa, quantized, target))


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_Conv1x1(data):
    fuzz_layer(data, "clean", quantized=False)


@pytest.mark.parametrize("focus", FLOAT_CHANGES)
@fuzz_settings(16)
@given(data=st.data())
def test_fuzz_Conv1x1_changes(focus, data):
    fuzz_layer(data, focus, quantized=False)


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_QConv1x1(data):
    fuzz_layer(data, "clean", quantized=True)


@pytest.mark.parametrize("focus", QUANTIZED_CHANGES)
@fuzz_settings(16)
@given(data=st.data())
def test_fuzz_QConv1x1_changes(focus, data):
    fuzz_layer(data, focus, quantized=True)


# ---------------------------------------------------------------------------------------
# quantize / dequantize


def draw_shape(draw, max_ndim=6, max_dim=4, empty=True, ndim=None):
    ndim = draw(st.integers(0, max_ndim)) if ndim is None else ndim
    shape = [draw(st.integers(1, max_dim)) for _ in range(ndim)]
    if ndim and empty and chance(draw, 8):
        shape[draw(st.integers(0, ndim - 1))] = 0
    return tuple(shape)


def draw_qdtype(draw, case, phase, default_ok=True):
    """(meaning, argument or None for the default uint8) of an 8-bit dtype argument."""
    dtype = np.dtype(draw(st.sampled_from([np.uint8, np.int8])))
    kind = draw(
        st.sampled_from(kinds(case, ["type", "type", "name", "dtype", "char", "bad"], "dtype"))
    )
    if kind == "type":
        return dtype, (None if dtype == np.uint8 and default_ok else dtype.type)
    if kind == "name":
        return dtype, dtype.name
    if kind == "dtype":
        return dtype, dtype
    if kind == "char":
        return dtype, dtype.char
    bad = draw(st.sampled_from([np.int16, np.float32, "bogus", "int32", bool, 5, [1], np.uint16]))
    case.add(f"dtype={bad!r}", INVALID, phase)
    return dtype, bad


def draw_zero_points(draw, case, rng, qd, count):
    """(meaning int or int64 array, argument) of valid zero points."""
    qmin, qmax = QDTYPE_RANGES[qd]
    if count is None:
        zp = draw(st.integers(qmin, qmax))
        arg = draw(st.sampled_from([zp, np.int64(zp), np.array(zp)]))
        if faulty(draw, case, "qparams-gray", 6):
            arg = draw(st.sampled_from([float(zp), np.float32(zp)]))
            case.add(f"zero point as the float {float(zp)}", GRAY)
        return zp, arg
    zp = rng.integers(qmin, qmax + 1, count)
    form = draw(st.sampled_from(["int32", "int64", "list"]))
    arg = zp.tolist() if form == "list" else zp.astype(form)
    if faulty(draw, case, "qparams-gray", 6):
        arg = zp.astype(np.float64)
        case.add("zero points as integral floats", GRAY)
    return zp, arg


def draw_scales(draw, case, count):
    """(meaning float or float32 array, argument) of valid scales."""
    if count is None:
        scale = draw_scale(draw, 1e-4, 1e3)
        if chance(draw, 5):
            scale = draw(st.sampled_from([1e-40, 2.0**-20, 0.5, 1.0, 4.0, 3.0e38]))
        arg = draw(st.sampled_from([scale, np.float32(scale), np.float64(scale), np.array(scale)]))
        if faulty(draw, case, "qparams-gray", 5):
            case.add(f"scale as the string {str(scale)!r}", GRAY)
            arg = str(scale)
        return scale, arg
    scale = np.array([draw_scale(draw, 1e-4, 1e3) for _ in range(count)], np.float32)
    form = draw(st.sampled_from(["float32", "float64", "list"]))
    return scale, (scale.tolist() if form == "list" else scale.astype(form))


ELEMENTWISE_X_FAULTS = ["dtype", "none", "list", "scalar"]
QPARAMS_FAULTS = ["pair", "scale", "zp", "arrays", "length", "axis"]


@st.composite
def elementwise_cases(draw, quantizing, focus):
    """quantize (quantizing) or dequantize: case.args and their meaning in case.p."""
    case = Case(focus)
    rng = seeded(draw)
    args = {}
    qd, dtype_arg = draw_qdtype(draw, case, "call")
    qmin, qmax = QDTYPE_RANGES[qd]
    shape = draw_shape(draw)
    empty = ["empty"] if exotic(case) else []
    huge = draw(st.sampled_from([None] * 14 + empty + kinds(case, ["bad"], "")))
    if case.focus == "huge":
        huge = draw(st.sampled_from(["bad", "empty"]))
    if case.focus == "exotic":
        huge = "empty"
    if huge == "empty":
        shape = (0, 2**40)
        case.add(f"empty x of shape {shape}", VALID)
    elif huge == "bad":
        shape = (2**25, 2**25)
        case.add(f"x of shape {shape} (a zero-stride view)", HUGE)
    ndim = len(shape)

    # qparams: per tensor, or per axis (arrays of scales and zero points, or a scalar shared)
    axis = axis_arg = None
    if ndim and chance(draw, 70 if huge == "empty" else 40):
        axis = draw(st.integers(0, ndim - 1))
        axis_arg = draw(st.sampled_from([axis, axis - ndim, np.int64(axis)]))
        count = shape[axis] if shape[axis] <= 64 else None
        scale, scale_arg = draw_scales(draw, case, count if chance(draw, 70) else None)
        zp, zp_arg = draw_zero_points(draw, case, rng, qd, count if chance(draw, 70) else None)
    else:
        scale, scale_arg = draw_scales(draw, case, None)
        zp, zp_arg = draw_zero_points(draw, case, rng, qd, None)
        if chance(draw, 10):  # documented: a one-element array is a per-tensor value
            scale_arg, zp_arg = np.array([scale]), np.array([zp])
            case.add("one-element arrays of qparams without axis=", VALID)
    wrap = draw(st.sampled_from(["tuple", "QParams", "list"]))
    qparams = {"tuple": tuple, "QParams": QParams._make, "list": list}[wrap]((scale_arg, zp_arg))

    # x
    if huge:
        one = np.ones((), np.float32 if quantizing else qd)
        x = np.broadcast_to(one, shape) if huge == "bad" else np.zeros(shape, one.dtype)
    elif quantizing:
        values = np.array(rng.standard_normal(shape) * 10.0 ** draw(st.integers(-4, 4)))
        if chance(draw, 30) and values.size:
            specials = [np.nan, np.inf, -np.inf, 1e30, -1e30, -0.0, 5e-324, 3.4e38]
            mask = rng.random(shape) < 0.2
            values[mask] = rng.choice(specials, int(mask.sum()))
        if chance(draw, 20) and values.size and np.ndim(scale) == 0:
            mask = rng.random(shape) < 0.5  # ties: half-way between two steps
            values[mask] = (rng.integers(-300, 300, int(mask.sum())) + 0.5) * scale
        dtype = draw(st.sampled_from(["float32"] * 4 + ["float16", "float64", "longdouble"]))
        x = arrange(draw, cast_to(values, dtype), case, "x", "call", byteorder=VALID)
    else:
        x = arrange(draw, rng.integers(qmin, qmax + 1, shape).astype(qd), case, "x", "call")
    meaning = x
    if faulty(draw, case, "x", 20) and not huge:
        fault = pick(draw, case, ELEMENTWISE_X_FAULTS, "x")
        if fault == "dtype":
            exclude = ("float16", "float64", "longdouble") if quantizing else ("uint8", "int8")
            dtype = draw_odd_dtype(draw, exclude=exclude)
            case.add(f"x of dtype {dtype}")
            x = cast_to(np.ones(shape), dtype)
        elif fault == "none":
            x = draw(st.sampled_from([None, "abc", b"ab"]))
            case.add(f"x={x!r}")
        elif fault == "list":
            x = np.asarray(x).tolist()
            if quantizing:
                case.add("x as (nested) Python floats", GRAY)
                meaning = np.asarray(x)
            else:
                case.add("x as (nested) Python ints (int64 to numpy)")
        elif fault == "scalar" and quantizing and axis is None:
            x = draw(st.sampled_from([1.5, -3.25, math.nan]))
            case.add(f"x as the Python float {x}", GRAY)
            meaning = np.asarray(x)

    # faults in qparams / axis
    if faulty(draw, case, "qparams", 35):
        fault = pick(draw, case, QPARAMS_FAULTS, "qparams")
        if fault == "pair":
            what, qparams = draw(
                st.sampled_from(
                    [("None", None), ("a bare scale", 0.5), ("a 1-tuple", (0.5,))]
                    + [("a 3-tuple", (0.5, 0, 0)), ("a string", "ab")]
                )
            )
            case.add(f"qparams {what}")
        elif fault == "scale":
            bad = draw(
                st.sampled_from(
                    [0.0, -0.5, math.nan, math.inf, 1e39, "a", None, 1j, np.full((1, 1), 0.5)]
                )
            )
            case.add(f"scale {brief(bad)}")
            qparams = (bad, zp_arg)
        elif fault == "zp":
            bad = draw(st.sampled_from([qmax + 1, qmin - 1, 2**70, 1.5, "1", None, math.nan]))
            case.add(f"zero point {bad!r} (dtype {qd})")
            qparams = (scale_arg, bad)
        elif fault == "arrays" and axis is None:
            case.add("two scales and zero points without axis=")
            qparams = (np.full(2, 0.5), np.zeros(2, np.int64))
        elif fault == "length" and axis is not None and shape[axis] <= 64:
            # (As the valid scales above: no per-axis array for a huge axis, whose
            # shape[axis] + 1 scales would take terabytes to build.)
            case.add(f"{shape[axis] + 1} scales for an axis of {shape[axis]}")
            qparams = (np.full(shape[axis] + 1, 0.5), zp_arg)
        elif fault == "axis":
            bad = draw(st.sampled_from([ndim, -ndim - 1, 2**70, True, 1.0, "0"]))
            case.add(f"axis={bad!r} for {ndim} dimensions")
            axis_arg = bad

    args["x"] = x
    args["qparams"] = qparams
    if quantizing and dtype_arg is not None:
        args["dtype"] = dtype_arg
    if axis_arg is not None:
        args["axis"] = axis_arg
    out_dtype = qd if quantizing else np.dtype(np.float32)
    out, _ = draw_out(draw, case, np.shape(meaning), out_dtype, None, "call", "NCHW")
    if out is not None:
        args["out"] = out
    threads = draw_threads(draw, case)
    if threads is not None:
        args["num_threads"] = threads
    case.args = args
    case.p = dict(x=meaning, scale=scale, zp=zp, qd=qd, axis=axis, out_dtype=out_dtype)
    if not quantizing:
        case.notes = [n for n in case.notes if not n[2].startswith("dtype=")]
    return case


def run_elementwise(case, isa, quantizing, target):
    p, args = case.p, dict(case.args)
    fn = quantize if quantizing else dequantize
    x, qparams = args.pop("x"), args.pop("qparams")
    inputs = snapshot(arrays_in(x, qparams))
    with kernel_family(isa):
        try:
            y = attempt(target, case, lambda: fn(x, qparams, **args), watch=[args.get("out")])
        except Rejected as rejected:
            assert_unchanged(inputs, target)
            return rejected.outcome
    assert_unchanged(inputs, target)
    assert isinstance(y, np.ndarray), f"returned {type(y).__name__}"
    if args.get("out") is not None:
        assert y is args["out"], "a call with out= must return out"
    assert y.shape == np.shape(p["x"]) and y.dtype == p["out_dtype"], (y.shape, y.dtype)
    if quantizing:
        expected = quantize_reference(p["x"], p["scale"], p["zp"], p["qd"], p["axis"])
        bad = np.argwhere(y != expected)
    else:
        expected = dequantize_reference(p["x"], p["scale"], p["zp"], p["axis"])
        bad = np.argwhere(y.view(np.uint32) != expected.view(np.uint32))
    if bad.size:
        i = tuple(bad[0])
        raise AssertionError(
            f"{len(bad)} of {y.size} entries differ from the reference; first at {i}: "
            f"got {y[i]!r}, expected {expected[i]!r} (x = {np.asarray(p['x'])[i]!r})"
        )
    return "accepted"


ELEMENTWISE_CHANGES = ["mixed", "mixed-2", "exotic", "huge", "qparams-gray", "out"]
ELEMENTWISE_CHANGES += ["threads"]
ELEMENTWISE_CHANGES += details("x", ELEMENTWISE_X_FAULTS) + details("qparams", QPARAMS_FAULTS)


def fuzz_elementwise(data, focus, quantizing):
    target = "quantize" if quantizing else "dequantize"
    case = data.draw(elementwise_cases(quantizing, focus), label="case")
    isa = data.draw(st.sampled_from(ISAS), label="isa")
    begin(target)
    tally(target, case, run_elementwise(case, isa, quantizing, target))


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_quantize(data):
    fuzz_elementwise(data, "clean", quantizing=True)


@pytest.mark.parametrize("focus", ["dtype"] + ELEMENTWISE_CHANGES)
@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_quantize_changes(focus, data):
    fuzz_elementwise(data, focus, quantizing=True)


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_dequantize(data):
    fuzz_elementwise(data, "clean", quantizing=False)


@pytest.mark.parametrize("focus", ELEMENTWISE_CHANGES)  # (dequantize has no dtype=)
@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_dequantize_changes(focus, data):
    fuzz_elementwise(data, focus, quantizing=False)


# ---------------------------------------------------------------------------------------
# choose_qparams and Observer


BATCH_FAULTS = ["nan", "inf", "empty", "dtype", "none", "list", "bool"]


def draw_batch(draw, case, rng, phase, shape=None, category="batch"):
    """A batch for choose_qparams / Observer.update: (argument, meaning for the
    reference). Its verdict (NaN, empty, dtype) goes to case under `phase`."""
    if shape is None:
        shape = draw_shape(draw, max_ndim=4, max_dim=5)
    kind = draw(
        st.sampled_from(
            ["float32", "float32", "float64", "float16", "longdouble", "int8", "uint8"]
            + ["int32", "int64", "uint64", "positive", "negative", "zeros"]
            + (["denormal"] if exotic(case) else [])
        )
    )
    if case.focus == "exotic":
        kind = "denormal"
    spread = 10.0 ** draw(st.sampled_from([-30, -3, 0, 0, 0, 2, 30, 300]))
    values = np.array(rng.standard_normal(shape), np.float64)
    if kind in ("int8", "uint8", "int32", "int64", "uint64"):
        info = np.iinfo(kind)
        batch = rng.integers(info.min, info.max, shape, dtype=kind, endpoint=True)
    elif kind == "zeros":
        batch = np.zeros(shape, np.float32)
    elif kind == "denormal":
        batch = np.round(values * 3) * 5e-324
        case.add("subnormal float64 data (range below 1e-320)", VALID, phase)
    else:
        if kind == "positive":
            values = np.abs(values) + 1
        elif kind == "negative":
            values = -np.abs(values) - 1
        dtype = kind if kind in ("float16", "float64", "longdouble") else "float32"
        batch = cast_to(values * spread, dtype)
    batch = arrange(draw, np.asarray(batch), case, f"batch ({phase})", phase, byteorder=VALID)
    meaning = batch
    if faulty(draw, case, category, 15):
        fault = pick(draw, case, BATCH_FAULTS, category)
        if fault in ("nan", "inf") and batch.size:
            batch = np.array(batch, dtype=np.float32)
            batch.flat[draw(st.integers(0, batch.size - 1))] = np.nan if fault == "nan" else -np.inf
            case.add(f"{fault} in the batch", INVALID, phase)
        elif fault == "empty":
            batch = np.zeros((0,) + shape[1:], np.float32)
            case.add("an empty batch", INVALID, phase)
        elif fault == "dtype":
            dtype = draw(st.sampled_from(["complex64", "object", "datetime64[s]", "U3", "S2"]))
            batch = cast_to(np.asarray(meaning, np.float64), dtype)
            case.add(f"a batch of dtype {dtype}", INVALID, phase)
        elif fault == "none":
            batch = draw(st.sampled_from([None, "abc"]))
            case.add(f"the batch {batch!r}", INVALID, phase)
        elif fault == "list":
            batch = np.asarray(batch).tolist()
            meaning = np.asarray(batch)
            case.add("the batch as (nested) Python numbers", GRAY, phase)
        elif fault == "bool":
            batch = np.asarray(meaning) > 0
            meaning = batch
            case.add("a bool batch", GRAY, phase)
    if isinstance(meaning, np.ndarray) and meaning.size == 0:
        case.add(f"an empty batch of shape {meaning.shape}", INVALID, phase)
    elif isinstance(meaning, np.ndarray) and meaning.dtype.kind == "f":
        if not np.all(np.isfinite(meaning)):  # float16 or float32 may overflow the spread
            case.add("the batch overflows its dtype to inf", INVALID, phase)
    return batch, meaning


def draw_observer_args(draw, case, phase, ndim):
    """Keyword arguments of Observer / choose_qparams (but x) and their meaning; a
    clean case's axis suits `ndim` dimensions."""
    args, p = {}, {}
    p["qd"], dtype_arg = draw_qdtype(draw, case, phase)
    if dtype_arg is not None:
        args["dtype"] = dtype_arg
    symmetric = draw(st.sampled_from([False, True, None, 0, 1, np.True_, "gray"]))
    if symmetric == "gray":
        symmetric = draw(st.sampled_from(["no", [0], 2.5]))
        case.add(f"symmetric={symmetric!r} (meaning bool() of it)", GRAY, phase)
    p["symmetric"] = bool(symmetric)
    if symmetric is not None:
        args["symmetric"] = symmetric
    method = draw(st.sampled_from(kinds(case, ["minmax", "percentile", "bad"], "method")))
    if method == "bad":
        method = draw(st.sampled_from(["MinMax", "bogus", "", 1, ["minmax"]]))
        case.add(f"method={method!r}", INVALID, phase)
    elif chance(draw, 50):
        method = np.str_(method)
    args["method"] = method
    p["method"] = method
    percentile = draw(st.sampled_from([None, 99.99, 100, 100.0, 99, 75.5, 50.001, np.float32(99)]))
    if faulty(draw, case, "percentile", 10):
        percentile = draw(st.sampled_from([50, 0, -1, 100.5, math.nan, math.inf, "abc", None, 1j]))
        if percentile is None:
            percentile = True
        case.add(f"percentile={percentile!r}", INVALID, phase)
    elif faulty(draw, case, "percentile-gray", 4):
        percentile = draw(st.sampled_from(["99", 10**400]))
        case.add(f"percentile={brief(percentile)}", GRAY, phase)
    if percentile is not None:
        args["percentile"] = percentile
    axis = None
    if p["method"] == "minmax" and chance(draw, 40) and (ndim or not case.clean):
        axis = draw(st.integers(-ndim, ndim - 1) if case.clean else st.integers(-2, 2))
        args["axis"] = draw(st.sampled_from([axis, np.int64(axis)]))
    elif faulty(draw, case, "axis", 8):
        bad = draw(st.sampled_from([True, 1.0, "0"] + ([0] if p["method"] == "percentile" else [])))
        case.add(f"axis={bad!r} (method {p['method']!r})", INVALID, phase)
        args["axis"] = bad
    p["axis"] = axis
    return args, p


def expected_qparams(batches, p):
    """The reference for the accepted batches (meanings): (scale, zp), "too wide" or
    None when nothing was seen."""
    if not batches:
        return None
    axis = p["axis"]
    if axis is None:
        lo = min(np.asarray(b).astype(np.float64).min() for b in batches)
        hi = max(np.asarray(b).astype(np.float64).max() for b in batches)
    else:
        los, his = [], []
        for b in batches:
            b = np.asarray(b).astype(np.float64)
            reduce = tuple(d for d in range(b.ndim) if d != axis % b.ndim)
            los.append(b.min(axis=reduce))
            his.append(b.max(axis=reduce))
        lo, hi = np.min(los, axis=0), np.max(his, axis=0)
    return qparams_reference(lo, hi, p["qd"], p["symmetric"]) or "too wide"


def check_qparams(qp, batches, p):
    """Compare QParams with the reference (minmax: exactly; percentile: the documented
    properties, as the histogram is not re-implemented here)."""
    assert isinstance(qp, QParams), f"returned {type(qp).__name__}"
    reference = expected_qparams(batches, p)
    qmin, qmax = QDTYPE_RANGES[p["qd"]]
    if p["method"] == "minmax":
        assert reference != "too wide", f"accepted a range too wide for float32: {qp}"
        scale, zp = reference
        if p["axis"] is None:
            assert type(qp.scale) is float and type(qp.zero_point) is int, qp
            assert (qp.scale, qp.zero_point) == (float(scale), int(zp)), (qp, scale, zp)
        else:
            assert qp.scale.dtype == np.float32 and qp.zero_point.dtype == np.int32, qp
            assert (qp.scale == scale).all() and (qp.zero_point == zp).all(), (qp, scale, zp)
        return
    assert type(qp.scale) is float and type(qp.zero_point) is int, qp
    assert float(np.float32(qp.scale)) == qp.scale and math.isfinite(qp.scale), qp
    assert EPS32 <= qp.scale, qp
    if reference != "too wide":  # the percentile range lies inside [min, max]
        assert qp.scale <= float(reference[0]), (qp, reference)
    assert qmin <= qp.zero_point <= qmax, qp
    if p["symmetric"]:
        assert qp.zero_point == (0 if qmin < 0 else 128), qp


def axis_length(case, phase, meaning, p, seen_length):
    """The batch's length along the axis (None per tensor); adds the verdicts that depend
    on it: an axis out of range for this batch, or a length other than earlier ones'."""
    axis = p["axis"]
    if axis is None or not isinstance(meaning, np.ndarray):
        return None
    if not -meaning.ndim <= axis < meaning.ndim:
        case.add(f"axis {axis} for a batch of {meaning.ndim} dimensions", INVALID, phase)
        return None
    length = meaning.shape[axis]
    if seen_length is not None and length != seen_length:
        case.add(f"axis length {length}, earlier batches {seen_length}", INVALID, phase)
    return length


@st.composite
def choose_cases(draw, focus):
    case = Case(focus)
    shape = draw_shape(draw, max_ndim=4, max_dim=5, empty=not case.clean)
    args, p = draw_observer_args(draw, case, "call", len(shape))
    x, meaning = draw_batch(draw, case, seeded(draw), "call", shape)
    axis_length(case, "call", meaning, p, None)
    case.args = dict(x=x, **args)
    case.p = dict(p, meaning=meaning)
    if case.expect() != INVALID and expected_qparams([meaning], p) == "too wide":
        verdict = GRAY if p["method"] == "percentile" else INVALID
        case.add("a range too wide for a float32 scale", verdict)
    return case


RANGE_CHANGES = ["mixed", "mixed-2", "exotic", "dtype", "method", "percentile"]
RANGE_CHANGES += ["percentile-gray", "axis"]
RANGE_CHANGES += details("batch", BATCH_FAULTS)


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_choose_qparams(data):
    fuzz_choose_qparams(data, "clean")


@pytest.mark.parametrize("focus", RANGE_CHANGES)
@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_choose_qparams_changes(focus, data):
    fuzz_choose_qparams(data, focus)


def fuzz_choose_qparams(data, focus):
    case = data.draw(choose_cases(focus), label="case")
    target = "choose_qparams"
    begin(target)
    args = dict(case.args)
    x = args.pop("x")
    inputs = snapshot(arrays_in(x))
    try:
        qp = attempt(target, case, lambda: choose_qparams(x, **args))
    except Rejected as rejected:
        assert_unchanged(inputs, target)
        return tally(target, case, rejected.outcome)
    assert_unchanged(inputs, target)
    check_qparams(qp, [case.p["meaning"]], case.p)
    tally(target, case, "accepted")


@st.composite
def observer_cases(draw, focus):
    case = Case(focus)
    rng = seeded(draw)
    shape = draw_shape(draw, max_ndim=4, max_dim=5, empty=not case.clean)
    args, p = draw_observer_args(draw, case, "build", len(shape))
    batches = []
    count = draw(st.sampled_from([1, 2, 3, 4, 1, 2, 0] if case.clean else [1, 2, 3, 4, 0]))
    bad = draw(st.integers(0, max(count - 1, 0)))  # the batch that gets the focused fault
    for i in range(count):
        if chance(draw, 30):  # another shape (a clean case keeps ndim and the axis length)
            if case.clean:
                new = list(draw_shape(draw, max_dim=5, empty=False, ndim=len(shape)))
                if p["axis"] is not None:
                    new[p["axis"]] = shape[p["axis"]]
                shape = tuple(new)
            else:
                shape = draw_shape(draw, max_ndim=4, max_dim=5)
        category = "batch" if i == bad else "another batch"
        batches.append(draw_batch(draw, case, rng, f"update {i}", shape, category))
    case.args = dict(args, batches=[b for b, _ in batches])
    case.p = dict(p, meanings=[m for _, m in batches])
    return case


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_Observer(data):
    fuzz_observer(data, "clean")


@pytest.mark.parametrize("focus", RANGE_CHANGES)
@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_Observer_changes(focus, data):
    fuzz_observer(data, focus)


def fuzz_observer(data, focus):
    case = data.draw(observer_cases(focus), label="case")
    target = "Observer"
    begin(target)
    args = dict(case.args)
    batches = args.pop("batches")
    try:
        observer = attempt(target, case, lambda: Observer(**args), phase="build")
    except Rejected as rejected:
        return tally(target, case, rejected.outcome)
    accepted, length = [], None
    for i, (batch, meaning) in enumerate(zip(batches, case.p["meanings"], strict=False)):
        phase = f"update {i}"
        this_length = axis_length(case, phase, meaning, case.p, length)
        inputs = snapshot(arrays_in(batch))
        try:
            attempt(target, case, lambda batch=batch: observer.update(batch), phase=phase)
        except Rejected:
            pass  # a refused batch must leave the observer as it was (checked below)
        else:
            accepted.append(meaning)
            length = this_length
        assert_unchanged(inputs, target)
    reference = expected_qparams(accepted, case.p)
    if reference is None:
        case.add("qparams() before any accepted update", INVALID, "qparams")
    elif reference == "too wide":
        verdict = GRAY if case.p["method"] == "percentile" else INVALID
        case.add("a range too wide for a float32 scale", verdict, "qparams")
    try:
        qp = attempt(target, case, observer.qparams, phase="qparams")
    except Rejected as rejected:
        return tally(target, case, rejected.outcome)
    check_qparams(qp, accepted, case.p)
    tally(target, case, "accepted")


# ---------------------------------------------------------------------------------------
# fold_batchnorm


def draw_vector(draw, case, rng, name, values, phase="call"):
    """A valid (or gray) spelling of the float64 vector `values` as a BatchNorm parameter
    or a bias: (argument, meaning float64 array)."""
    form = draw(st.sampled_from(["float64", "float32", "float64", "arranged", "ints"]))
    if form == "ints":
        values = np.round(values)
        arg = values.astype(np.int64)
    elif form == "float32":
        arg = values.astype(np.float32)
    elif form == "arranged":
        arg = arrange(draw, values.copy(), case, name, phase, byteorder=VALID)
    else:
        arg = values.copy()
    if faulty(draw, case, "lists", 3):
        case.add(f"{name} as a list of Python numbers", GRAY, phase)
        arg = np.asarray(arg).tolist()
    return arg, np.asarray(arg, np.float64)


FOLD_FAULTS = ["wdtype", "wshape", "length", "none", "complex", "objects", "strings"]
FOLD_FAULTS += ["huge-int", "var", "eps", "bias"]


@st.composite
def fold_cases(draw, focus):
    case = Case(focus)
    rng = seeded(draw)
    k, c = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    wshape = (k, c, 1, 1) if chance(draw, 40) else (k, c)
    wdtype = draw(st.sampled_from(["float32"] * 3 + ["float64", "float16", "longdouble"]))
    w = cast_to(rng.standard_normal(wshape) * 10.0 ** draw(st.integers(-3, 3)), wdtype)
    weight = arrange(draw, w, case, "weight", "call", byteorder=VALID)
    args = dict(weight=weight)
    p = dict(weight=weight)
    scales = {
        "gamma": rng.standard_normal(k) * 2,
        "beta": rng.standard_normal(k),
        "mean": rng.standard_normal(k),
        "var": rng.uniform(0.0, 3.0, k) * draw(st.sampled_from([1.0, 1.0, 0.0])),
    }
    if chance(draw, 60):
        args["bias"], p["bias"] = draw_vector(draw, case, rng, "bias", rng.standard_normal(k))
    else:
        args["bias"], p["bias"] = None, np.zeros(k)
    for name, values in scales.items():
        args[name], p[name] = draw_vector(draw, case, rng, name, values)
    eps = draw(st.sampled_from([None, 1e-5, 1e-3, np.float32(1e-5), 0.5, 2]))
    if (eps == 0.0 or eps is None) and (p["var"] <= 0).any():
        eps = 1e-5
    if faulty(draw, case, "eps-inf", 4):
        eps = math.inf
        case.add("eps=inf", GRAY)
    if eps is not None:
        args["eps"] = eps
    p["eps"] = 1e-5 if eps is None else float(eps)

    if faulty(draw, case, "fault", 40):
        fault = pick(draw, case, FOLD_FAULTS, "fault")
        name = draw(st.sampled_from(["gamma", "beta", "mean", "var", "bias"]))
        if fault == "wdtype":
            dtype = draw_odd_dtype(draw, exclude=("float16", "float64", "longdouble"))
            case.add(f"weight of dtype {dtype}")
            args["weight"] = cast_to(np.ones(wshape), dtype)
        elif fault == "wshape":
            shape = draw(st.sampled_from([(k,), (k, c, 1), (k, c, 3, 3), (k, c, 1, 1, 1), ()]))
            case.add(f"weight of shape {shape}")
            args["weight"] = np.ones(shape, np.float32)
        elif fault == "length":
            bad = draw(st.sampled_from([(k + 1,), (k, 1), (), (1, k)]))
            case.add(f"{name} of shape {bad} for K={k}")
            args[name] = np.ones(bad)
        elif fault == "none" and (k or name != "bias"):
            case.add(f"{name}=None" if name != "bias" else "bias=[None, ...]")
            args[name] = None if name != "bias" else [None] * k
        elif fault == "complex" and k:
            case.add(f"complex {name} (the imaginary part would be dropped)")
            args[name] = p[name] + 1j
        elif fault == "objects" and k:
            case.add(f"{name} with a None among its values")
            args[name] = [None] + list(p[name][1:])
        elif fault == "strings" and k:
            if draw(st.booleans()):
                case.add(f"{name} as numeric strings", GRAY)
                args[name] = [repr(float(v)) for v in p[name]]
            else:
                case.add(f"{name} as non-numeric strings")
                args[name] = ["abc"] * k
        elif fault == "huge-int" and k:
            case.add(f"{name} with the entry 10**400 (a finite real beyond float64)", GRAY)
            args[name] = [10**400] + list(p[name][1:])
            p[name] = np.r_[math.inf, p[name][1:]]
        elif fault == "var" and k:
            bad = draw(st.sampled_from([-1.0 - p["eps"], math.nan, -p["eps"]]))
            case.add(f"var with {bad} (var + eps must be positive)")
            args["var"] = np.r_[bad, p["var"][1:]]
        elif fault == "eps":
            bad = draw(st.sampled_from([-1e-3, math.nan, "a", 1j, np.array([1e-5, 1.0]), 10**400]))
            if isinstance(bad, int):
                case.add("eps=10**400", GRAY)
                p["eps"] = math.inf
            else:
                case.add(f"eps={brief(bad)}")
            args["eps"] = bad
        elif fault == "bias" and k:
            case.add(f"bias of length {k + 1}")
            args["bias"] = np.ones(k + 1)
    case.args, case.p = args, p
    return case


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_fold_batchnorm(data):
    fuzz_fold_batchnorm(data, "clean")


@pytest.mark.parametrize(
    "focus", ["mixed", "mixed-2"] + details("fault", FOLD_FAULTS) + ["lists", "eps-inf"]
)
@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_fold_batchnorm_changes(focus, data):
    fuzz_fold_batchnorm(data, focus)


def fuzz_fold_batchnorm(data, focus):
    case = data.draw(fold_cases(focus), label="case")
    target = "fold_batchnorm"
    begin(target)
    args, p = dict(case.args), case.p
    inputs = snapshot(arrays_in(args))
    try:
        result = attempt(target, case, lambda: fold_batchnorm(**args))
    except Rejected as rejected:
        assert_unchanged(inputs, target)
        return tally(target, case, rejected.outcome)
    assert_unchanged(inputs, target)
    folded_weight, folded_bias = result
    weight = np.asarray(p["weight"])
    k = weight.shape[0]
    with np.errstate(all="ignore"):
        factor = p["gamma"] / np.sqrt(p["var"] + p["eps"])
        shape = (k,) + (1,) * (weight.ndim - 1)
        expected_w = (weight.astype(np.float64) * factor.reshape(shape)).astype(np.float32)
        expected_b = (p["beta"] + (p["bias"] - p["mean"]) * factor).astype(np.float32)
    assert same_bits(folded_weight, expected_w), (folded_weight, expected_w)
    assert same_bits(folded_bias, expected_b), (folded_bias, expected_b)
    tally(target, case, "accepted")


# ---------------------------------------------------------------------------------------
# sqnr


SQNR_FAULTS = ["shape", "none", "complex", "datetime", "strings"]
SQNR_GRAY_FORMS = ["list", "bool", "numeric strings", "objects"]


@st.composite
def sqnr_cases(draw, focus):
    case = Case(focus)
    rng = seeded(draw)
    shape = draw_shape(draw, max_ndim=3, max_dim=6)
    ref = np.array(rng.standard_normal(shape) * 10.0 ** draw(st.integers(-30, 30)))
    kind = draw(st.sampled_from(["noisy", "noisy", "equal", "zero-signal", "zeros"]))
    if kind == "noisy":
        approx = ref + rng.standard_normal(shape) * np.abs(ref).max(initial=1.0) * 10.0 ** (
            -draw(st.integers(0, 12))
        )
    elif kind == "equal":
        approx = ref.copy()
    elif kind == "zero-signal":
        ref, approx = np.zeros(shape), np.array(rng.standard_normal(shape))
    else:
        ref, approx = np.zeros(shape), np.zeros(shape)
    if chance(draw, 8) and ref.size:
        ref.flat[0] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    args, meanings = [], []
    for name, values in (("reference", ref), ("approx", approx)):
        dtype = draw(st.sampled_from(["float64", "float64", "float32", "float16", "int64"]))
        arg = arrange(draw, cast_to(values, dtype), case, name, "call", byteorder=VALID)
        meaning = np.asarray(arg, np.float64)
        if faulty(draw, case, "gray", 6):
            form = pick(draw, case, SQNR_GRAY_FORMS, "gray")
            case.add(f"{name} as {form}", GRAY)
            if form == "list":
                arg = np.asarray(arg).tolist()
            elif form == "bool":
                arg = np.asarray(arg) > 0
            elif form == "numeric strings":
                arg = np.asarray(arg).astype(np.float64).astype(str)
            else:
                arg = np.asarray(arg).astype(object)
            meaning = np.asarray(arg, np.float64) if form != "bool" else arg.astype(np.float64)
        args.append(arg)
        meanings.append(meaning)
    if faulty(draw, case, "fault", 35):
        fault = pick(draw, case, SQNR_FAULTS, "fault")
        which = draw(st.integers(0, 1))
        if fault in ("complex", "datetime", "strings") and not ref.size:
            pass  # (an empty array of any dtype is an empty array of floats)
        elif fault == "shape":
            bad = draw(st.sampled_from([shape + (1,), (1,) + shape, tuple(s + 1 for s in shape)]))
            if bad != shape:
                case.add(f"shapes {shape} and {bad}")
                args[which] = np.ones(bad)
        elif fault == "none":
            case.add("None for an array")
            args[which] = None
        elif fault == "complex":
            case.add("complex arrays (the imaginary parts would be dropped)")
            args[which] = meanings[which] + 1j * (which + 1)
        elif fault == "datetime":
            case.add("datetime64 arrays")
            args[which] = np.zeros(shape, "datetime64[s]")
        elif fault == "strings":
            case.add("non-numeric strings")
            args[which] = np.full(shape, "abc")
    case.args = dict(reference=args[0], approx=args[1])
    case.p = dict(reference=meanings[0], approx=meanings[1])
    return case


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_sqnr(data):
    fuzz_sqnr(data, "clean")


@pytest.mark.parametrize(
    "focus", ["mixed", "mixed-2"] + details("fault", SQNR_FAULTS) + details("gray", SQNR_GRAY_FORMS)
)
@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_sqnr_changes(focus, data):
    fuzz_sqnr(data, focus)


def fuzz_sqnr(data, focus):
    case = data.draw(sqnr_cases(focus), label="case")
    target = "sqnr"
    begin(target)
    inputs = snapshot(arrays_in(case.args))
    try:
        got = attempt(target, case, lambda: sqnr(**case.args))
    except Rejected as rejected:
        assert_unchanged(inputs, target)
        return tally(target, case, rejected.outcome)
    assert_unchanged(inputs, target)
    assert type(got) is float, f"returned {type(got).__name__}"
    r, a = case.p["reference"], case.p["approx"]
    with np.errstate(all="ignore"):
        noise, signal = np.sum((r - a) ** 2), np.sum(r**2)
        if noise == 0:
            expected = math.inf
        elif signal == 0:
            expected = -math.inf
        else:
            expected = float(10.0 * np.log10(signal / noise))
    assert (
        (math.isnan(got) and math.isnan(expected))
        or got == expected
        or math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    ), (got, expected)
    tally(target, case, "accepted")


# ---------------------------------------------------------------------------------------
# QuantizedSequential.calibrate


CALIBRATE_FAULTS = ["layers-empty", "layers-not-conv", "chain", "layouts", "layers-int"]
CALIBRATE_FAULTS += ["inputs-empty", "inputs-int", "inputs-nan", "inputs-channels"]
CALIBRATE_FAULTS += ["inputs-3d", "inputs-none", "inputs-zero-size", "layers-gen"]


@st.composite
def calibrate_cases(draw, focus):
    case = Case(focus)
    rng = seeded(draw)
    layout = draw(st.sampled_from(LAYOUTS))
    depth = draw(st.integers(1, 3))
    channels = [draw(st.integers(1, 6)) for _ in range(depth + 1)]
    specs = []
    for i in range(depth):
        common = [g for g in (1, 2, 3) if channels[i] % g == 0 and channels[i + 1] % g == 0]
        groups = draw(st.sampled_from(common))
        weight = (rng.standard_normal((channels[i + 1], channels[i] // groups)) * 0.5).astype(
            np.float32
        )
        bias = rng.standard_normal(channels[i + 1]).astype(np.float32) if chance(draw, 60) else None
        activation = draw(st.sampled_from([None, "relu", "relu6", (-1.0, 2.0), (0.5, 0.5)]))
        stride = draw(st.sampled_from([1, 1, 2, (1, 2)]))
        specs.append(
            dict(
                weight=weight,
                bias=bias,
                layout=layout,
                stride=stride,
                groups=groups,
                activation=activation,
            )
        )
    inputs = []
    for _ in range(draw(st.integers(1, 3))):
        n, h, w = (draw(st.integers(1, 3)) for _ in range(3))
        shape = (n, channels[0], h, w) if layout == "NCHW" else (n, h, w, channels[0])
        dtype = draw(st.sampled_from(["float32", "float32", "float64", "float16"]))
        values = cast_to(rng.standard_normal(shape) * 10.0 ** draw(st.integers(-2, 2)), dtype)
        inputs.append(arrange(draw, values, case, "a calibration input", "call", byteorder=VALID))
    form = draw(st.sampled_from(["list", "tuple", "generator", "array"]))
    if form == "array" and len(inputs) > 1:
        form = "list"
    args = {}
    qd, dtype_arg = draw_qdtype(draw, case, "call")
    if dtype_arg is not None:
        args["x_dtype"] = dtype_arg
    per_channel = draw(st.sampled_from([None, True, False]))
    if per_channel is not None:
        args["per_channel"] = per_channel
    method = draw(st.sampled_from(kinds(case, [None, "minmax", "percentile", "bad"], "method")))
    if method == "bad":
        method = draw(st.sampled_from(["MINMAX", "bogus", 3]))
        case.add(f"method={method!r}")
    if method is not None:
        args["method"] = method
    layers_form = "list"
    if faulty(draw, case, "fault", 40):
        fault = pick(draw, case, CALIBRATE_FAULTS, "fault")
        if fault == "layers-empty":
            case.add("layers=[]")
            specs = []
        elif fault == "layers-not-conv":
            case.add("a layer that is not a Conv1x1")
            layers_form = "not-conv"
        elif fault == "chain" and depth > 1:
            case.add("layers that do not chain (channels)")
            i = draw(st.integers(1, depth - 1))
            specs[i]["weight"] = np.ones((channels[i + 1], channels[i] + 1), np.float32)
            specs[i]["groups"] = 1
        elif fault == "layouts" and depth > 1:
            case.add("layers of mixed layouts")
            specs[-1]["layout"] = "NHWC" if layout == "NCHW" else "NCHW"
        elif fault == "layers-int":
            case.add("layers=5")
            layers_form = "int"
        elif fault == "layers-gen":
            case.add("layers as a generator", GRAY)
            layers_form = "generator"
        elif fault == "inputs-empty":
            case.add("no calibration inputs")
            inputs, form = [], "list"
        elif fault == "inputs-int":
            case.add("an integer calibration input")
            inputs[0] = np.round(np.asarray(inputs[0], np.float64)).astype(np.int32)
        elif fault == "inputs-nan":
            case.add("NaN in a calibration input")
            inputs[0] = np.array(inputs[0], np.float32)
            inputs[0].flat[0] = np.nan
        elif fault == "inputs-channels":
            case.add("a calibration input with the wrong channel count")
            shape = list(np.shape(inputs[0]))
            shape[channel_axis(layout)] += 1
            inputs[0] = np.ones(shape, np.float32)
        elif fault == "inputs-3d":
            case.add("a 3-D calibration input")
            inputs[0] = np.ones(np.shape(inputs[0])[1:], np.float32)
        elif fault == "inputs-none":
            bad = draw(st.sampled_from([None, 5, "abc"]))
            case.add(f"calibration_inputs={bad!r}")
            inputs, form = bad, "bad"
        elif fault == "inputs-zero-size":
            case.add("an empty calibration input")
            shape = list(np.shape(inputs[0]))
            shape[0] = 0
            inputs[0] = np.ones(shape, np.float32)
    case.args = dict(args, specs=specs, inputs=inputs, form=form, layers_form=layers_form)
    case.p = dict(
        qd=qd,
        per_channel=True if per_channel is None else per_channel,
        method="minmax" if method is None else method,
    )
    return case


def check_calibrated(net, layers, inputs, p):
    qd = p["qd"]
    qmin, qmax = QDTYPE_RANGES[qd]
    assert isinstance(net, QuantizedSequential)
    assert net.x_dtype == qd and len(net.layers) == len(layers)
    assert len(net.boundary_qparams) == len(layers) + 1
    for qp in net.boundary_qparams:
        assert isinstance(qp, QParams) and type(qp.scale) is float and type(qp.zero_point) is int
        assert EPS32 <= qp.scale < math.inf and qmin <= qp.zero_point <= qmax, qp
    # The input boundary depends on the data alone.
    x32 = [np.asarray(x, np.float32) for x in inputs]
    lo = min(float(x.min()) for x in x32)
    hi = max(float(x.max()) for x in x32)
    scale, zp = qparams_reference(lo, hi, qd, False)
    if p["method"] == "minmax":
        assert tuple(net.input_qparams) == (float(scale), int(zp)), (net.input_qparams, scale)
    else:  # the percentile range lies inside [min, max]
        assert net.input_qparams.scale <= float(scale), (net.input_qparams, scale)
    for i, (f, q) in enumerate(zip(layers, net.layers, strict=False)):
        assert isinstance(q, fastpw.QConv1x1)
        same = ("in_channels", "out_channels", "layout", "stride", "groups", "activation")
        for name in same:
            assert getattr(q, name) == getattr(f, name), (name, i)
        assert tuple(q.x_quant) == tuple(net.boundary_qparams[i])
        assert tuple(q.y_quant) == tuple(net.boundary_qparams[i + 1])
        # from_float's documented weight and bias quantization
        k = f.weight.shape[0]
        ws = np.broadcast_to(np.asarray(q.w_quant.scale, np.float64), (k,))
        if not p["per_channel"]:
            assert np.ndim(q.w_quant.scale) == 0
        w64 = f.weight.astype(np.float64)
        expected = np.clip(np.rint(w64 / ws[:, None]), -127, 127)
        assert (q.weight == expected).all(), (i, q.weight, expected)
        assert (ws * 127 >= np.abs(w64).max(axis=1) * (1 - 1e-6)).all(), (i, ws)
        assert (q.bias is None) == (f.bias is None)
        if f.bias is not None:
            bias_scale = float(np.float32(q.x_quant.scale)) * ws
            expected_b = np.clip(np.rint(f.bias / bias_scale), INT32_MIN, INT32_MAX)
            assert (q.bias == expected_b).all(), (i, q.bias, expected_b)
    # The chain against the int64 reference, layer by layer, from the first input.
    xin = x32[0]
    s0, z0 = net.input_qparams
    xq = quantize_reference(xin, s0, z0, qd)
    yq = net.run_quantized(xq)
    expected = xq
    for q in net.layers:
        expected = qconv1x1_reference(
            expected,
            q.weight,
            q.bias,
            x_quant=tuple(q.x_quant),
            w_quant=(q.w_quant.scale, 0),
            y_quant=tuple(q.y_quant),
            out_dtype=qd,
            layout=q.layout,
            stride=q.stride,
            groups=q.groups,
            activation=q.activation,
        )
    assert same_bits(yq, expected), (yq, expected)
    s, z = net.output_qparams
    assert same_bits(net(xin), dequantize_reference(expected, s, z))


@fuzz_settings(CLEAN_EXAMPLES)
@given(data=st.data())
def test_fuzz_QuantizedSequential_calibrate(data):
    fuzz_calibrate(data, "clean")


@pytest.mark.parametrize(
    "focus", ["mixed", "mixed-2"] + details("fault", CALIBRATE_FAULTS) + ["method", "dtype"]
)
@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_QuantizedSequential_calibrate_changes(focus, data):
    fuzz_calibrate(data, focus)


def fuzz_calibrate(data, focus):
    case = data.draw(calibrate_cases(focus), label="case")
    isa = data.draw(st.sampled_from(ISAS), label="isa")
    target = "QuantizedSequential"
    begin(target)
    args = dict(case.args)
    specs, inputs, form = args.pop("specs"), args.pop("inputs"), args.pop("form")
    layers_form = args.pop("layers_form")
    with kernel_family(isa):
        layers = [fastpw.Conv1x1(s.pop("weight"), s.pop("bias"), **s) for s in map(dict, specs)]
        if layers_form == "not-conv":
            layers = layers + [not_a_conv1x1(layers)]
        given_layers = {
            "list": layers,
            "not-conv": layers,
            "int": 5,
            "generator": (layer for layer in layers),
        }[layers_form]
        given_inputs = {
            "list": list(inputs) if isinstance(inputs, list) else inputs,
            "tuple": tuple(inputs) if isinstance(inputs, list) else inputs,
            "generator": (x for x in inputs) if isinstance(inputs, list) else inputs,
            "array": inputs[0] if isinstance(inputs, list) and inputs else inputs,
            "bad": inputs,
        }[form]
        saved = snapshot(arrays_in(list(inputs) if isinstance(inputs, list) else []))
        try:
            net = attempt(
                target,
                case,
                lambda: QuantizedSequential.calibrate(given_layers, given_inputs, **args),
            )
        except Rejected as rejected:
            assert_unchanged(saved, target)
            return tally(target, case, rejected.outcome)
        assert_unchanged(saved, target)
        check_calibrated(net, layers, inputs, case.p)
    tally(target, case, "accepted")


def not_a_conv1x1(layers):
    """Something that is not a Conv1x1 but looks like a layer: a QConv1x1, or a lambda."""
    if layers:
        f = layers[-1]
        return fastpw.QConv1x1(
            np.ones((f.out_channels, f.out_channels), np.int8),
            x_quant=(0.1, 0),
            w_quant=(0.1, 0),
            y_quant=(0.1, 0),
            layout=f.layout,
        )
    return lambda x: x
