"""A target's report and its renderings: text for people, JSON for machines (both on stdout)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from initlint import __version__
from initlint.graph import NodeView, SignalGraph
from initlint.inputs import InputSpec
from initlint.rule import Finding, severity_rank


@dataclass
class Report:
    target: str
    trace_mode: str
    trace_note: str | None
    graph: SignalGraph
    inputs: list[InputSpec]
    device: str
    findings: list[Finding] = field(default_factory=list)
    probe_note: str | None = None
    seconds: float = 0.0
    skipped_rules: list[str] = field(default_factory=list)
    """Selected rules that could not run: in hooks mode, those that need the graph's structure."""
    rule_count: int = 0
    """How many rules were selected (run or skipped)."""
    unmatched_ignores: list[str] = field(default_factory=list)
    """``per_module_ignores`` globs that match no module of this model."""

    def skip_summary(self) -> str | None:
        """'9 of 12 rules skipped (hooks mode: REASON)', or None when every rule ran."""
        if not self.skipped_rules:
            return None
        reason = (self.trace_note or "the model could not be captured as a graph").split("; ")[0]
        total = max(self.rule_count, len(self.skipped_rules))
        return f"{len(self.skipped_rules)} of {total} rules skipped ({self.trace_mode} mode: {reason})"

    def at_or_above(self, level: str) -> list[Finding]:
        return [f for f in self.findings if severity_rank(f.severity) >= severity_rank(level)]

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def to_dict(self, timings: bool = False) -> dict[str, Any]:
        """The report as JSON-ready data. The probe's duration ("seconds") only with ``timings``:
        without it the same model, seed and options give the same bytes on every run."""
        main_path = set(self.graph.main_path)
        document = {
            "target": self.target,
            "trace": {"mode": self.trace_mode, "nodes": len(self.graph.nodes), "note": self.trace_note,
                      "skipped_rules": self.skipped_rules, "rule_count": self.rule_count},
            "inputs": [spec.to_dict() for spec in self.inputs],
            "device": self.device,
            "probe_note": self.probe_note,
            "findings": [f.to_dict() for f in self.findings],
            "nodes": [
                _node_dict(view, view.name in main_path)
                for view in self.graph.nodes.values() if view.op != "output"
            ],
        }
        if timings:
            document["seconds"] = round(self.seconds, 3)
        return document


def _node_dict(view: NodeView, on_main_path: bool) -> dict[str, Any]:
    stats = view.stats.to_dict() if view.stats else {}
    return {
        "name": view.name,
        "op": view.op,
        "target": view.target,
        "module": view.module,
        "depth": view.depth,
        "roles": sorted(view.roles),
        "on_main_path": on_main_path,
        **{key: stats.get(key) for key in (
            "shape", "dtype", "mean", "std", "zero_fraction", "saturated_fraction", "grad_std",
            "sample_std", "offset_std", "nonfinite", "dead_fraction",
        )},
        "softmax": view.softmax.to_dict() if view.softmax else None,
        "kernel": view.kernel.to_dict() if view.kernel else None,
        "kernel_slope": view.kernel.slope if view.kernel else None,
        "location": view.location.to_dict() if view.location else None,
    }


def _strict_json(value: object) -> object:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def json_document(document: dict[str, Any]) -> str:
    """Strict, indented JSON text (what every machine format writes)."""
    return json.dumps(_strict_json(document), indent=2, allow_nan=False) + "\n"


def to_json(reports: list[Report], timings: bool = False) -> str:
    return json_document({"initlint": __version__, "reports": [r.to_dict(timings) for r in reports]})


def _where(finding: Finding) -> str:
    """The user's own line first, then the library line it reached: ``model.py:12 (via ...)``."""
    return "<unknown>" if finding.location is None else finding.location.display()


def severity_counts(findings: list[Finding]) -> str:
    """``1 error, 2 warning``: the count of each severity present, most severe first."""
    counts = Counter(f.severity for f in findings)
    return ", ".join(f"{counts[s]} {s}" for s in ("error", "warning", "info") if counts[s])


def to_text(reports: list[Report]) -> str:
    lines: list[str] = []
    for report in reports:
        for f in report.findings:
            lines.append(f"{_where(f)}: {f.code} {f.name} ({f.severity}) at {f.where}: {f.message}")
        summary = severity_counts(report.findings)
        shapes = "; ".join(
            f"{s.name} {tuple(s.shape)}" + (f" {s.to_dict()['dtype']}" if s.is_integer else "") + (f" inferred from {s.inferred_from}" if s.inferred_from else "")
            for s in report.inputs
        )
        skipped = report.skip_summary()
        lines.append(
            f"{report.target}: {len(report.findings)} finding(s)"
            + (f" ({summary})" if summary else "")
            + (f"; {skipped}" if skipped else "")
            + f"; traced with {report.trace_mode}, {len(report.graph.nodes)} nodes; probed on "
            f"{report.device} with {shapes} in {report.seconds:.2f} s"
        )
        if report.skipped_rules:
            lines.append(f"  note: skipped {', '.join(report.skipped_rules)}: they need the graph's "
                         "structure, which module hooks do not give (--require-graph makes this an error)")
        for note in (report.trace_note, report.probe_note):
            if note:
                lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"


def to_concise(reports: list[Report]) -> str:
    """One line per finding, nothing else: ``file:line: CODE severity at what `module`: message``."""
    return "".join(f"{_where(f)}: {f.code} {f.severity} at {f.where}: {f.message}\n"
                   for r in reports for f in r.findings)


_GITHUB_LEVELS = {"error": "error", "warning": "warning", "info": "notice"}


def _github_escape(text: str, property_value: bool = False) -> str:
    """GitHub workflow commands escape %, CR and LF, and in properties also ':' and ','."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def to_github(reports: list[Report]) -> str:
    """Workflow commands (``::warning file=...,line=...::...``) that annotate a pull request."""
    lines = []
    for report in reports:
        for f in report.findings:
            properties = [f"title={_github_escape(f'{f.code} {f.name}', True)}"]
            if f.location is not None:
                file = _github_escape(str(f.location.display_path()), True)
                properties[:0] = [f"file={file}", f"line={f.location.line}"]
            lines.append(f"::{_GITHUB_LEVELS[f.severity]} {','.join(properties)}::"
                         f"{_github_escape(person_message(f))}\n")
    return "".join(lines)


def person_message(finding: Finding) -> str:
    """A finding's message as annotations show it beside the line: what, where, and the library
    line when the line shown is the user's own."""
    via = f" (via {finding.location.via.display()})" if finding.location and finding.location.via else ""
    return f"At {finding.where}{via}: {finding.message}"


def to_sarif(reports: list[Report]) -> str:
    from initlint.sarif import sarif_log  # the rule registry is only needed here

    return json_document(sarif_log(reports))


RENDERERS = {"text": to_text, "concise": to_concise, "json": to_json, "github": to_github, "sarif": to_sarif}
"""Every ``--output-format``: a function of the reports that returns the whole output."""
