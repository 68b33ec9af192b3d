"""Outputs of `coherence-diag rules score`: terminal (Rich), JSON and Markdown.

All three render the same ScoreResult (and, with --min-macro-f1, its AccuracyGate) in the same
order: per-rule scores worst F1 first, macro-F1, every trace, confusion, control false alarms and
the index-direction checks. Nothing is computed here beyond ordering and number formatting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from coherence_diag import __version__, units
from coherence_diag.render.json_report import dumps, load_schema
from coherence_diag.render.markdown import escape, table
from coherence_diag.render.style import STATUS_MARK, STATUS_STYLE
from coherence_diag.scoring import MIN_SEVERITY, AccuracyGate, DirectionCheck, ReportedRule, RuleScore, ScoreResult, TraceScore

SCORE_SCHEMA_VERSION = "1"
_INDICES = ("CI", "DI", "WPI", "HCL")
_STATUS_WORD = {"ok": "OK", "miss": "MISS", "false-positive": "FP", "error": "ERROR"}
_STATUS_STYLE = {"ok": "green", "miss": "bold red", "false-positive": "yellow", "error": "bold magenta"}


# ---------------------------------------------------------------- shared text


def summary(result: ScoreResult) -> str:
    """One line: macro-F1 and what the traces and checks came to."""
    return f"macro-F1 {result.macro_f1:.3f} over {len(result.rule_ids)} rule ids; {_outcome_text(result)}"


def _outcome_text(result: ScoreResult) -> str:
    c, d = result.counts, result.direction_counts
    return (
        f"{c['ok']}/{c['traces']} traces OK, {c['miss']} missed, {c['false_positive']} with false positives, "
        f"{c['error']} failed to analyze; {len(result.control_false_alarms)} control false alarm(s); "
        f"index directions: {d['pass']} pass, {d['fail']} fail, {d['skipped']} skipped"
    )


def gate_verdict(gate: AccuracyGate) -> str:
    if gate.passed:
        return f"accuracy gate PASS: macro-F1 >= {gate.min_macro_f1:g} and no control false alarm"
    return "accuracy gate FAIL: " + "; ".join(gate.failures)


def worst_first(result: ScoreResult) -> list[RuleScore]:
    return sorted(result.rules, key=lambda r: (r.f1, r.recall, r.precision, r.rule))


def _seed(seed: int | None) -> str:
    return "-" if seed is None else str(seed)


def _reported_text(reported: tuple[ReportedRule, ...]) -> str:
    return ", ".join(f"{r.id} ({r.severity} {r.score:.2f})" for r in reported) or "-"


def _rule_rows(result: ScoreResult) -> list[list[str]]:
    return [[r.rule, str(r.tp), str(r.fp), str(r.fn), f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.f1:.3f}"] for r in worst_first(result)]


def _index_cells(t: TraceScore, fmt: str = ".3f") -> list[str]:
    return [units.number(getattr(t.indices, name), fmt) for name in _INDICES]


def _check_rows(checks: Iterable[DirectionCheck]) -> list[list[str]]:
    return [[_seed(c.seed), c.status, c.message] for c in checks]


_RULE_HEADERS = ["rule", "TP", "FP", "FN", "precision", "recall", "F1"]
_CHECK_HEADERS = ["seed", "status", "check"]
_CONFUSION_HEADERS = ["expected", "reported", "instead", "also"]


# ---------------------------------------------------------------- JSON


def to_dict(result: ScoreResult, gate: AccuracyGate | None = None) -> dict[str, Any]:
    """The JSON document (schema: coherence_diag/schemas/score-v1.schema.json; docs/accuracy.md)."""
    return {
        "schema_version": SCORE_SCHEMA_VERSION,
        "kind": "score",
        "tool": {"name": "coherence-diag", "version": __version__},
        "suite": result.suite,
        "window_s": result.window_s,
        "min_severity": MIN_SEVERITY,
        "macro_f1": result.macro_f1,
        "gate": dataclasses.asdict(gate) if gate is not None else None,
        "counts": result.counts,
        "direction_counts": result.direction_counts,
        "rule_ids": list(result.rule_ids),
        "unknown_rule_ids": list(result.unknown_rule_ids),
        "rules": [dataclasses.asdict(r) for r in result.rules],
        "traces": [dataclasses.asdict(t) for t in result.traces],
        "confusion": [dataclasses.asdict(c) for c in result.confusion],
        "control_false_alarms": [dataclasses.asdict(a) for a in result.control_false_alarms],
        "direction_checks": [dataclasses.asdict(c) for c in result.direction_checks],
    }


def render_json(result: ScoreResult, gate: AccuracyGate | None = None) -> str:
    return dumps(to_dict(result, gate))


def schema() -> dict[str, Any]:
    """The JSON Schema shipped with the package for `rules score --format json`."""
    return load_schema("score-v1.schema.json")


# ---------------------------------------------------------------- Markdown


def render_markdown(result: ScoreResult, gate: AccuracyGate | None = None) -> str:
    lines = [
        "## coherence-diag rules score",
        "",
        f"Suite {escape(result.suite)}: {len(result.traces)} traces ({result.counts['controls']} controls), "
        f"window {result.window_s:g} s; a rule id is reported by a finding at severity >= {MIN_SEVERITY}. "
        "Scoring rule and direction checks: docs/accuracy.md.",
        "",
        f"**Macro-F1: {result.macro_f1:.3f}** over {len(result.rule_ids)} rule ids. {escape(_outcome_text(result))}.",
        "",
    ]
    if gate is not None:
        lines += [("✅ " if gate.passed else "❌ ") + escape(gate_verdict(gate)), ""]
    if result.unknown_rule_ids:
        lines += [f"Rule ids no loaded rule can report (always missed): {escape(', '.join(result.unknown_rule_ids))}.", ""]
    lines += ["### Per rule (worst F1 first)", "", table(_RULE_HEADERS, _rule_rows(result), "lrrrrrr")]
    lines += [
        "### Per trace",
        "",
        table(
            ["status", "trace", "scenario", "seed", "expected", "reported (>= medium)", "missed", "false positives", *_INDICES],
            (
                [
                    _STATUS_WORD[t.status],
                    t.id,
                    t.scenario + (" (control)" if t.control else ""),
                    _seed(t.seed),
                    ", ".join(t.expected) or "-",
                    _reported_text(t.reported),
                    ", ".join(t.false_negatives) or "-",
                    ", ".join(t.false_positives) or "-",
                    *_index_cells(t),
                ]
                for t in result.traces
            ),
            "lllrllll" + "r" * len(_INDICES),
        ),
    ]
    errors = [t for t in result.traces if t.error]
    if errors:
        lines += ["Traces that failed to analyze:", ""] + [f"- {escape(t.id)}: {escape(t.error)}" for t in errors] + [""]
    lines += ["### Confusion", ""]
    if result.confusion:
        lines += ["Other rule ids reported on the traces that expected a rule: instead of it (it was missed), or also.", ""]
        lines.append(table(_CONFUSION_HEADERS, ([c.expected, c.reported, str(c.instead), str(c.also)] for c in result.confusion), "llrr"))
    else:
        lines += ["No other rule id was reported on a trace that expected a rule.", ""]
    lines += ["### Control false alarms", ""]
    if result.control_false_alarms:
        lines += [
            f"- {escape(a.trace)} ({escape(a.scenario)}, seed {_seed(a.seed)}): "
            + escape(_reported_text(a.reported))
            for a in result.control_false_alarms
        ] + [""]
    else:
        lines += ["None: no control reported anything at severity >= medium.", ""]
    d = result.direction_counts
    lines += [
        "### Index directions",
        "",
        f"{d['pass']} pass, {d['fail']} fail, {d['skipped']} skipped (a null index fails; a scenario absent from a seed skips).",
        "",
        table(_CHECK_HEADERS, ([seed, STATUS_MARK[status], message] for seed, status, message in _check_rows(result.direction_checks)), "rll"),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------- terminal


def render_terminal(result: ScoreResult, console: Console, gate: AccuracyGate | None = None) -> None:
    console.print(
        Text(
            f"rules score: {result.suite}: {len(result.traces)} traces ({result.counts['controls']} controls), "
            f"window {result.window_s:g} s, reported = finding at >= {MIN_SEVERITY}",
            style="bold",
        )
    )
    rules = Table(title="per rule, worst F1 first", title_justify="left", caption="P precision, R recall", caption_justify="left")
    for header in ("rule", "TP", "FP", "FN", "P", "R", "F1"):
        rules.add_column(header, justify="left" if header == "rule" else "right", no_wrap=header == "rule")
    for row, score in zip(_rule_rows(result), worst_first(result)):
        style = "red" if score.f1 < 0.5 else ("yellow" if score.f1 < 0.8 else "green")
        rules.add_row(*(Text(cell) for cell in row[:-1]), Text(row[-1], style=style))
    console.print(rules)

    traces = Table(
        title="per trace",
        title_justify="left",
        caption="rules: ✓ expected and found, ✗ expected and missed, + false positive, ~ allowed; * control",
        caption_justify="left",
    )
    for header in ("status", "trace", "seed", "scenario", "rules", *_INDICES):
        traces.add_column(
            header,
            justify="right" if header in (*_INDICES, "seed") else "left",
            no_wrap=header in ("status", "trace"),
            overflow="fold" if header in ("scenario", "rules") else "ellipsis",  # rule ids in full, folded if need be
        )
    for t in result.traces:
        traces.add_row(
            Text(_STATUS_WORD[t.status], style=_STATUS_STYLE[t.status]),
            Text(t.id),
            Text(_seed(t.seed)),
            Text(t.scenario + (" *" if t.control else "")),
            _rules_rich(t),
            *(Text(cell) for cell in _index_cells(t, ".2f")),
            style="on grey15" if t.status in ("miss", "error") else "",
        )
    console.print(traces)
    for t in result.traces:
        if t.error:
            console.print(Text.assemble((f"{t.id}: failed to analyze: ", "bold magenta"), t.error))

    if result.confusion:
        confusion = Table(title="confusion: other ids reported on traces that expected a rule", title_justify="left")
        for header in _CONFUSION_HEADERS:
            confusion.add_column(header, justify="right" if header in ("instead", "also") else "left")
        for c in result.confusion:
            confusion.add_row(Text(c.expected), Text(c.reported), str(c.instead), str(c.also))
        console.print(confusion)

    if result.control_false_alarms:
        for a in result.control_false_alarms:
            where = f"{a.trace} ({a.scenario}, seed {_seed(a.seed)}): {_reported_text(a.reported)}"
            console.print(Text.assemble(("control false alarm ", "bold red"), where))
    else:
        console.print(Text("no control false alarm", style="green"))

    checks = Table(title="index directions (a null index fails; a scenario absent from a seed skips)", title_justify="left")
    for header in _CHECK_HEADERS:
        checks.add_column(header, justify="right" if header == "seed" else "left", no_wrap=header != "check")
    for seed, status, message in _check_rows(result.direction_checks):
        checks.add_row(Text(seed), Text(status, style=STATUS_STYLE[status]), Text(message, style="dim" if status == "pass" else ""))
    console.print(checks)

    if result.unknown_rule_ids:
        console.print(Text(f"rule ids no loaded rule can report (always missed): {', '.join(result.unknown_rule_ids)}", style="yellow"))
    console.print(Text(summary(result), style="bold"))
    if gate is not None:
        console.print(Text(gate_verdict(gate), style="bold green" if gate.passed else "bold red"))


def _rules_rich(t: TraceScore) -> Text:
    """The trace's expected and reported ids against each other, one mark and colour each."""
    parts = [(f"✓ {rule}", "green") for rule in t.true_positives]
    parts += [(f"✗ {rule}", "bold red") for rule in t.false_negatives]
    parts += [(f"+ {rule}", "red") for rule in t.false_positives]
    parts += [(f"~ {r.id}", "dim") for r in t.reported if r.id in t.allowed]
    if not parts:
        return Text("-", style="dim")
    return Text("\n").join(Text(text, style=style) for text, style in parts)
