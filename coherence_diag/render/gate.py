"""Outputs of `coherence-diag gate`: terminal table, JSON, Markdown (CI job summary), JUnit XML.

All of them render the same GateResult; nothing is computed here. Trace-derived text (paths,
rule summaries that name pools or environments) is escaped for each format.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from coherence_diag import __version__, units
from coherence_diag.model import GATE_SCHEMA_VERSION, CheckResult, GateResult, RegressionItem
from coherence_diag.render.json_report import dumps, load_schema
from coherence_diag.render.markdown import escape, table
from coherence_diag.render.style import SEVERITY_STYLE, STATUS_MARK, STATUS_STYLE

# XML 1.0 cannot hold most control characters, even escaped; a trace string may contain them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def verdict(result: GateResult) -> str:
    c = result.counts
    word = "PASS" if result.passed else "FAIL"
    return f"gate {word}: policy {result.policy}: {c['pass']} passed, {c['fail']} failed, {c['skipped']} skipped"


# --- JSON -------------------------------------------------------------------------------------


def to_dict(result: GateResult) -> dict[str, Any]:
    """The JSON document of docs/gate.md (schema: coherence_diag/schemas/gate-v1.schema.json)."""
    return {
        "schema_version": GATE_SCHEMA_VERSION,
        "tool": {"name": "coherence-diag", "version": __version__},
        "policy": {"name": result.policy, "path": result.policy_source},
        "trace": result.trace,
        "baseline": result.baseline,
        "passed": result.passed,
        "counts": result.counts,
        "checks": [dataclasses.asdict(c) for c in result.checks],
    }


def render_json(result: GateResult) -> str:
    return dumps(to_dict(result))


def schema() -> dict[str, Any]:
    return load_schema("gate-v1.schema.json")


# --- Markdown ---------------------------------------------------------------------------------


def render_markdown(result: GateResult) -> str:
    """A CI job summary ($GITHUB_STEP_SUMMARY): verdict, checks table, failing findings, regressions."""
    c = result.counts
    head = "✅ PASS" if result.passed else "❌ FAIL"
    lines = [
        f"## coherence-diag gate: {head}",
        "",
        f"Policy **{escape(result.policy)}** ({escape(result.policy_source)}) on trace {escape(result.trace)}"
        + (f" against baseline {escape(result.baseline)}" if result.baseline else "")
        + f": {c['pass']} passed, {c['fail']} failed, {c['skipped']} skipped.",
        "",
        table(
            ["status", "check", "measured", "threshold", "message"],
            [(STATUS_MARK[k.status], k.id, k.measured, k.threshold, k.message) for k in result.checks],
        ),
    ]
    findings = [(k.id, f) for k in result.checks for f in k.findings]
    if findings:
        lines += [
            "### Failing findings",
            "",
            table(
                ["check", "rule", "severity", "domain", "score", "summary"],
                [(check, f.rule, f.severity, f.domain, f"{f.score:.2f}", f.summary) for check, f in findings],
                align=["l", "l", "l", "l", "r", "l"],
            ),
        ]
    over = [(k.id, i) for k in result.checks for i in k.regressions if i.over_limit]
    if over:
        lines += [
            "### Regressions over the limit",
            "",
            table(
                ["check", "measure", "baseline", "candidate", "change"],
                [(check, i.measure, *_regression_cells(i)) for check, i in over],
                align=["l", "l", "r", "r", "r"],
            ),
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- JUnit XML --------------------------------------------------------------------------------


def render_junit(result: GateResult) -> str:
    """JUnit XML: one <testsuite> for the policy, one <testcase> per check."""
    c = result.counts
    counts = {"tests": str(len(result.checks)), "failures": str(c["fail"]), "errors": "0", "skipped": str(c["skipped"])}
    root = ET.Element("testsuites", {"name": "coherence-diag gate", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": _xml(f"coherence-diag gate: {result.policy}"), **counts})
    props = ET.SubElement(suite, "properties")
    for name, value in (("policy", result.policy_source), ("trace", result.trace), ("baseline", result.baseline)):
        if value is not None:
            ET.SubElement(props, "property", {"name": name, "value": _xml(value)})
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", {"classname": _xml(f"gate.{result.policy}"), "name": _xml(check.id)})
        summary = _xml(f"{check.message} ({_measured_and_threshold(check, '; ')})")
        if check.status == "fail":
            failure = ET.SubElement(case, "failure", {"message": summary, "type": check.kind})
            failure.text = _xml(_details(check))
        elif check.status == "skipped":
            ET.SubElement(case, "skipped", {"message": summary})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _measured_and_threshold(check: CheckResult, sep: str) -> str:
    if not check.evaluated:  # nothing was compared with the threshold: say so, not "measured: n/a"
        return f"threshold: {check.threshold}, not checked"
    return f"measured: {check.measured}{sep}threshold: {check.threshold}"


def _details(check: CheckResult) -> str:
    lines = [check.message, _measured_and_threshold(check, "\n")]
    lines += [f"finding {f.rule} ({f.severity}, {f.domain}, score {f.score:.2f}): {f.summary}" for f in check.findings]
    lines += [
        "{}: {} -> {} ({})".format(i.measure, *_regression_cells(i))
        for i in check.regressions
        if i.over_limit
    ]
    lines += [f"not evaluable: {n}" for n in check.not_evaluable]
    return "\n".join(lines)


def _regression_cells(item: RegressionItem) -> tuple[str, str, str]:
    """Baseline, candidate and change of one measure of a regression check."""
    return units.exact(item.base, item.unit), units.exact(item.candidate, item.unit), units.regression_change(item.change, item.absolute)


def _xml(text: str) -> str:
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", text)


# --- terminal ---------------------------------------------------------------------------------


def render_terminal(result: GateResult, console: Console) -> None:
    title = Text(f"gate: policy {result.policy} on {result.trace}")
    if result.baseline:
        title.append(f" (baseline {result.baseline})")
    t = Table(title=title, title_justify="left")
    t.add_column("status", no_wrap=True)
    t.add_column("check", no_wrap=True)
    t.add_column("measured", justify="right")
    t.add_column("threshold")
    t.add_column("message")
    for check in result.checks:
        t.add_row(
            Text(check.status, style=STATUS_STYLE[check.status]),
            Text(check.id),
            Text(check.measured),
            Text(check.threshold),
            Text(_short_message(check), style="dim" if check.status == "pass" else ""),
        )
    console.print(t)
    for check in result.checks:
        for f in check.findings:  # the summaries, which the table only names
            console.print(Text.assemble((f"{f.rule} ({f.severity}, {f.domain})", SEVERITY_STYLE[f.severity]), f": {f.summary}"))
    console.print(Text(verdict(result), style="bold green" if result.passed else "bold red"))


def _short_message(check: CheckResult) -> str:
    if not check.evaluated:
        return check.message  # "not evaluable (needs ...)": never "outside the limit"
    if check.kind == "measure" and check.status in ("pass", "fail"):
        # The measured and threshold columns already say it; the full sentence is in JSON/JUnit.
        return "ok" if check.status == "pass" else "outside the limit"
    if check.findings:
        return "above the limit: " + ", ".join(f"{f.rule} ({f.severity})" for f in check.findings)
    return check.message
