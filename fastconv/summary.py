"""Per-layer complexity of a model, the way the architectures are taught: output shape,
parameters, multiply-accumulates and activation memory of every layer, with totals.

The model runs once on the meta device by default: shapes only, no arithmetic, so even VGG-16 at
224×224 is summarised instantly on any machine (fastconv's ops have fake implementations).

Conventions (those of the published tables, e.g. CS231n's VGG-16 walk-through):

* MACs count the multiply-accumulates of convolutions (``out_values × C_in/groups × kH × kW``;
  for a transposed convolution ``in_values × C_out/groups × kH × kW``) and of linear layers
  (``out_values × in_features``); biases, normalisation, activations and pooling count 0.
* Activation memory is the number of values a layer's output holds (the input image counts as
  a row of its own). In-place activations, identities, flattening views and dropout create no
  new values and count 0.
* Parameters are a layer's own; the total counts every parameter of the model once.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

# layers whose output is (a view of) their input: no new activation values
_NO_NEW_VALUES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout2d,
                  nn.Dropout1d, nn.AlphaDropout)


@dataclass
class LayerStats:
    name: str
    kind: str
    output_shape: Tuple[int, ...]
    params: int
    macs: int
    activations: int


@dataclass
class ModelSummary:
    model: str
    input_shape: Tuple[int, ...]
    dtype: torch.dtype
    layers: List[LayerStats] = field(default_factory=list)
    total_params: int = 0

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def total_activations(self) -> int:
        """Values held by the input and every layer's output (one forward pass)."""
        return _numel(self.input_shape) + sum(layer.activations for layer in self.layers)

    @property
    def bytes_per_value(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _first_tensor(value) -> Optional[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        return _first_tensor(list(value.values()))
    return None


def layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of ``module`` (0 for layers without any)."""
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        x = _first_tensor(inputs)
        per_input = module.out_channels // module.groups * _numel(module.kernel_size)
        return x.numel() * per_input
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_output = module.in_channels // module.groups * _numel(module.kernel_size)
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _creates_values(module: nn.Module, inputs: tuple, output: torch.Tensor) -> bool:
    if isinstance(module, _NO_NEW_VALUES) or getattr(module, "inplace", False):
        return False
    return not any(output is t for t in inputs)


def summarize(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), batch: int = 1,
              device="meta", dtype: torch.dtype = torch.float32, name: str = "",
              inputs: Optional[tuple] = None) -> ModelSummary:
    """Run ``model`` once and collect the statistics of every leaf module.

    Args:
        model (nn.Module): the model; it is moved to ``device`` (on "meta" its weights become
            shapes only, so pass a copy if the weights matter).
        input_size (sequence of int): one input without the batch axis, e.g. (3, 224, 224).
        batch (int): batch size of the pass (MACs and activations scale with it).
        device: where to run; "meta" computes shapes only.
        dtype: of the input and the model (sets bytes per value).
        name (str): the model's name in the summary.
        inputs (tuple, optional): the arguments of ``forward`` instead of one random input
            (e.g. features and boxes of an RoI head); ``input_size`` then only labels the
            summary.

    Returns:
        ModelSummary: the layers in call order and the totals.
    """
    model = model.to(device=device, dtype=dtype).eval()
    if inputs is None:
        inputs = (torch.zeros((batch, *input_size), device=device, dtype=dtype),)
    summary = ModelSummary(name or type(model).__name__, (batch, *input_size), dtype)
    summary.total_params = sum(p.numel() for p in model.parameters())
    names = {m: n for n, m in model.named_modules()}

    def hook(module, args, output):
        out = _first_tensor(output)
        if out is None:
            return
        summary.layers.append(LayerStats(
            name=names.get(module, "?"), kind=type(module).__name__,
            output_shape=tuple(out.shape),
            params=sum(p.numel() for p in module.parameters(recurse=False)),
            macs=layer_macs(module, args, out),
            activations=out.numel() if _creates_values(module, args, out) else 0))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return summary


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def print_summary(summary: ModelSummary, console=None) -> None:
    """The per-layer table with totals at the bottom (a rich table)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{summary.model}: input {'x'.join(map(str, summary.input_shape))}",
                  show_footer=True)
    table.add_column("layer", footer="total")
    table.add_column("type")
    table.add_column("output shape")
    table.add_column("params", justify="right", footer=f"{summary.total_params:,}")
    table.add_column("MACs", justify="right", footer=_human(summary.total_macs))
    table.add_column("activations", justify="right",
                     footer=f"{_human(summary.total_activations)} "
                            f"({_human(summary.total_activations * summary.bytes_per_value)}B)")
    table.add_row("input", "", "x".join(map(str, summary.input_shape)), "0", "0",
                  _human(_numel(summary.input_shape)))
    for layer in summary.layers:
        table.add_row(layer.name, layer.kind, "x".join(map(str, layer.output_shape)),
                      f"{layer.params:,}", _human(layer.macs), _human(layer.activations))
    console.print(table)


def _stage(name: str) -> str:
    """The stage a layer belongs to: its name's first component ("layer2" of
    "layer2.0.conv1"), or for a flat sequence ("features.7") the whole sequence."""
    return name.split(".")[0] if name else "?"


def plot_summary(summary: ModelSummary, path: str) -> dict:
    """Parameters, multiply-accumulates and activation values per layer, as three panels of
    horizontal bars sharing the layer axis, saved to ``path`` (PNG).

    Layers run top to bottom in call order; consecutive layers of one stage (the name's first
    component: ``layer1``, ``features``, ``Mixed_5b``) share a colour and a shaded band
    labelled with the stage's totals, and each panel's title gives the model's total. Layers
    with nothing to count (in-place activations, flatten, dropout) are not drawn; the figure
    says how many.

    Returns:
        dict: ``rows`` (the layer names drawn, in order), ``omitted`` (how many were not) and
        ``stages`` (name, first row, last row) — what the figure shows.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [layer for layer in summary.layers
              if layer.params or layer.macs or layer.activations]
    omitted = len(summary.layers) - len(layers)
    stages = []  # consecutive runs: (stage name, first index, last index)
    for i, layer in enumerate(layers):
        stage = _stage(layer.name)
        if stages and stages[-1][0] == stage:
            stages[-1] = (stage, stages[-1][1], i)
        else:
            stages.append((stage, i, i))

    n = max(len(layers), 1)
    label_size = 8 if n <= 60 else 6 if n <= 200 else 4.5
    row_height = 0.2 if n <= 60 else 0.13 if n <= 200 else 0.085
    fig, axes = plt.subplots(1, 3, sharey=True,
                             figsize=(15, min(600.0, 2.2 + row_height * n)))
    colours = plt.get_cmap("tab10")
    colour_of = {}
    for stage, _, _ in stages:
        colour_of.setdefault(stage, colours(len(colour_of) % 10))
    ys = list(range(len(layers)))
    series = (("parameters", [layer.params for layer in layers], summary.total_params, ""),
              ("multiply-accumulates", [layer.macs for layer in layers], summary.total_macs, ""),
              ("activation values", [layer.activations for layer in layers],
               summary.total_activations, " (input included)"))
    for col, (ax, (title, values, total, note)) in enumerate(zip(axes, series)):
        ax.barh(ys, values, color=[colour_of[_stage(layer.name)] for layer in layers],
                height=0.8)
        ax.set_xscale("symlog", linthresh=1)
        top = max(max(values, default=1), 1)
        decades = len(str(int(top)))  # 10^0 .. 10^(decades-1)
        step = max(1, -(-decades // 5))
        ticks = [0] + [10 ** k for k in range(0, decades + 1, step)]
        ax.set_xticks(ticks)
        ax.set_xticklabels([_human(t) for t in ticks], fontsize=8)
        ax.set_xlim(0, 10 ** decades)
        ax.set_title(f"{title}\ntotal {_human(total)}{note}", fontsize=10)
        ax.grid(True, axis="x", linewidth=0.3, alpha=0.5)
        for k, (stage, first, last) in enumerate(stages):
            if k % 2:
                ax.axhspan(first - 0.5, last + 0.5, color="0.93", zorder=0)
            if col == 2 and (last - first >= 1 or len(stages) <= 40):
                part = layers[first:last + 1]
                ax.annotate(f"{stage}: {_human(sum(x.params for x in part))} params, "
                            f"{_human(sum(x.macs for x in part))} MACs",
                            xy=(1.01, (first + last) / 2), xycoords=("axes fraction", "data"),
                            fontsize=max(label_size, 6), va="center", ha="left",
                            color=colour_of[stage], annotation_clip=False)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([f"{layer.name} ({layer.kind})" for layer in layers],
                            fontsize=label_size)
    axes[0].set_ylim(len(layers) - 0.5, -0.5)  # the first layer at the top
    shape = "x".join(map(str, summary.input_shape))
    caption = f"{summary.model}: per-layer complexity, input {shape}, {len(layers)} layers"
    if omitted:
        caption += (f" ({omitted} more with no parameters, MACs or new activation values, "
                    f"e.g. in-place activations, are not drawn)")
    fig.suptitle(caption, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.84, 1 - 0.45 / fig.get_size_inches()[1]))
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return {"rows": [layer.name for layer in layers], "omitted": omitted, "stages": stages}
