"""The picture of ``python -m fastpw --plot FILE``: a roofline per dtype and fastpw's
ratio to the best peer per layer, drawn from the report that ``--json`` writes.

- ``draw_report(report, path)``: the figure, from the report alone (``machine``,
  ``benchmark`` and ``int8_benchmark``), so a saved report can be drawn again;
- ``draw_sweep(report, path)``: the cliff sweep of ``python -m fastpw --sweep``, one
  panel per line of layers;
- ``arithmetic_intensity(row)``: a layer's operations per byte of its least memory
  traffic, the roofline's x axis.

matplotlib is optional (``pip install "fastpw[plot]"``): it is imported by the two
drawing functions only, and the figure is drawn on matplotlib's Agg canvas without pyplot,
so no window and no global backend are involved. Not API: the command line is its only
user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._peers import implementation_label

#: The install command named when matplotlib is missing.
PLOT_INSTALL = 'pip install "fastpw[plot]"'

#: Bytes per element of x, the weights and y, by dtype (the bias is int32 or float32:
#: 4 bytes per output channel either way).
ELEMENT_BYTES = {"float32": (4, 4, 4), "int8": (1, 1, 1)}

#: Marker per implementation (fastpw a large star), and its face filled in NCHW and
#: hollow in NHWC, so layout and implementation read apart.
MARKERS = {"fastpw": "*", "numpy": "s", "onnxruntime": "o", "torch": "^", "xnnpack": "D"}
OTHER_MARKERS = "v<>phX8"


def arithmetic_intensity(row: Mapping[str, Any]) -> float:
    """Operations per byte a layer must move at least: x read once, the weights and bias
    read once (for the whole batch), y written once (``row``: a report row, with its
    ``layer`` and ``dtype``)."""
    layer = row["layer"]
    stride, groups = layer.get("stride", 1), layer.get("groups", 1)
    batch = layer.get("batch", 1)
    out_pixels = batch * -(-layer["height"] // stride) * -(-layer["width"] // stride)
    x_bytes, w_bytes, y_bytes = ELEMENT_BYTES[row["dtype"]]
    traffic = (
        x_bytes * batch * layer["c_in"] * layer["height"] * layer["width"]
        + w_bytes * layer["c_out"] * (layer["c_in"] // groups)
        + 4 * layer["c_out"]
        + y_bytes * layer["c_out"] * out_pixels
    )
    operations = 2 * (layer["c_in"] // groups) * layer["c_out"] * out_pixels
    return float(operations / traffic)


def _implementation(key: str) -> tuple[str, str]:
    """("torch-x86", "NCHW") from "torch-x86_NCHW"."""
    name, layout = key.rsplit("_", 1)
    return name, layout


def _styles(keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A marker and colour per implementation key: one colour per implementation,
    filled in NCHW, hollow in NHWC."""
    names = list(dict.fromkeys(_implementation(key)[0] for key in keys))
    others = iter(OTHER_MARKERS * (1 + len(names) // len(OTHER_MARKERS)))
    marker = {name: MARKERS.get(name.split("-")[0]) or next(others) for name in names}
    # torch's engines share the torch marker: their colours tell them apart.
    colour = {name: f"C{index % 10}" for index, name in enumerate(names)}
    styles = {}
    for key in keys:
        name, layout = _implementation(key)
        styles[key] = {
            "marker": marker[name],
            "markeredgecolor": colour[name],
            "markerfacecolor": colour[name] if layout == "NCHW" else "none",
            "markersize": 14 if name == "fastpw" else 7,
            "linestyle": "none",
        }
    return styles


def _ceiling(machine: Mapping[str, Any], dtype: str) -> float | None:
    """The compute ceiling of the report's threads, or None where it was not measured."""
    key = "fma_peak_gflops_1thread" if dtype == "float32" else "int8_peak_gops_1thread"
    per_thread = machine.get(key)
    if not per_thread:
        return None
    threads = machine.get("threads", 1) if machine.get("openmp", True) else 1
    return float(per_thread) * threads


def _roofline(
    axes: Any, rows: Sequence[Mapping[str, Any]], machine: Mapping[str, Any], dtype: str
) -> None:
    unit = "GFLOP/s" if dtype == "float32" else "GOP/s"
    keys = list(dict.fromkeys(key for row in rows for key in row["rates"]))
    styles = _styles(keys)
    intensities = [arithmetic_intensity(row) for row in rows]
    for key in keys:
        points = [
            (intensity, row["rates"][key])
            for intensity, row in zip(intensities, rows, strict=True)
            if key in row["rates"]
        ]
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, label=implementation_label(key), **styles[key])
    low, high = min(intensities) / 1.5, max(intensities) * 1.5
    ceiling = _ceiling(machine, dtype)
    bandwidth = machine.get("memory_bandwidth_gbs")
    if ceiling and bandwidth:  # show the roof's knee even when every layer is past it
        low = min(low, ceiling / bandwidth / 2)
    notes = []
    if ceiling:
        axes.axhline(ceiling, color="black", linewidth=1)
        what = "FMA" if dtype == "float32" else "fastpw's int8 instructions"
        axes.annotate(
            f"compute ceiling ({what}) {ceiling:.0f} {unit}",
            (low, ceiling),
            textcoords="offset points",
            xytext=(2, 3),
            fontsize=8,
        )
    else:
        notes.append(f"{dtype} compute ceiling not measured")
    if bandwidth:
        top = ceiling or max(max(row["rates"].values()) for row in rows) * 2
        knee = min(high, top / bandwidth)  # where the memory line meets the ceiling
        axes.plot([low, knee], [bandwidth * low, bandwidth * knee], color="grey", linewidth=1)
        axes.annotate(
            f"memory {bandwidth:.0f} GB/s",
            (low, bandwidth * low),
            textcoords="offset points",
            xytext=(2, 3),
            fontsize=8,
            color="grey",
        )
    else:
        notes.append("memory bandwidth not measured")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(low, high)
    axes.set_xlabel(f"arithmetic intensity ({'FLOP' if dtype == 'float32' else 'op'}/byte)")
    axes.set_ylabel(unit)
    threads = machine.get("threads", "?")
    title = f"{dtype} roofline, {threads} thread(s)"
    axes.set_title(title + "".join(f"\n({note})" for note in notes), fontsize=10)
    axes.grid(True, which="both", linewidth=0.3)
    axes.legend(fontsize=7, ncols=2, loc="lower right")


def _ratios(axes: Any, rows: Sequence[Mapping[str, Any]], dtype: str) -> None:
    """Per layer and layout: fastpw over the fastest peer in that layout. Unsteady rows
    (their rounds disagreed) are drawn grey and hatched: no ratio is claimed from them."""
    layouts = sorted(
        {_implementation(key)[1] for row in rows for key in row["rates"]},
        key=["NCHW", "NHWC"].index,
    )
    width = 0.8 / max(len(layouts), 1)
    for offset, layout in enumerate(layouts):
        labelled = False
        for index, row in enumerate(rows):
            rates = row["rates"]
            peers = [
                rate
                for key, rate in rates.items()
                if _implementation(key)[1] == layout and not key.startswith("fastpw_")
            ]
            mine = rates.get(f"fastpw_{layout}")
            if mine is None or not peers:
                continue
            steady = row.get("steady") == "yes"
            axes.bar(
                index + (offset - (len(layouts) - 1) / 2) * width,
                mine / max(peers),
                width,
                color=f"C{offset}" if steady else "lightgrey",
                edgecolor=f"C{offset}",
                hatch=None if steady else "//",
                label=None if labelled else f"fastpw {layout}",
            )
            labelled = True
    axes.axhline(1.0, color="black", linewidth=1)
    axes.set_xticks(range(len(rows)), [row["shape"] for row in rows], rotation=60, ha="right")
    axes.tick_params(axis="x", labelsize=7)
    axes.set_ylabel("fastpw / best peer, same layout")
    axes.set_title(
        f"{dtype}: fastpw against the fastest peer (grey, hatched: unsteady)", fontsize=10
    )
    axes.legend(fontsize=8)


def draw_report(report: Mapping[str, Any], path: str | Path) -> None:
    """Draw ``report`` (as ``python -m fastpw --json`` writes it) to ``path`` (PNG, or
    any format matplotlib knows by the suffix): one column per dtype with rows, a
    roofline above a bar chart of ratios. ImportError without matplotlib; ValueError for
    a report without benchmark rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tables = [
        (dtype, rows)
        for dtype, rows in (
            ("float32", report.get("benchmark") or []),
            ("int8", report.get("int8_benchmark") or []),
        )
        if rows
    ]
    if not tables:
        raise ValueError("the report has no benchmark rows to draw")
    machine = report.get("machine", {})
    figure = Figure(figsize=(7.5 * len(tables), 12), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, len(tables), squeeze=False, height_ratios=(3, 2))
    for column, (dtype, rows) in enumerate(tables):
        _roofline(grid[0][column], rows, machine, dtype)
        _ratios(grid[1][column], rows, dtype)
    _suptitle(figure, machine)
    figure.savefig(path, dpi=110)


def _suptitle(figure: Any, machine: Mapping[str, Any]) -> None:
    cpu = machine.get("cpu_model") or machine.get("platform", "")
    kernels = machine.get("kernel_per_operation", {})
    figure.suptitle(
        f"fastpw {machine.get('fastpw_version', '')} on {cpu}: kernels "
        + ", ".join(f"{op} {family}" for op, family in kernels.items() if op != "quantize"),
        fontsize=11,
    )


def draw_sweep(report: Mapping[str, Any], path: str | Path) -> None:
    """Draw the ``sweep`` of ``report`` (``python -m fastpw --sweep --json``) to
    ``path``: one panel per line, GFLOP/s against the size that varies (log scale),
    NCHW filled and NHWC hollow, cliffs ringed in red. ImportError without matplotlib;
    ValueError for a report without a sweep."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ._sweep import CLIFF_RATIO

    lines = report.get("sweep") or []
    if not lines:
        raise ValueError("the report has no sweep to draw")
    figure = Figure(figsize=(12, 4 * ((len(lines) + 1) // 2)), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots((len(lines) + 1) // 2, 2, squeeze=False)
    panels = [axes for row in grid for axes in row]
    for axes, line in zip(panels, lines, strict=False):
        for layout, face in (("NCHW", "C0"), ("NHWC", "none")):
            points = sorted(
                (p for p in line["points"] if p["layout"] == layout), key=lambda p: p["size"]
            )
            sizes = [p["size"] for p in points]
            rates = [p["gflops"] for p in points]
            axes.plot(sizes, rates, color="C0", linestyle="-" if face != "none" else "--")
            axes.scatter(sizes, rates, marker="o", facecolors=face, edgecolors="C0", label=layout)
            cliffs = [p for p in points if p["vs_trend"] < CLIFF_RATIO]
            if cliffs:
                axes.scatter(
                    [p["size"] for p in cliffs],
                    [p["gflops"] for p in cliffs],
                    s=160,
                    facecolors="none",
                    edgecolors="red",
                    label=f"{layout} cliff" if cliffs else None,
                )
        axes.set_xscale("log", base=2)
        axes.set_xlabel("H = W" if line["varies"] == "spatial" else "C = K")
        axes.set_ylabel("GFLOP/s")
        axes.set_ylim(bottom=0)
        axes.set_title(line["title"], fontsize=10)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8, loc="lower right")
    for axes in panels[len(lines) :]:
        axes.set_visible(False)
    _suptitle(figure, report.get("machine", {}))
    figure.savefig(path, dpi=110)


def matplotlib_missing() -> str | None:
    """Why ``--plot`` cannot draw (matplotlib not importable), or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"--plot needs matplotlib: {PLOT_INSTALL}"
    return None
