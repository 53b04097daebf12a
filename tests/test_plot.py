"""--plot: the signal-propagation picture draws the report's own numbers and marks its findings."""

from __future__ import annotations

import sys

import pytest

import initlint
from initlint.plot import figure_of

pytest.importorskip("matplotlib")


@pytest.fixture
def broken_report():
    from conftest import DEEP_SIGMOID_NET

    namespace: dict = {}
    exec(DEEP_SIGMOID_NET, namespace)
    return initlint.check(namespace["build"]())


def test_panels_show_the_main_path_statistics_and_mark_each_flagged_node(broken_report):
    import matplotlib.pyplot as plt

    figure = figure_of([broken_report])
    try:
        std_axis, mean_axis, grad_axis, fraction_axis, kernel_axis = figure.axes
        graph = broken_report.graph
        path = [v for v in graph.measured(graph.main_path) if v.weight or v.op == "placeholder"]
        signal_line, std_line = std_axis.get_lines()[:2]
        assert list(signal_line.get_xdata()) == [v.depth for v in path]
        assert list(signal_line.get_ydata()) == [v.signal_std for v in path]
        assert list(std_line.get_ydata()) == [v.stats.std for v in path]
        assert list(grad_axis.get_lines()[0].get_ydata()) == [v.signal_grad_norm for v in path]
        shares = fraction_axis.get_lines()[0].get_ydata()
        assert shares[0] > 0.9 and shares[-1] < 0.01  # the dead sigmoid stack keeps only offsets
        assert list(mean_axis.get_lines()[0].get_ydata()) == [v.stats.mean for v in path]
        kernel_lines = [line for line in kernel_axis.get_lines() if "IL105" in line.get_label()]
        assert len(kernel_lines) == 3
        for line, c in zip(kernel_lines, (0.0, 0.5, 0.9)):
            assert list(line.get_ydata()) == [v.kernel.cosines[c] for v in path]
        flagged = {f.node for f in broken_report.findings}
        crosses = [line for line in std_axis.get_lines() if line.get_marker() == "x"]
        assert len(crosses) == len(flagged) >= 2
        labels = " ".join(text.get_text() for text in std_axis.texts)
        assert all(code in labels for code in broken_report.codes())
    finally:
        plt.close(figure)


def test_cli_writes_a_png_and_refuses_to_overwrite_it(run_cli, tmp_path):
    from test_cli import BROKEN

    png = tmp_path / "signal.png"
    assert run_cli("check", BROKEN, "--plot", str(png)).exit_code == 1
    first = png.read_bytes()
    assert first.startswith(b"\x89PNG\r\n\x1a\n") and len(first) > 10_000
    again = run_cli("check", BROKEN, "--plot", str(png))
    assert again.exit_code == 2 and "--force" in again.stderr and png.read_bytes() == first
    assert run_cli("check", BROKEN, "--plot", str(png), "--force").exit_code == 1


def test_without_matplotlib_plot_exits_2_before_probing(run_cli, tmp_path, monkeypatch):
    from test_cli import BROKEN

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    report = tmp_path / "report.json"
    result = run_cli("check", BROKEN, "--plot", str(tmp_path / "signal.png"), "-o", str(report))
    assert result.exit_code == 2
    assert "pip install 'initlint[plot]'" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
