"""Speedup per layer, drawn from a results CSV of ``fastconv bench``.

One panel per model group (rows) and direction (columns); in each, one bar per layer and batch
size for every dtype and layout, on a log scale around a line at 1.0 (above it fastconv is the
faster). Only the CSV is read, so a plot can be redrawn from old results:

    python -m fastconv.bench.plot benchmarks/results/nvidia-h100-80gb-hbm3-2025-01-31.csv
"""
import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# the order in which the columns of panels appear
_DIRECTION_ORDER = ("forward", "backward", "both", "inference", "train_step")
# inches above the panels for the title (two lines) and, under it, the legend
_HEADER = 0.9
# inches: the narrowest figure
_MIN_WIDTH = 11.0


def read_rows(path) -> List[Dict[str, str]]:
    """The rows of a results CSV, as strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _speedup(row: Dict[str, str]) -> Optional[float]:
    try:
        value = float(row.get("speedup", ""))
    except ValueError:
        return None
    return value if value > 0 and math.isfinite(value) else None


def _ordered(values) -> list:
    return list(dict.fromkeys(values))


def plot_speedups(csv_path, png_path=None, title: Optional[str] = None) -> Path:
    """Draw the speedups of a results CSV into a PNG.

    Args:
        csv_path: a CSV written by ``fastconv bench`` (columns of
            :data:`fastconv.bench.harness.COLUMNS`; ``group``, ``layer``, ``batch``,
            ``direction``, ``dtype``, ``layout`` and ``speedup`` are read).
        png_path: where to write; default: the CSV's path with ``.png``.
        title: the figure's title; default: device, mode and date from the CSV.

    Returns:
        Path: the PNG written.

    Raises:
        ValueError: the CSV lacks a needed column or holds no speedup to plot.
    """
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    csv_path = Path(csv_path)
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    rows = read_rows(csv_path)
    needed = ("group", "layer", "batch", "direction", "dtype", "layout", "speedup")
    missing = [c for c in needed if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"plot_speedups(): csv_path {str(csv_path)!r} lacks the column(s) "
                         f"{missing}; is it a results CSV of fastconv bench?")
    rows = [r for r in rows if _speedup(r) is not None]
    if not rows:
        raise ValueError(f"plot_speedups(): csv_path {str(csv_path)!r} holds no speedup to plot")

    groups = _ordered(r["group"] for r in rows)
    directions = sorted(_ordered(r["direction"] for r in rows),
                        key=lambda d: _DIRECTION_ORDER.index(d) if d in _DIRECTION_ORDER else 99)
    series = _ordered((r["dtype"], r["layout"]) for r in rows)
    panels: Dict[Tuple[str, str], Dict[Tuple[str, str], Dict[str, float]]] = {}
    for r in rows:
        bars = panels.setdefault((r["group"], r["direction"]), {})
        label = f"{r['layer']} n{r['batch']}"
        bars.setdefault((r["dtype"], r["layout"]), {})[label] = _speedup(r)

    widest = max(len(_ordered(lbl for s in bars.values() for lbl in s)) for bars in
                 panels.values())
    col_width = min(30.0, max(5.0, 0.12 * widest * max(1, len(series)) ** 0.5 + 2))
    col_width = max(col_width, _MIN_WIDTH / len(directions))  # room for the title
    fig, axes = plt.subplots(len(groups), len(directions), squeeze=False,
                             figsize=(col_width * len(directions), 3.6 * len(groups) + _HEADER))
    colours = plt.get_cmap("tab10")
    width = 0.8 / len(series)
    for i, group in enumerate(groups):
        for j, direction in enumerate(directions):
            ax = axes[i][j]
            bars = panels.get((group, direction))
            if not bars:
                ax.axis("off")
                continue
            labels = _ordered(lbl for s in series for lbl in bars.get(s, {}))
            for k, s in enumerate(series):
                values = bars.get(s, {})
                xs = [n + (k - (len(series) - 1) / 2) * width
                      for n, lbl in enumerate(labels) if lbl in values]
                ax.bar(xs, [values[lbl] for lbl in labels if lbl in values], width,
                       color=colours(k % 10))
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_title(f"{group} — {direction}", fontsize=9)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=90, fontsize=5)
            if j == 0:
                ax.set_ylabel("speedup vs baseline")
    if title is None:
        first = read_rows(csv_path)[0]
        title = ("fastconv speedup per layer: baseline ms / fastconv ms (above 1: fastconv is "
                 f"faster)\n{first.get('device', '?')}, {first.get('date', '')}")
        if first.get("mode") == "dry":
            title += " — DRY RUN: tiny shapes, measures nothing"
    # placed in inches from the top: figure fractions would move with the number of rows
    height = fig.get_size_inches()[1]
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    # one legend for the figure, under the title: every panel gives a dtype and layout the
    # same colour
    fig.legend([Patch(color=colours(k % 10)) for k in range(len(series))],
               [f"{dtype} {layout}" for dtype, layout in series], loc="upper center",
               ncol=len(series), fontsize=8, bbox_to_anchor=(0.5, 1 - 0.5 / height))
    fig.tight_layout()
    # then the top edge by hand (tight_layout ignores a figure legend): the header, and the
    # first row's panel titles
    fig.subplots_adjust(top=1 - (_HEADER + 0.3) / height)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, format="png", dpi=100)
    plt.close(fig)
    return png_path


def _field(row, name, default=None):
    value = row.get(name, default) if isinstance(row, dict) else getattr(row, name, default)
    return default if value in ("", None) else value


def _number(row, name) -> Optional[float]:
    try:
        value = float(_field(row, name, "nan"))
    except (TypeError, ValueError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def plot_roofline(rows, peak, png_path, ceilings: Optional[Dict[str, float]] = None,
                  title: Optional[str] = None) -> Path:
    """A roofline chart: achieved TFLOP/s against arithmetic intensity (FLOPs per minimum
    byte) for every timed case, under the ceilings: one compute roof per dtype and the memory
    roof (bandwidth x intensity).

    Args:
        rows: :class:`~fastconv.bench.harness.BenchRow` objects or CSV rows (dicts); ``flops``,
            ``min_bytes``, ``tflops``, ``dtype``, ``direction`` and ``tf32`` are read; rows
            without a time (errors) are left out.
        peak (GpuPeak): the GPU's peaks (:mod:`fastconv.bench.roofline`).
        png_path: where to write.
        ceilings: measured ceilings that replace the datasheet's: ``{"float16": TFLOP/s, ...,
            "bandwidth": TB/s}``.
        title: default: the GPU's name.

    Raises:
        ValueError: no row has a time, FLOPs and bytes.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    points = []
    for r in rows:
        flops, nbytes, tflops = (_number(r, "flops"), _number(r, "min_bytes"),
                                 _number(r, "tflops"))
        if flops and nbytes and tflops:
            points.append((flops / nbytes, tflops, str(_field(r, "dtype", "?")),
                           str(_field(r, "direction", "?")),
                           str(_field(r, "tf32", "False")) in ("True", "true", "1")))
    if not points:
        raise ValueError("plot_roofline(): no row has a time, FLOPs and bytes to plot")
    ceilings = dict(ceilings or {})
    bandwidth = ceilings.pop("bandwidth", peak.tbytes_per_s)  # TB/s
    dtypes = _ordered(p[2] for p in points)
    tf32 = any(p[4] for p in points)

    def roof(dtype: str) -> float:
        if dtype in ceilings:
            return ceilings[dtype]
        return peak.peak_flops(getattr(torch, dtype, torch.float32), tf32) / 1e12

    colours = plt.get_cmap("tab10")
    markers = {"forward": "o", "backward": "s", "both": "^", "inference": "D",
               "train_step": "P"}
    fig, ax = plt.subplots(figsize=(9, 6))
    xs = [p[0] for p in points]
    # wide enough to show where each memory roof meets its compute roof
    ridges = [roof(d) / bandwidth for d in dtypes]
    x_lo, x_hi = min(xs + ridges) / 4, max(xs + ridges) * 2
    for k, dtype in enumerate(dtypes):
        colour = colours(k % 10)
        top = roof(dtype)
        ridge = top / bandwidth  # FLOP/byte where the memory roof meets the compute roof
        grid = [x_lo, min(max(ridge, x_lo), x_hi), x_hi]
        ax.plot(grid, [min(top, bandwidth * x) for x in grid], color=colour, linewidth=1.2,
                linestyle="--")
        ax.annotate(f"{dtype} peak {top:.4g} TFLOP/s", (x_hi, top), fontsize=8, color=colour,
                    ha="right", va="bottom")
        for direction, marker in markers.items():
            pts = [p for p in points if p[2] == dtype and p[3] == direction]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colour,
                           marker=marker, s=18, alpha=0.8, label=f"{dtype} {direction}")
    ax.annotate(f"memory roof {bandwidth:.3g} TB/s", (x_lo, bandwidth * x_lo), fontsize=8,
                rotation=0, ha="left", va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs per minimum byte moved)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title or f"fastconv roofline on {peak.name} ({len(points)} cases; dashed: "
                          f"{'measured' if ceilings else 'datasheet'} ceilings)", fontsize=10)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, format="png", dpi=100)
    plt.close(fig)
    return png_path


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv.bench.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="a results CSV of fastconv bench")
    parser.add_argument("png", nargs="?", help="the PNG to write (default: next to the CSV)")
    args = parser.parse_args(argv)
    print(f"plot written to {plot_speedups(args.csv, args.png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
