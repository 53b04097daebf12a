"""``--plot FILE.png``: the signal-propagation picture, one column of panels per target.

Like the NF-ResNet paper's signal propagation plots and fastai's activation statistics, it
follows the main path (input to output through the fewest layers, so a ResNet is sampled at
its residual adds) and draws by depth: forward std and its across-sample part, mean, gradient
std, the fractions of zeros and of saturated inputs, and the kernel probe's output cosine for
each input cosine (the C map of Deep Kernel Shaping, what IL105 reads). Nodes with findings are marked in
red and labelled with their codes. matplotlib is the optional extra ``initlint[plot]``.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from typing import TYPE_CHECKING

from initlint.errors import InitlintError
from initlint.graph import INSIDE_ACTIVATION, NodeView
from initlint.kernel import INPUT_COSINES

if TYPE_CHECKING:
    from initlint.report import Report

_INSTALL = "--plot needs matplotlib: pip install 'initlint[plot]' (or pip install matplotlib)."
_PANELS = ("forward std (log)", "forward mean", "gradient (log)", "fraction", "output cosine of input pairs")
_SIGNAL_STD = "signal std (what IL101 reads)"


def require_matplotlib() -> None:
    """Fail before any probing when the plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InitlintError(_INSTALL) from None


def _path_points(report: Report) -> list[NodeView]:
    """The measured main path, one point per computing layer (plumbing repeats its input); a
    transformed activation ``b * f(a x + c) + d`` is one point, its output."""
    return [v for v in report.graph.measured(report.graph.main_path)
            if (v.weight or v.op == "placeholder") and INSIDE_ACTIVATION not in v.roles]


def _across_sample_share(view: NodeView) -> float | None:
    """The part of the variance that depends on the input (the rest is per-feature offsets)."""
    sample, offset = view.stats.sample_std, view.stats.offset_std
    if sample is None or offset is None or sample + offset == 0:
        return None
    return sample**2 / (sample**2 + offset**2)


def _plot_series(axis, points: list[NodeView], read, style: str, **line) -> None:
    """One line of ``read(view)`` by depth, skipping nodes where it is undefined."""
    pairs = [(v.depth, value) for v in points if (value := read(v)) is not None]
    if pairs:
        axis.plot(*zip(*pairs), style, **line)


def _draw_column(axes, report: Report) -> None:
    points = _path_points(report)
    std_axis, mean_axis, grad_axis, fraction_axis, kernel_axis = axes
    _plot_series(std_axis, points, lambda v: v.signal_std, "-o", ms=3, lw=2, label=_SIGNAL_STD)
    _plot_series(std_axis, points, lambda v: v.stats.std, "-", color="grey", lw=0.8, label="std")
    _plot_series(mean_axis, points, lambda v: v.stats.mean, "-o", ms=3, color="tab:green", label="mean")
    _plot_series(grad_axis, points, lambda v: v.signal_grad_norm, "-o", ms=3, lw=2, color="tab:purple",
                 label="gradient norm per sample in signal units (IL501)")
    _plot_series(grad_axis, points, lambda v: v.stats.grad_std, "-", color="grey", lw=0.8, label="gradient std")
    _plot_series(fraction_axis, points, _across_sample_share, "-", color="tab:blue",
                 label="across-sample share of the variance")
    _plot_series(fraction_axis, points, lambda v: v.stats.zero_fraction, "-", color="tab:brown", label="zeros")
    _plot_series(fraction_axis, points, lambda v: v.stats.saturated_fraction, "s", ms=4, color="tab:red",
                 label="saturated inputs")
    for c in INPUT_COSINES:
        _plot_series(kernel_axis, points, lambda v, c=c: v.kernel.cosines[c] if v.kernel else None, "-o", ms=2,
                     label=f"inputs at cosine {c:g} (IL105)")
        kernel_axis.axhline(c, color="grey", lw=0.8, ls=":")
    kernel_axis.set_ylim(-0.05, 1.05)
    for axis in (std_axis, grad_axis):
        axis.set_yscale("log")
        axis.axhline(1.0, color="grey", lw=0.8, ls=":")
    mean_axis.axhline(0.0, color="grey", lw=0.8, ls=":")
    fraction_axis.set_ylim(-0.05, 1.05)
    _mark_findings(axes, report)
    for axis, label in zip(axes, _PANELS):
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend(loc="best", fontsize=7)
    axes[-1].set_xlabel("depth (layers from the input)")
    count = len(report.findings)
    axes[0].set_title(f"{report.target}\n{count} finding{'s' * (count != 1)}", fontsize=9)


def _mark_findings(axes, report: Report) -> None:
    """A red line at each flagged node's depth, and its codes and module as a label; labels
    step down in three rows so that neighbouring findings stay legible."""
    codes_at: dict[str, list[str]] = defaultdict(list)
    for finding in report.findings:
        codes_at[finding.node].append(finding.code)
    flagged = sorted(((report.graph.view(node), codes) for node, codes in codes_at.items()),
                     key=lambda item: item[0].depth)
    for row, (view, codes) in enumerate(flagged):
        for axis in axes:
            axis.axvline(view.depth, color="tab:red", lw=1, alpha=0.5)
        if view.signal_std is not None:
            axes[0].plot([view.depth], [view.signal_std], "x", color="tab:red", ms=9, mew=2)
        label = " ".join(sorted(set(codes))) + f" {view.label}"
        axes[0].annotate(label, (view.depth, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(3, -3 - 11 * (row % 3)), textcoords="offset points", va="top",
                         fontsize=7, color="tab:red",
                         bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})


def figure_of(reports: list[Report]):
    """A matplotlib Figure: rows are the panels, one column per report."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    columns = len(reports)
    figure, axes = plt.subplots(len(_PANELS), columns, figsize=(7 * columns, 12), sharex="col",
                                squeeze=False)
    for column, report in enumerate(reports):
        _draw_column(axes[:, column], report)
    figure.tight_layout()
    return figure


def render_png(reports: list[Report]) -> bytes:
    figure = figure_of(reports)
    import matplotlib.pyplot as plt

    try:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def write_plot(path: str | os.PathLike, reports: list[Report], force: bool) -> None:
    from initlint.output import write_bytes_atomically

    write_bytes_atomically(path, render_png(reports), force)
