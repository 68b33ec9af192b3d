"""Detection suite: every scenario x several seeds, with varied presentation; per-rule scores.

    python benchmarks/detection.py --seeds 5 --report docs/detection.md
    python benchmarks/detection.py --matrix --report docs/detection.md      # structural matrix
    python benchmarks/detection.py --matrix --write-traces /tmp/simmatrix   # + its traces, labelled

Each trace varies what must not matter: entity naming (plain / random), time origin, row
order, container (Parquet / CSV) and optional columns. A rule counts as having fired on a
trace when it produced a finding of severity >= medium. Precision and recall per rule are over
all traces; macro-F1 is the mean F1 over the shipped mode and pattern rules.

`--matrix` runs every scenario on a sample of structural cells (`coherence_diag.simulate.Shape`:
fleet shape x clients x dispatch x batch placement x telemetry present x length): per scenario,
a pairwise covering of the four structural knobs over the levels the scenario applies in, with
every telemetry mask and every length placed on some cell, `--reps` times with other seeds.
It reports per-rule scores overall and per knob level, control false alarms and every miss.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from coherence_diag import analyze
from coherence_diag.model import SEVERITIES
from coherence_diag.scoring import precision_recall_f1
from coherence_diag.simulate import SCENARIOS, Shape, Telemetry, simulate, write_trace
from coherence_diag.simulate.shape import KNOB_LEVELS, TELEMETRY_PARTS

AT_LEAST = SEVERITIES.index("medium")
OPTIONAL_COLUMNS = ("ttft_slo_ms", "mig_profile", "batch_size", "tokens", "retransmits", "vgpu_wait_ms")


@dataclass(frozen=True)
class Run:
    scenario: str
    seed: int
    variant: str
    fired: frozenset[str]  # rules with a finding >= medium
    seconds: float
    cell: tuple[tuple[str, str], ...] = ()  # matrix runs: (knob, level) for every knob

    def level(self, knob: str) -> str:
        return dict(self.cell)[knob]

    @property
    def unexpected(self) -> frozenset[str]:
        """Rules that fired beyond the scenario's own, its accepted co-reports and the cell's
        background conditions."""
        return self.unexpected_strict - CO_REPORTS.get(self.scenario, frozenset())

    @property
    def unexpected_strict(self) -> frozenset[str]:
        """As `unexpected`, counting every co-report as a false positive."""
        return self.fired - {SCENARIOS[self.scenario].expected_rule} - background_rules(dict(self.cell))


def variant_of(seed: int) -> dict[str, object]:
    return {
        "naming": "random" if seed % 2 else "plain",
        "time_origin": datetime(2025, 3, 1, tzinfo=UTC) + timedelta(days=37 * seed, seconds=4111 * seed),
        "shuffle": seed % 3 != 1,
        "container": "csv" if seed % 4 == 2 else "parquet",
        "drop_optional": seed % 2 == 0,
    }


def run_one(scenario: str, seed: int, workdir: Path, duration_s: float | None = None) -> Run:
    v = variant_of(seed)
    frame = simulate(scenario, seed, duration_s=duration_s, naming=v["naming"], time_origin=v["time_origin"])
    if v["drop_optional"]:
        frame = frame.drop([c for c in OPTIONAL_COLUMNS if c in frame.columns])
    if v["shuffle"]:
        frame = frame[np.random.default_rng(seed).permutation(frame.height)]
    path = workdir / f"{scenario}-{seed}.{v['container']}"
    write_trace(frame, path)
    t = time.perf_counter()
    report = analyze(path).report
    fired = frozenset(f.rule for f in report.findings if SEVERITIES.index(f.severity) >= AT_LEAST)
    label = f"{v['naming']}/{'shuffled' if v['shuffle'] else 'ordered'}/{v['container']}/{'lean' if v['drop_optional'] else 'full'}"
    return Run(scenario, seed, label, fired, time.perf_counter() - t)


def run_suite(seeds: list[int], duration_s: float | None = None, scenarios: list[str] | None = None) -> list[Run]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="coherence-detection-") as tmp:
        for scenario in scenarios or list(SCENARIOS):
            for seed in seeds:
                runs.append(run_one(scenario, seed, Path(tmp), duration_s))
    return runs


def scores(runs: list[Run], strict: bool = False) -> dict[str, dict[str, float]]:
    rules = sorted(s for s, sc in SCENARIOS.items() if sc.expected_rule)
    out = {}
    for rule in rules:
        tp = sum(1 for r in runs if r.scenario == rule and rule in r.fired)
        fn = sum(1 for r in runs if r.scenario == rule and rule not in r.fired)
        fp = sum(1 for r in runs if r.scenario != rule and rule in (r.unexpected_strict if strict else r.unexpected))
        # The same definitions as `rules score` (precision 1 when the rule reported nothing).
        precision, recall, f1 = precision_recall_f1(tp, fp, fn)
        out[rule] = {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}
    return out


def macro_f1(table: dict[str, dict[str, float]]) -> float:
    return sum(v["f1"] for v in table.values()) / len(table)


def baseline_false_alarms(runs: list[Run]) -> list[Run]:
    return [r for r in runs if SCENARIOS[r.scenario].expected_rule is None and r.unexpected]


def rule_table(table: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| rule | TP | FP | FN | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
    for rule, v in table.items():
        lines.append(
            f"| `{rule}` | {v['tp']} | {v['fp']} | {v['fn']} | {v['precision']:.2f} | {v['recall']:.2f} | {v['f1']:.2f} |"
        )
    return lines


def markdown(runs: list[Run], seeds: list[int]) -> str:
    table = scores(runs)
    lines = [
        "# Detection quality",
        "",
        "Generated by `make detection` (`python benchmarks/detection.py --seeds 5 --matrix --reps 5 --report docs/detection.md`).",
        f"Every scenario x seeds {seeds}; each trace varies naming (plain/random), time origin, row",
        "order, container (Parquet/CSV) and optional columns. A rule fired when it produced a finding",
        "of severity >= medium.",
        "",
        f"**Macro-F1: {macro_f1(table):.3f}** over {len(table)} mode and pattern rules (target >= 0.95).",
        f"Baseline traces (healthy, legitimate-queueing) with a finding >= medium: {len(baseline_false_alarms(runs))}.",
        "",
        "Scope: these are simulated traces, one injected condition each on a healthy heterogeneous",
        "fleet. They show that each rule reads the physics of its own condition and not names, clock",
        "origin, row order, container or optional columns; they do not measure detection on production",
        "traces, where conditions overlap.",
        "",
        *rule_table(table),
    ]
    lines += ["", "## Every run", "", "| scenario | seed | variant | fired (>= medium) |", "|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.scenario} | {r.seed} | {r.variant} | {', '.join(sorted(r.fired)) or '-'} |")
    return "\n".join(lines) + "\n"


# --- the structural matrix ---------------------------------------------------------------------

TELEMETRY_MASKS: tuple[Telemetry, ...] = (
    Telemetry(),
    *(Telemetry.without(part) for part in TELEMETRY_PARTS),
    Telemetry.without(*TELEMETRY_PARTS),
)
SHORT_S = 180.0  # most cells: the shortest length of the range
LENGTHS_S = (SHORT_S, 600.0, 1800.0)
MATRIX_KNOBS = (*KNOB_LEVELS, "telemetry", "length")
CONTROLS = tuple(name for name, sc in SCENARIOS.items() if sc.expected_rule is None)


# Co-reports accepted with a scenario's own rule: the labelling convention of the independent
# validation suite (../shared/validation/labels.json, `allowed`), applied unchanged. The symptom
# rule (SLO misses without a shortage) and the queueing and burst patterns a condition causes
# may be reported beside it. Controls accept nothing. `--strict` scores without them.
CO_REPORTS: dict[str, frozenset[str]] = {
    "batch-scheduling-conflict": frozenset({"slot-locking", "queue-wait-dominance"}),
    "burst-amplification": frozenset({"queue-wait-dominance", "sla-degradation-without-shortage"}),
    "idle-overload-oscillation": frozenset({"burst-amplification", "queue-wait-dominance"}),
    "interconnect-capacity-inaccessibility": frozenset({"sla-degradation-without-shortage"}),
    "memory-path-incoherence": frozenset({"sla-degradation-without-shortage"}),
    "queue-wait-dominance": frozenset({"sla-degradation-without-shortage"}),
    "retry-amplification": frozenset({"burst-amplification", "queue-wait-dominance", "sla-degradation-without-shortage"}),
    "sla-degradation-without-shortage": frozenset({"queue-wait-dominance"}),
    "slot-locking": frozenset({"batch-scheduling-conflict", "queue-wait-dominance"}),
    "virtualization-control-distortion": frozenset({"sla-degradation-without-shortage"}),
}


def background_rules(levels: dict[str, str]) -> frozenset[str]:
    """Conditions a matrix cell's structural levels inject whatever its scenario: reporting them
    is right, so they are `allowed` (neither expected nor a false positive). Gang-scheduled batch
    jobs in the inference queue of a unified pool are a batch-scheduling conflict; an external
    batch system holding serving devices for minutes is slot locking; clients that retry turn
    any overload of the scenario into retry storms."""
    out = set()
    if levels.get("batch") == "shared-queue" and levels.get("fleet") in ("colocated", "pools"):
        out.add("batch-scheduling-conflict")
    if levels.get("batch") == "external-holds":
        out.add("slot-locking")
    if levels.get("clients") == "retry":
        out.add("retry-amplification")
    return frozenset(out)


@dataclass(frozen=True)
class Cell:
    scenario: str
    seed: int
    shape: Shape
    rep: int = 0

    @property
    def levels(self) -> tuple[tuple[str, str], ...]:
        knobs = [(k, str(self.shape.level(k))) for k in KNOB_LEVELS]
        return (*knobs, ("telemetry", self.shape.telemetry.label), ("length", f"{self.shape.length_s:g}s"))

    @property
    def label(self) -> str:
        return self.shape.label


def pairwise_rows(levels: dict[str, tuple[str, ...]], rng: random.Random) -> list[dict[str, str]]:
    """A small set of rows (knob -> level) in which every pair of levels of every two knobs
    occurs at least once (greedy covering; deterministic for a given rng)."""
    knobs = list(levels)
    todo = {
        ((a, x), (b, y)) for a, b in itertools.combinations(knobs, 2) for x in levels[a] for y in levels[b]
    }
    rows: list[dict[str, str]] = []
    candidates = [dict(zip(knobs, combo)) for combo in itertools.product(*(levels[k] for k in knobs))]
    while todo:
        rng.shuffle(candidates)

        def gain(row: dict[str, str]) -> int:
            return sum(((a, row[a]), (b, row[b])) in todo for a, b in itertools.combinations(knobs, 2))  # noqa: B023 (used at once)

        best = max(candidates, key=gain)
        rows.append(best)
        todo -= {((a, best[a]), (b, best[b])) for a, b in itertools.combinations(knobs, 2)}
    return rows


def matrix_cells(rep: int = 0, scenarios: Iterable[str] | None = None) -> list[Cell]:
    """Every scenario's cells for one replication: a pairwise covering of the structural knobs
    (the levels the scenario applies in), extended until every telemetry mask has a cell; one
    cell each runs 10 and 30 minutes, the rest 3 minutes. Seeds differ by scenario, cell and rep."""
    cells = []
    for s_idx, name in enumerate(scenarios or SCENARIOS):
        applies = SCENARIOS[name].applies
        levels = {k: applies.levels(k) for k in KNOB_LEVELS}
        rng = random.Random(f"{name}/{rep}")
        rows = pairwise_rows(levels, rng)
        while len(rows) < len(TELEMETRY_MASKS):
            rows.append({k: rng.choice(v) for k, v in levels.items()})
        offset = rng.randrange(len(TELEMETRY_MASKS))
        long_rows = rng.sample(range(len(rows)), 2)
        for r_idx, row in enumerate(rows):
            length = LENGTHS_S[1 + long_rows.index(r_idx)] if r_idx in long_rows else SHORT_S
            mask = TELEMETRY_MASKS[(r_idx + offset) % len(TELEMETRY_MASKS)]
            shape = Shape(**row, telemetry=mask, length_s=length)
            cells.append(Cell(name, 1000 * (rep + 1) + 50 * s_idx + r_idx, shape, rep))
    return cells


def simulate_cell(cell: Cell) -> pl.DataFrame:
    """The cell's trace, presented as variant_of says (naming, clock, row order, columns)."""
    v = variant_of(cell.seed % 60)  # clocks stay within a few years of 2025
    frame = simulate(cell.scenario, cell.seed, shape=cell.shape, naming=v["naming"], time_origin=v["time_origin"])
    if v["drop_optional"]:
        frame = frame.drop([c for c in OPTIONAL_COLUMNS if c in frame.columns])
    if v["shuffle"]:
        frame = frame[np.random.default_rng(cell.seed).permutation(frame.height)]
    return frame


def run_cell(cell: Cell, workdir: str, keep_dir: str | None = None) -> Run:
    frame = simulate_cell(cell)
    path = Path(keep_dir or workdir) / f"{cell.scenario}.{cell.label}.s{cell.seed}.parquet"
    write_trace(frame, path)
    t = time.perf_counter()
    report = analyze(path).report
    fired = frozenset(f.rule for f in report.findings if SEVERITIES.index(f.severity) >= AT_LEAST)
    seconds = time.perf_counter() - t
    if keep_dir is None:
        path.unlink()
    return Run(cell.scenario, cell.seed, cell.label, fired, seconds, cell.levels)


def run_matrix(
    reps: int = 5, workers: int = 2, scenarios: list[str] | None = None, keep_dir: Path | None = None, progress: bool = True
) -> list[Run]:
    """Every cell of `reps` replications, in `workers` spawned processes. With keep_dir, the
    traces of the first replication are kept there with a labels.json."""
    cells = [c for r in range(reps) for c in matrix_cells(r, scenarios)]
    keep = {id(c) for c in cells if c.rep == 0} if keep_dir is not None else set()
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    os.environ.setdefault("POLARS_MAX_THREADS", "1")  # inherited by the spawned workers
    with tempfile.TemporaryDirectory(prefix="coherence-matrix-") as tmp:
        args = [(c, tmp, str(keep_dir) if id(c) in keep else None) for c in cells]
        if workers <= 1:
            results: Iterable[Run] = (run_cell(*a) for a in args)
            for i, run in enumerate(results, 1):
                runs.append(run)
                _tick(progress, i, len(cells), run)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for i, run in enumerate(pool.map(run_cell, *zip(*args), chunksize=1), 1):
                    runs.append(run)
                    _tick(progress, i, len(cells), run)
    if keep_dir is not None:
        write_labels(keep_dir, [c for c in cells if id(c) in keep])
    return runs


def _tick(progress: bool, i: int, n: int, run: Run) -> None:
    if progress:
        print(f"[{i}/{n}] {run.scenario} {run.variant} s{run.seed}: {', '.join(sorted(run.fired)) or '-'}", file=sys.stderr, flush=True)


def write_labels(directory: Path, cells: list[Cell]) -> None:
    """labels.json in the format of the shared validation set: one entry per kept trace."""
    rules = sorted(s for s, sc in SCENARIOS.items() if sc.expected_rule)
    traces = []
    for c in cells:
        sc = SCENARIOS[c.scenario]
        traces.append(
            {
                "id": f"m{c.seed}",
                "scenario": c.scenario,
                "path": f"{c.scenario}.{c.label}.s{c.seed}.parquet",
                "expected": [sc.expected_rule] if sc.expected_rule else [],
                "allowed": sorted((background_rules(dict(c.levels)) | CO_REPORTS.get(c.scenario, frozenset())) - {sc.expected_rule}),
                "control": sc.expected_rule is None,
                "seed": c.seed,
                "shape": dict(c.levels),
            }
        )
    labels = {
        "about": "Structural matrix of coherence-diag's own simulator (benchmarks/detection.py --matrix): every scenario "
        "on a pairwise covering of fleet shape x clients x dispatch x batch placement, every telemetry mask and length.",
        "scoring": "As in the shared validation set: a rule id is reported when a finding has that rule at severity >= "
        "medium; expected must be reported, any other id is a false positive; controls must report nothing at >= medium.",
        "rule_ids": rules,
        "controls": list(CONTROLS),
        "traces": traces,
    }
    (directory / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")


def family_scores(runs: list[Run]) -> dict[tuple[str, str], dict[str, object]]:
    """Per knob level: the runs, per-rule scores among them, macro-F1, own-rule recall and
    control false alarms."""
    out: dict[tuple[str, str], dict[str, object]] = {}
    for knob in MATRIX_KNOBS:
        for level in sorted({r.level(knob) for r in runs}):
            sub = [r for r in runs if r.level(knob) == level]
            table = scores(sub)
            supported = [v for rule, v in table.items() if v["tp"] + v["fn"] > 0]
            own = [r for r in sub if SCENARIOS[r.scenario].expected_rule]
            out[(knob, level)] = {
                "runs": len(sub),
                "table": table,
                "macro_f1": sum(v["f1"] for v in supported) / len(supported) if supported else float("nan"),
                "recall": sum(SCENARIOS[r.scenario].expected_rule in r.fired for r in own) / len(own) if own else float("nan"),
                "control_alarms": len(baseline_false_alarms(sub)),
                "controls": sum(1 for r in sub if r.scenario in CONTROLS),
            }
    return out


def misses(runs: list[Run]) -> list[Run]:
    return [r for r in runs if SCENARIOS[r.scenario].expected_rule and SCENARIOS[r.scenario].expected_rule not in r.fired]


def matrix_markdown(runs: list[Run], reps: int, minutes: float) -> str:
    table = scores(runs)
    fam = family_scores(runs)
    alarms = baseline_false_alarms(runs)
    missed = misses(runs)
    n_cells = len({(r.scenario, r.variant) for r in runs})
    lines = [
        "## Structural matrix",
        "",
        f"Generated by `make detection` (`python benchmarks/detection.py --matrix --reps {reps}`; {len(runs)} traces, "
        f"{minutes:.1f} min on this machine). Each scenario runs on a pairwise covering of the structural knobs of",
        "`coherence_diag.simulate.Shape` over the levels it applies in (fleet: colocated / pools / disaggregated;",
        "clients: no-timeout / timeout / retry; dispatch: continuous / tick / affinity; batch placement: shared-queue /",
        "external-holds), every telemetry mask (full; without predicted_ms, sm_active, kv_cache_util, the network or the",
        "hypervisor layer; without all five) and every length (3, 10, 30 min) on some cell, with naming, clock, row",
        f"order and optional columns varied as above; {reps} replications with other seeds ({n_cells} distinct cells).",
        "Scenarios restrict knobs where their condition needs a level (see `Scenario.applies`).",
        "",
        f"**Macro-F1: {macro_f1(table):.3f}** over {len(table)} mode and pattern rules, with the co-reports the "
        "independent validation suite accepts beside a scenario's own rule (`CO_REPORTS`: mostly the SLO symptom "
        f"rule); counting every co-report as a false positive: {macro_f1(scores(runs, strict=True)):.3f}. "
        f"Control traces (healthy, legitimate-queueing) with a finding >= medium: {len(alarms)} of "
        f"{sum(1 for r in runs if r.scenario in CONTROLS)}.",
        "",
        *rule_table(table),
    ]
    lines += [
        "",
        "### Per knob level",
        "",
        "Scores among the traces of one level of one knob: macro-F1 over the rules with a scenario among them, the",
        "share of non-control traces whose own rule fired, and control traces with a finding >= medium.",
        "",
        "| knob | level | traces | macro-F1 | own-rule recall | control false alarms |",
        "|---|---|---|---|---|---|",
    ]
    for (knob, level), v in fam.items():
        lines.append(
            f"| {knob} | {level} | {v['runs']} | {v['macro_f1']:.2f} | {v['recall']:.2f} | {v['control_alarms']} of {v['controls']} |"
        )
    for knob in MATRIX_KNOBS:
        levels = [lv for (k, lv) in fam if k == knob]
        lines += ["", f"#### F1 per rule by {knob}", "", "| rule | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
        for rule in table:
            cells = []
            for lv in levels:
                v = fam[(knob, lv)]["table"][rule]  # type: ignore[index]
                cells.append("-" if v["tp"] + v["fn"] + v["fp"] == 0 else f"{v['f1']:.2f}")
            lines.append(f"| `{rule}` | " + " | ".join(cells) + " |")
    lines += ["", "### Control false alarms", ""]
    lines += [f"- {r.scenario} s{r.seed} `{r.variant}`: {', '.join(sorted(r.fired))}" for r in alarms] or ["- none"]
    lines += ["", f"### Misses ({len(missed)})", "", "| scenario | seed | cell | fired (>= medium) |", "|---|---|---|---|"]
    lines += [f"| {r.scenario} | {r.seed} | `{r.variant}` | {', '.join(sorted(r.fired)) or '-'} |" for r in missed]
    lines += ["", "### Every matrix run", "", "| scenario | seed | cell | fired (>= medium) | analyze s |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.scenario} | {r.seed} | `{r.variant}` | {', '.join(sorted(r.fired)) or '-'} | {r.seconds:.1f} |" for r in runs
    ]
    return "\n".join(lines) + "\n"


VALIDATION = Path(__file__).resolve().parent.parent.parent / "shared" / "validation"


def side_by_side(native: list[Run] | None, matrix: list[Run] | None) -> str:
    """Per rule F1 on the native suite, the structural matrix and ../shared/validation (the
    independent simulator's labelled traces, scored by `coherence-diag rules score`)."""
    from coherence_diag.scoring import score_suite

    columns: list[tuple[str, dict[str, float], str]] = []
    if native:
        t = scores(native)
        columns.append(("own simulator, native", {r: v["f1"] for r, v in t.items()}, f"{macro_f1(t):.3f}"))
    if matrix:
        t = scores(matrix)
        columns.append(("own simulator, structural matrix", {r: v["f1"] for r, v in t.items()}, f"{macro_f1(t):.3f}"))
    note = "`../shared/validation` was absent when this page was generated."
    if (VALIDATION / "labels.json").exists():
        result = score_suite(VALIDATION, jobs=2)
        columns.append(("../shared/validation (independent simulator)", {r.rule: r.f1 for r in result.rules}, f"{result.macro_f1:.3f}"))
        d = result.direction_counts
        note = (
            f"`../shared/validation`: {result.counts['traces']} traces, {len(result.control_false_alarms)} control false "
            f"alarm(s), index-direction checks {d['pass']} pass / {d['fail']} fail. Caveat: the rules were rewritten this "
            "session while looking at these traces (thresholds from physical reasoning, checked against them), so this "
            "column is not an unbiased estimate. The matrix was looked at too, but only its first replication (of "
            "five, other seeds): the other replications and the sparser copies of these traces (docs/accuracy.md) are "
            "the checks that were not."
        )
    rules = sorted({r for _, col, _ in columns for r in col})
    lines = [
        "## Side by side",
        "",
        "F1 per rule (a rule fired when it produced a finding >= medium). In the matrix, conditions that a cell's "
        "structure itself injects (gang batch jobs in the inference queue of a unified pool, an external system holding "
        "devices, clients that retry) are allowed there: reporting them is right, so they are neither expected nor false "
        "positives (`background_rules`).",
        "",
        "| rule | " + " | ".join(name for name, _, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for rule in rules:
        lines.append(f"| `{rule}` | " + " | ".join(f"{col.get(rule, float('nan')):.2f}" for _, col, _ in columns) + " |")
    lines.append("| **macro-F1** | " + " | ".join(f"**{m}**" for _, _, m in columns) + " |")
    return "\n".join(lines + ["", note, ""])


def print_scores(runs: list[Run], title: str) -> None:
    table = scores(runs)
    print(title)
    for rule, v in table.items():
        print(f"  {rule:40s} P={v['precision']:.2f} R={v['recall']:.2f} F1={v['f1']:.2f}")
    print(f"  macro-F1 {macro_f1(table):.3f} (strict, every co-report a false positive: {macro_f1(scores(runs, strict=True)):.3f}); control false alarms {len(baseline_false_alarms(runs))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=None, help="every scenario x seeds 1..N, native shape (default 5 without --matrix)")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--matrix", action="store_true", help="the structural matrix (see the module docstring)")
    parser.add_argument("--reps", type=int, default=5, help="matrix replications (other seeds)")
    parser.add_argument("--workers", type=int, default=2, help="matrix worker processes")
    parser.add_argument("--scenario", action="append", help="matrix: only these scenarios (repeatable)")
    parser.add_argument("--write-traces", type=Path, default=None, help="matrix: keep the first replication's traces and a labels.json here")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    n_seeds = args.seeds if args.seeds is not None else (0 if args.matrix else 5)
    parts = []
    runs: list[Run] | None = None
    mruns: list[Run] | None = None
    if n_seeds:
        seeds = list(range(1, n_seeds + 1))
        runs = run_suite(seeds, args.duration)
        print_scores(runs, f"native scenarios x seeds {seeds}")
        parts.append(markdown(runs, seeds))
    if args.matrix:
        t0 = time.perf_counter()
        mruns = run_matrix(args.reps, args.workers, args.scenario, args.write_traces)
        minutes = (time.perf_counter() - t0) / 60
        print_scores(mruns, f"structural matrix: {len(mruns)} traces in {minutes:.1f} min")
        for (knob, level), v in family_scores(mruns).items():
            print(f"  {knob:10s} {level:28s} n={v['runs']:3d} macro-F1={v['macro_f1']:.2f} recall={v['recall']:.2f} control alarms={v['control_alarms']}")
        print(f"  misses: {len(misses(mruns))}")
        if args.write_traces:
            print(f"  traces of replication 0 and labels.json in {args.write_traces}")
        parts.append(matrix_markdown(mruns, args.reps, minutes))
    if args.report:
        if not n_seeds:
            parts.insert(0, "# Detection quality\n")
        parts.insert(1, side_by_side(runs, mruns))
        args.report.write_text("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
