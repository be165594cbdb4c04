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
