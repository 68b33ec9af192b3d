"""Score the rules on a labelled suite: per-rule precision / recall / F1, macro-F1, index directions.

    from coherence_diag.scoring import score_suite, accuracy_gate
    result = score_suite("../shared/validation", jobs=2)
    result.macro_f1, [r.rule for r in result.rules if r.f1 < 1]
    accuracy_gate(result, min_macro_f1=0.8).passed

A suite is a directory holding `labels.json` (or that file itself): rule ids, control scenarios
and one entry per trace (id, scenario, path relative to the suite, expected and allowed rule
ids, control flag, seed). The scoring rule (docs/accuracy.md):

- a rule id counts as *reported* on a trace when a finding has `rule == id` (or `kind == mode`
  and `mode == id`) at severity >= medium;
- every `expected` id must be reported (else a false negative), `allowed` ids are ignored, any
  other reported id is a false positive; a control must report nothing at >= medium;
- per rule id: precision = tp / (tp + fp), taken as 1 when the rule reported nothing
  (tp + fp == 0); recall = tp / (tp + fn), taken as 1 when nothing expected it (tp + fn == 0);
  F1 = 2PR / (P + R), 0 when P + R == 0; macro-F1 = the mean F1 over the labels' rule ids.

Each trace is analyzed with `analysis.analyze` in a worker process (spawn context); results come
back in the order of labels.json whatever the number of workers. Index-direction checks compare
the four indices of scenarios of one seed (`DIRECTION_RULES`, a table of data).

Nothing here prints or writes; render/score.py renders a `ScoreResult`.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from coherence_diag import analysis
from coherence_diag.errors import InputError, LabelsError, collected
from coherence_diag.model import SEVERITIES, Finding, Indices
from coherence_diag.rules.loader import load_rules
from coherence_diag.timeseries import DEFAULT_WINDOW_S

LABELS_FILE = "labels.json"
MIN_SEVERITY = "medium"  # a finding counts as a report from this severity up
_MIN_RANK = SEVERITIES.index(MIN_SEVERITY)
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

ProgressCallback = Callable[[str], None]
TraceStatus = Literal["ok", "miss", "false-positive", "error"]
CheckStatus = Literal["pass", "fail", "skipped"]
IndexName = Literal["CI", "DI", "WPI", "HCL"]


# ---------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelledTrace:
    id: str
    scenario: str
    path: str  # relative to the suite directory, as written in labels.json
    expected: tuple[str, ...]
    allowed: tuple[str, ...]
    control: bool
    seed: int | None


@dataclass(frozen=True)
class Labels:
    source: str  # the labels file, as given (for messages and outputs)
    root: Path  # the suite directory: trace paths are relative to it
    rule_ids: tuple[str, ...]
    controls: tuple[str, ...]  # control scenario names
    traces: tuple[LabelledTrace, ...]


def labels_path(suite: str | Path) -> Path:
    """The labels file of SUITE: SUITE/labels.json for a directory, else SUITE itself."""
    path = Path(suite)
    return path / LABELS_FILE if path.is_dir() else path


def load_labels(suite: str | Path) -> Labels:
    """Read and validate the labels file of a suite (LabelsError naming file and problem)."""
    path = labels_path(suite)
    source = str(path)
    if not path.exists():
        if Path(suite).is_dir():
            raise LabelsError(f"{suite}: no {LABELS_FILE} in this directory; expected a suite directory holding {LABELS_FILE}", path=source)
        raise LabelsError(f"{suite}: not found; expected a suite directory holding {LABELS_FILE}, or the labels file itself", path=source)
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError:
        raise LabelsError(f"invalid labels file: {source}: not UTF-8 text; expected JSON", path=source) from None
    except OSError as exc:
        raise LabelsError(f"{source}: cannot read the labels file ({exc.strerror})", path=source) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelsError(
            f"invalid labels file: {source}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
            "expected a JSON object with rule_ids and traces",
            path=source,
        ) from None
    return parse_labels(data, source, path.parent)


def parse_labels(data: Any, source: str, root: Path) -> Labels:
    """Validate parsed labels; every problem is raised together as one LabelsError."""
    problems: list[str] = []
    labels = _build_labels(data, source, root, problems)
    if problems:
        raise collected(LabelsError, "labels file", source, problems)
    return labels  # type: ignore[return-value]  # None only together with problems


def _build_labels(data: Any, source: str, root: Path, problems: list[str]) -> Labels | None:
    if not isinstance(data, dict):
        problems.append(f"{source}: expected a JSON object with rule_ids and traces, got {_json_type(data)}")
        return None
    before = len(problems)
    rule_ids = _string_list(data, "rule_ids", source, "rule ids", problems, required=True)
    if "rule_ids" in data and isinstance(data["rule_ids"], list) and not data["rule_ids"]:
        problems.append(f"{source}: 'rule_ids' is empty; expected the rule ids to score")
    known = set(rule_ids) if len(problems) == before else None  # no second complaint per trace about bad rule_ids
    controls = _string_list(data, "controls", source, "scenario names", problems, required=False)
    raw_traces = data.get("traces")
    if not isinstance(raw_traces, list) or not raw_traces:
        problems.append(f"{source}: 'traces' must be a non-empty list of trace entries, got {_json_type(raw_traces)}")
        return None
    traces: list[LabelledTrace] = []
    seen: set[str] = set()
    for i, item in enumerate(raw_traces):
        trace = _build_trace(item, f"{source}: trace #{i + 1}", known, set(controls), problems)
        if trace is None:
            continue
        if trace.id in seen:
            problems.append(f"{source}: trace {trace.id!r}: duplicate trace id")
            continue
        seen.add(trace.id)
        traces.append(trace)
    return Labels(source=source, root=root, rule_ids=rule_ids, controls=controls, traces=tuple(traces))


def _build_trace(item: Any, where: str, rule_ids: set[str] | None, controls: set[str], problems: list[str]) -> LabelledTrace | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: expected an object with id, scenario, path and expected, got {_json_type(item)}")
        return None
    before = len(problems)
    trace_id = item.get("id")
    if isinstance(trace_id, str) and trace_id.strip():
        where = f"{where} ({trace_id!r})"
    else:
        problems.append(f"{where}: 'id' must be a non-empty string, got {trace_id!r}")
    for key in ("scenario", "path"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            problems.append(f"{where}: {key!r} must be a non-empty string, got {item.get(key)!r}")
    expected = _string_list(item, "expected", where, "rule ids", problems, required=True)
    allowed = _string_list(item, "allowed", where, "rule ids", problems, required=False)
    unknown = [rule for rule in expected if rule not in rule_ids] if rule_ids is not None else []
    for rule in unknown:
        problems.append(f"{where}: expected rule {rule!r} is not one of the file's rule_ids")
    both = sorted(set(expected) & set(allowed))
    if both:
        problems.append(f"{where}: {', '.join(both)} both expected and allowed; expected ids must be reported, allowed ones may be")
    scenario = item.get("scenario")
    listed = isinstance(scenario, str) and scenario in controls
    control = item.get("control", listed)
    if not isinstance(control, bool):
        problems.append(f"{where}: 'control' must be true or false, got {control!r}")
    elif "control" in item and control != listed and controls:
        problems.append(
            f"{where}: 'control' is {str(control).lower()} but scenario {scenario!r} is "
            f"{'' if listed else 'not '}in the file's controls; expected them to agree"
        )
    if control is True and expected:
        problems.append(f"{where}: a control must expect nothing, got expected {list(expected)}")
    seed = item.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append(f"{where}: 'seed' must be an integer or null, got {seed!r}")
    if len(problems) > before or not isinstance(trace_id, str) or not isinstance(scenario, str):
        return None
    return LabelledTrace(
        id=trace_id.strip(),
        scenario=scenario.strip(),
        path=item["path"],
        expected=expected,
        allowed=allowed,
        control=control,
        seed=seed,
    )


def _string_list(data: dict, key: str, where: str, what: str, problems: list[str], *, required: bool) -> tuple[str, ...]:
    if key not in data and not required:
        return ()
    value = data.get(key)
    if not isinstance(value, list):
        problems.append(f"{where}: {key!r} must be a list of {what}, got {_json_type(value)}")
        return ()
    if not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{where}: {key!r} must be a list of {what} (non-empty strings), got {value!r}")
        return ()
    if len(set(value)) != len(value):
        problems.append(f"{where}: {key!r} lists an entry twice")
    return tuple(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- analysis of one trace (worker side)


@dataclass(frozen=True)
class ReportedRule:
    """A rule id reported on a trace: its strongest finding at >= medium."""

    id: str
    severity: str
    score: float


@dataclass(frozen=True)
class TraceOutcome:
    """What one trace's analysis contributes to the score."""

    reported: tuple[ReportedRule, ...]
    indices: Indices
    error: str | None = None  # the trace could not be analyzed: why


@dataclass(frozen=True)
class _Task:
    path: str
    window_s: float
    rules_dirs: tuple[str, ...]


def reported_rules(findings: Iterable[Finding]) -> tuple[ReportedRule, ...]:
    """The rule ids a report counts as reporting (rule, or mode of a mode finding) at >= medium.

    Each id once, with its most severe (then highest-scoring) finding; most severe first.
    """
    best: dict[str, ReportedRule] = {}
    for f in findings:
        if _RANK[f.severity] < _MIN_RANK:
            continue
        ids = {f.rule} | ({f.mode} if f.kind == "mode" and f.mode else set())
        for rule in ids:
            seen = best.get(rule)
            if seen is None or (_RANK[f.severity], f.score) > (_RANK[seen.severity], seen.score):
                best[rule] = ReportedRule(rule, f.severity, f.score)
    return tuple(sorted(best.values(), key=lambda r: (-_RANK[r.severity], -r.score, r.id)))


def _analyze_one(task: _Task) -> TraceOutcome:
    """Worker: analyze one trace. A trace that cannot be read or analyzed is an outcome, not a crash."""
    try:
        report = analysis.analyze(task.path, window_s=task.window_s, rules_dirs=[Path(d) for d in task.rules_dirs]).report
    except InputError as exc:
        return TraceOutcome(reported=(), indices=Indices(), error=str(exc))
    return TraceOutcome(reported=reported_rules(report.findings), indices=report.indices)


def _run_all(tasks: list[_Task], jobs: int, progress: ProgressCallback) -> list[TraceOutcome]:
    """Outcomes in the order of `tasks`: in this process for one job, else in spawned workers."""
    total = len(tasks)
    if jobs == 1 or total == 1:
        outcomes = []
        for i, task in enumerate(tasks):
            progress(f"analyzing trace {i + 1}/{total}")
            outcomes.append(_analyze_one(task))
        return outcomes
    context = multiprocessing.get_context("spawn")  # no fork of a process holding Polars' thread pool
    with ProcessPoolExecutor(max_workers=min(jobs, total), mp_context=context) as pool:
        futures = [pool.submit(_analyze_one, task) for task in tasks]
        progress(f"analyzing {total} traces in {min(jobs, total)} workers")
        for done, _ in enumerate(as_completed(futures), 1):
            progress(f"analyzed {done}/{total} traces")
        return [f.result() for f in futures]


# ---------------------------------------------------------------- result types


@dataclass(frozen=True)
class TraceScore:
    id: str
    scenario: str
    seed: int | None
    path: str
    control: bool
    expected: tuple[str, ...]
    allowed: tuple[str, ...]
    reported: tuple[ReportedRule, ...]  # every id reported at >= medium
    true_positives: tuple[str, ...]  # expected and reported
    false_positives: tuple[str, ...]  # reported, neither expected nor allowed
    false_negatives: tuple[str, ...]  # expected, not reported
    status: TraceStatus  # error > miss (a false negative) > false-positive > ok
    indices: Indices
    error: str | None


@dataclass(frozen=True)
class RuleScore:
    rule: str
    tp: int
    fp: int
    fn: int
    precision: float  # 1 when the rule reported nothing (tp + fp == 0)
    recall: float  # 1 when no trace expected it (tp + fn == 0)
    f1: float


@dataclass(frozen=True)
class ConfusionEntry:
    """On traces expecting `expected`, how often `reported` was reported instead of it or as well."""

    expected: str
    reported: str
    instead: int  # traces where `expected` was missed and `reported` reported
    also: int  # traces where both were reported


@dataclass(frozen=True)
class ControlFalseAlarm:
    trace: str
    scenario: str
    seed: int | None
    reported: tuple[ReportedRule, ...]


EACH_DEGRADED = "each degraded scenario"  # every non-control scenario of the seed
# "Higher" means higher by more than this: two analyses of one trace can differ in the last bits
# of a parallel floating-point sum, and that noise must neither pass nor flip a check.
MIN_INDEX_GAP = 1e-9


@dataclass(frozen=True)
class DirectionRule:
    """The index must be higher on scenario `higher` than on scenario `lower` (same seed), by > MIN_INDEX_GAP."""

    index: IndexName
    higher: str
    lower: str  # a scenario name, or EACH_DEGRADED


DIRECTION_RULES: tuple[DirectionRule, ...] = (
    DirectionRule("CI", higher="healthy", lower=EACH_DEGRADED),
    DirectionRule("DI", higher="queue-wait-dominance", lower="healthy"),
    DirectionRule("DI", higher="burst-amplification", lower="healthy"),
    DirectionRule("HCL", higher="memory-path-incoherence", lower="healthy"),
    DirectionRule("HCL", higher="sla-degradation-without-shortage", lower="healthy"),
    DirectionRule("WPI", higher="burst-amplification", lower="legitimate-queueing"),
)


@dataclass(frozen=True)
class DirectionCheck:
    seed: int | None
    index: IndexName
    higher_scenario: str
    lower_scenario: str  # the scenario compared, or EACH_DEGRADED when skipped for want of any
    higher_trace: str | None  # trace ids; None when skipped
    lower_trace: str | None
    higher_value: float | None
    lower_value: float | None
    status: CheckStatus  # a null index fails; a scenario absent from the seed skips
    message: str


@dataclass(frozen=True)
class ScoreResult:
    suite: str  # the labels file
    window_s: float
    rule_ids: tuple[str, ...]
    traces: tuple[TraceScore, ...]  # in the order of labels.json
    rules: tuple[RuleScore, ...]  # in the order of rule_ids
    macro_f1: float
    confusion: tuple[ConfusionEntry, ...]
    control_false_alarms: tuple[ControlFalseAlarm, ...]
    direction_checks: tuple[DirectionCheck, ...]
    unknown_rule_ids: tuple[str, ...]  # labelled ids no loaded rule can report (always missed)

    @property
    def counts(self) -> dict[str, int]:
        statuses = [t.status for t in self.traces]
        return {
            "traces": len(self.traces),
            "controls": sum(t.control for t in self.traces),
            "ok": statuses.count("ok"),
            "miss": statuses.count("miss"),
            "false_positive": statuses.count("false-positive"),
            "error": statuses.count("error"),
        }

    @property
    def direction_counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.direction_checks) for s in ("pass", "fail", "skipped")}


@dataclass(frozen=True)
class AccuracyGate:
    min_macro_f1: float
    passed: bool
    failures: tuple[str, ...]  # why it failed; empty when it passed


# ---------------------------------------------------------------- scoring


def score_suite(
    suite: str | Path,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    rules_dirs: list[Path] | None = None,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> ScoreResult:
    """Analyze every trace of the suite (in `jobs` worker processes) and score the rules."""
    labels = load_labels(suite)
    if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
        raise InputError(f"--window must be a positive number of seconds, got {window_s}")
    if jobs is None:
        jobs = os.cpu_count() or 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    rules = load_rules(list(rules_dirs or []))  # a bad rule directory fails here, once, not per trace
    reportable = {r.id for r in rules} | {r.mode for r in rules if r.kind == "mode" and r.mode}
    dirs = tuple(str(d) for d in rules_dirs or [])
    tasks = [_Task(str(labels.root / t.path), float(window_s), dirs) for t in labels.traces]
    outcomes = _run_all(tasks, jobs, progress or (lambda _msg: None))
    return score_outcomes(labels, outcomes, window_s=float(window_s), reportable=frozenset(reportable))


def score_outcomes(
    labels: Labels, outcomes: list[TraceOutcome], *, window_s: float = DEFAULT_WINDOW_S, reportable: frozenset[str] | None = None
) -> ScoreResult:
    """Score analysis outcomes (one per labelled trace, same order) against the labels."""
    if len(outcomes) != len(labels.traces):
        raise ValueError(f"{len(outcomes)} outcomes for {len(labels.traces)} labelled traces")
    traces = tuple(_trace_score(t, o) for t, o in zip(labels.traces, outcomes))
    rules = tuple(_rule_score(rule, traces) for rule in labels.rule_ids)
    return ScoreResult(
        suite=labels.source,
        window_s=window_s,
        rule_ids=labels.rule_ids,
        traces=traces,
        rules=rules,
        macro_f1=sum(r.f1 for r in rules) / len(rules),
        confusion=confusion(traces),
        control_false_alarms=tuple(
            ControlFalseAlarm(t.id, t.scenario, t.seed, tuple(r for r in t.reported if r.id in t.false_positives))
            for t in traces
            if t.control and t.false_positives
        ),
        direction_checks=direction_checks(traces),
        unknown_rule_ids=() if reportable is None else tuple(r for r in labels.rule_ids if r not in reportable),
    )


def _trace_score(label: LabelledTrace, outcome: TraceOutcome) -> TraceScore:
    reported = {r.id for r in outcome.reported}
    fn = tuple(r for r in label.expected if r not in reported)
    fp = tuple(r.id for r in outcome.reported if r.id not in label.expected and r.id not in label.allowed)
    status: TraceStatus = "error" if outcome.error else "miss" if fn else "false-positive" if fp else "ok"
    return TraceScore(
        id=label.id,
        scenario=label.scenario,
        seed=label.seed,
        path=label.path,
        control=label.control,
        expected=label.expected,
        allowed=label.allowed,
        reported=outcome.reported,
        true_positives=tuple(r for r in label.expected if r in reported),
        false_positives=tuple(sorted(fp)),
        false_negatives=fn,
        status=status,
        indices=outcome.indices,
        error=outcome.error,
    )


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 of one rule from its counts; precision (recall) is 1 when the rule
    reported nothing (had nothing to find), so a rule that stays silent on a suite without its
    condition is not penalised twice."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _rule_score(rule: str, traces: tuple[TraceScore, ...]) -> RuleScore:
    tp = sum(rule in t.true_positives for t in traces)
    fp = sum(rule in t.false_positives for t in traces)
    fn = sum(rule in t.false_negatives for t in traces)
    return RuleScore(rule, tp, fp, fn, *precision_recall_f1(tp, fp, fn))


def confusion(traces: Iterable[TraceScore]) -> tuple[ConfusionEntry, ...]:
    """Expected id -> other ids reported on its traces (instead of it, or also), sorted by pair."""
    counts: dict[tuple[str, str], list[int]] = {}
    for t in traces:
        others = [r.id for r in t.reported if r.id not in t.expected]
        for expected in t.expected:
            missed = expected in t.false_negatives
            for other in others:
                entry = counts.setdefault((expected, other), [0, 0])
                entry[0 if missed else 1] += 1
    return tuple(ConfusionEntry(e, r, instead, also) for (e, r), (instead, also) in sorted(counts.items()))


def direction_checks(traces: tuple[TraceScore, ...], rules: tuple[DirectionRule, ...] = DIRECTION_RULES) -> tuple[DirectionCheck, ...]:
    """Every direction rule on every seed: one check per pair of traces, or one skipped check."""
    seeds: list[int | None] = []
    for t in traces:
        if t.seed not in seeds:
            seeds.append(t.seed)
    out: list[DirectionCheck] = []
    for seed in seeds:
        at_seed = [t for t in traces if t.seed == seed]
        for rule in rules:
            highs = [t for t in at_seed if t.scenario == rule.higher]
            lows = [t for t in at_seed if (not t.control if rule.lower == EACH_DEGRADED else t.scenario == rule.lower)]
            absent = [s for s, found in ((rule.higher, highs), (rule.lower, lows)) if not found]
            if absent:
                out.append(_skipped(seed, rule, absent))
                continue
            out.extend(_compare(seed, rule.index, h, lo) for h in highs for lo in lows if h.id != lo.id)
    return tuple(out)


def _skipped(seed: int | None, rule: DirectionRule, absent: list[str]) -> DirectionCheck:
    what = " and ".join("no degraded scenario" if s == EACH_DEGRADED else f"no {s} trace" for s in absent)
    message = f"{rule.index} {rule.higher} > {rule.lower}: {what} at seed {_seed_text(seed)}"
    return DirectionCheck(seed, rule.index, rule.higher, rule.lower, None, None, None, None, "skipped", message)


def _compare(seed: int | None, index: IndexName, high: TraceScore, low: TraceScore) -> DirectionCheck:
    hv, lv = getattr(high.indices, index), getattr(low.indices, index)
    nulls = [
        f"{t.scenario} ({t.id}) " + ("failed to analyze" if t.error else "has none")
        for t, v in ((high, hv), (low, lv))
        if v is None
    ]
    if nulls:
        status: CheckStatus = "fail"
        message = f"{index} {high.scenario} > {low.scenario}: null index, " + " and ".join(nulls)
    elif hv - lv > MIN_INDEX_GAP:
        status, message = "pass", f"{index} {hv:.3f} ({high.scenario}) > {lv:.3f} ({low.scenario})"
    else:
        status, message = "fail", f"{index} {hv:.3f} ({high.scenario}) is not above {lv:.3f} ({low.scenario})"
    return DirectionCheck(seed, index, high.scenario, low.scenario, high.id, low.id, hv, lv, status, message)


def _seed_text(seed: int | None) -> str:
    return "(none)" if seed is None else str(seed)


def accuracy_gate(result: ScoreResult, min_macro_f1: float) -> AccuracyGate:
    """The CI gate on accuracy: macro-F1 at least `min_macro_f1` and no control false alarm."""
    if not (isinstance(min_macro_f1, (int, float)) and 0 <= min_macro_f1 <= 1):
        raise InputError(f"--min-macro-f1 must be a number in [0, 1], got {min_macro_f1!r}")
    failures = []
    if result.macro_f1 < min_macro_f1:
        failures.append(f"macro-F1 {result.macro_f1:.3f} is below {min_macro_f1:g}")
    if result.control_false_alarms:
        names = ", ".join(f"{a.trace} ({a.scenario}: {', '.join(r.id for r in a.reported)})" for a in result.control_false_alarms)
        failures.append(f"{len(result.control_false_alarms)} control false alarm(s): {names}")
    return AccuracyGate(min_macro_f1=float(min_macro_f1), passed=not failures, failures=tuple(failures))
