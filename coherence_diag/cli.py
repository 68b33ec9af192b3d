"""The `coherence-diag` command line: a thin layer over the library.

It parses options, calls the library, renders the typed result and maps errors to exit codes
(report-contract.md): 0 ran, 1 gate failed, 2 bad usage or bad input, 3 internal error.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from rich.console import Console

from coherence_diag import __version__
from coherence_diag.errors import InputError
from coherence_diag.outputs import write_atomic

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3

app = typer.Typer(
    name="coherence-diag",
    help="Diagnose cross-layer incoherence in heterogeneous inference fleets from telemetry traces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(str, Enum):
    terminal = "terminal"
    json = "json"


class CompareFormat(str, Enum):
    terminal = "terminal"
    json = "json"
    markdown = "markdown"


class TraceFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"
    layers = "layers"
    shards = "shards"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"coherence-diag {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Diagnose cross-layer incoherence in heterogeneous inference fleets from telemetry traces."""


@contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    """Library errors become one clear line on stderr and an exit code; never a traceback."""
    try:
        yield
    except InputError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # a bug: say so plainly, exit 3
        if os.environ.get("COHERENCE_DIAG_DEBUG"):
            raise
        err_console.print(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in coherence-diag. Re-run with COHERENCE_DIAG_DEBUG=1 for a traceback.",
            markup=False,
        )
        raise typer.Exit(EXIT_INTERNAL) from None


@contextmanager
def _progress(enabled: bool) -> Iterator:
    """A spinner on stderr naming the current step, only when stderr is a terminal."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda msg: bar.update(task, description=escape(msg))  # env names come from the trace


# Options shared by the commands that analyze a trace (a fresh declaration per use).
def _window_option() -> Any:
    return typer.Option(1.0, "--window", help="Time-series window in seconds.", min=0.001)


def _max_bad_fraction_option() -> Any:
    return typer.Option(
        0.01, "--max-bad-fraction", help="Largest fraction of invalid rows set aside before the trace is rejected (exit 2).", min=0.0, max=1.0
    )


def _progress_option() -> Any:
    return typer.Option(True, "--progress/--no-progress", help="Show progress on stderr when it is a terminal.")


def _rules_option() -> Any:
    return typer.Option(None, "--rules", help="Directory of extra rule files (*.yaml); repeatable.")


@app.command()
def analyze(
    trace: str = typer.Argument(..., help="Trace: a .parquet or .csv file, a directory of shards or per-layer files, or a glob."),
    format: OutputFormat = typer.Option(OutputFormat.terminal, "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report to this file (atomically) instead of stdout."),
    window: float = _window_option(),
    max_bad_fraction: float = _max_bad_fraction_option(),
    progress: bool = _progress_option(),
    rules: Optional[list[Path]] = _rules_option(),
    features: bool = typer.Option(False, "--features", help="Also report every computed feature (its value, or why it is undefined)."),
) -> None:
    """Analyze a trace: metrics, coherence indices and findings."""
    from coherence_diag.analysis import analyze as run_analysis
    from coherence_diag.render import json_report, terminal

    with _errors_to_exit_codes():
        _refuse_overwriting_input(output, trace)
        with _progress(progress) as step:
            result = run_analysis(
                trace, window_s=window, max_bad_fraction=max_bad_fraction, rules_dirs=rules, progress=step, with_features=features
            )
        if format is OutputFormat.json:
            text = json_report.render(result.report)
            if output:
                write_atomic(output, text)
            else:
                sys.stdout.write(text)
            return
        _emit_terminal(lambda console: terminal.render(result.report, console), output)


@app.command()
def compare(
    base: str = typer.Argument(..., help="The base trace (before the change, or the migration source)."),
    candidate: Optional[str] = typer.Argument(None, help="The candidate trace (after). Omit it to compare two envs of BASE."),
    env: Optional[list[str]] = typer.Option(
        None, "--env", help="With one trace: the base env, then the candidate env (give --env twice). Default: its two envs, earliest first."
    ),
    format: CompareFormat = typer.Option(CompareFormat.terminal, "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (atomically) instead of stdout."),
    window: float = typer.Option(1.0, "--window", help="Time-series window in seconds.", min=0.001),
    max_bad_fraction: float = typer.Option(
        0.01, "--max-bad-fraction", help="Largest fraction of invalid rows set aside before a trace is rejected (exit 2).", min=0.0, max=1.0
    ),
    rules: Optional[list[Path]] = typer.Option(None, "--rules", help="Directory of extra rule files (*.yaml); repeatable."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress on stderr when it is a terminal."),
) -> None:
    """Compare two traces (before/after), or two environments of one trace (migration)."""
    from coherence_diag import compare as comparing
    from coherence_diag.render import compare as render

    with _errors_to_exit_codes():
        for trace in (base, candidate):
            if trace is not None:
                _refuse_overwriting_input(output, trace)
        options = dict(window_s=window, max_bad_fraction=max_bad_fraction, rules_dirs=rules)
        if candidate is not None and env:
            raise InputError("--env selects two environments of ONE trace; with two traces, give no --env")
        if candidate is None and env and len(env) != 2:
            raise InputError(f"--env must be given exactly twice (base env, candidate env), got {len(env)}")
        with _progress(progress) as step:
            if candidate is not None:
                result = comparing.compare_traces(base, candidate, progress=step, **options)
            else:
                result = comparing.compare_envs(base, *(env or [None, None]), progress=step, **options)
        if format is CompareFormat.terminal:
            _emit_terminal(lambda console: render.render_terminal(result, console), output)
            return
        text = render.render_json(result) if format is CompareFormat.json else render.render_markdown(result)
        if output:
            write_atomic(output, text)
        else:
            sys.stdout.write(text)


@app.command()
def report(
    traces: list[str] = typer.Argument(..., help="Traces (same forms as `analyze`): one HTML page each."),
    out: Path = typer.Option(..., "--out", help="Directory for <name>.html per trace, index.html and summary.json (created if missing)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Worker processes analyzing traces (default: the number of CPUs).", min=1),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Compare every trace with this one: a before/after section."),
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", help="Check every trace against this gate policy; exit 1 when one fails."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Exit 0 even when a trace cannot be analyzed (its index row holds the error)."),
    window: float = _window_option(),
    max_bad_fraction: float = _max_bad_fraction_option(),
    rules: Optional[list[Path]] = _rules_option(),
    progress: bool = _progress_option(),
) -> None:
    """Write one self-contained offline HTML report per trace, an index (worst first) and summary.json."""
    from coherence_diag.batch import BatchOptions
    from coherence_diag.gate import load_policy
    from coherence_diag.render.progress import progress_bar
    from coherence_diag.reports import build_reports

    with _errors_to_exit_codes():
        checked = load_policy(policy, list(rules or [])) if policy is not None else None  # a bad policy fails before any trace is read
        options = BatchOptions(window, max_bad_fraction, tuple(str(r) for r in rules or ()), baseline, checked)
        with progress_bar(err_console, progress) as step:
            result = build_reports(traces, out, options=options, jobs=jobs, progress=step)
        for entry in result.failed:
            err_console.print(f"error: {entry.error}", markup=False)
    if result.failed:
        err_console.print(
            f"{len(result.failed)} of {len(result.entries)} traces could not be analyzed; "
            f"{'' if keep_going else 'exit 2 (--keep-going to exit 0); '}their rows in {out / 'index.html'} hold the errors",
            markup=False,
        )
    code = result.exit_code(keep_going=keep_going)
    if code:
        raise typer.Exit(code)


def _emit_terminal(draw: Callable[[Console], None], output: Optional[Path]) -> None:
    """Draw a Rich view on stdout, or as plain text into `output` (atomically)."""
    if output:
        console = Console(record=True, width=120, file=open(os.devnull, "w"), force_terminal=False)
        draw(console)
        write_atomic(output, console.export_text())
    else:
        draw(Console(highlight=False))


@app.command()
def simulate(
    scenario: Optional[str] = typer.Option(None, "--scenario", "-s", help="Scenario name (see --list)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same trace."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the trace (.parquet, .csv, or a directory)."),
    scale: float = typer.Option(1.0, "--scale", help="Multiply traffic and fleet size (large benchmark traces).", min=0.0001),
    duration: Optional[float] = typer.Option(None, "--duration", help="Simulated seconds of traffic (default: the scenario's)."),
    arrivals: Optional[Path] = typer.Option(None, "--arrivals", help="Replay a real arrival process (Azure LLM CSV or Mooncake JSONL)."),
    fmt: Optional[TraceFormat] = typer.Option(None, "--format", help="Container; default from the output suffix."),
    naming: str = typer.Option("plain", "--naming", help="Entity names: plain, or random (seeded)."),
    list_: bool = typer.Option(False, "--list", help="List the scenarios and exit."),
) -> None:
    """Simulate a heterogeneous serving fleet and write a trace (trace-format v1)."""
    from coherence_diag.simulate import SCENARIOS, simulate as run_simulation, write_trace

    with _errors_to_exit_codes():
        if list_:
            for name, sc in SCENARIOS.items():
                typer.echo(f"{name:40s} {sc.kind:9s} {sc.description}")
            return
        if scenario is None or output is None:
            raise InputError("simulate needs --scenario NAME and --output PATH (or --list)")
        if scenario not in SCENARIOS:
            raise InputError(f"unknown scenario {scenario!r}; expected one of: {', '.join(SCENARIOS)}")
        if naming not in ("plain", "random"):
            raise InputError(f"--naming must be 'plain' or 'random', got {naming!r}")
        frame = run_simulation(scenario, seed, scale=scale, duration_s=duration, arrivals=arrivals, naming=naming)
        write_trace(frame, output, fmt=fmt.value if fmt else None)
        err_console.print(f"wrote {frame.height:,} rows to {output}", markup=False)


rules_app = typer.Typer(help="The taxonomy rules: list them, check rule files.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("list")
def rules_list(
    rules: Optional[list[Path]] = typer.Option(None, "--rules", help="Also load the rule files of this directory; repeatable."),
) -> None:
    """List every rule: id, kind, domain, title."""
    from rich.table import Table

    from coherence_diag.rules.loader import load_rules

    with _errors_to_exit_codes():
        table = Table(title="rules", title_justify="left")
        table.add_column("id", no_wrap=True)
        for col in ("kind", "mode", "domain", "supporting", "title"):
            table.add_column(col)
        for rule in load_rules(list(rules or [])):
            table.add_row(rule.id, rule.kind, rule.mode or "-", rule.domain, ", ".join(rule.supporting_domains) or "-", rule.title)
        Console(highlight=False).print(table)


@rules_app.command("check")
def rules_check(directory: Path = typer.Argument(..., help="Directory of rule files to validate.")) -> None:
    """Validate rule files (exit 2 naming file, rule and problem)."""
    from coherence_diag.rules.loader import load_rules

    with _errors_to_exit_codes():
        loaded = load_rules([directory])
        typer.echo(f"{directory}: ok ({len(loaded)} rules in all, shipped ones included)")


@rules_app.command("score")
def rules_score(
    suite: Path = typer.Argument(..., help="A labelled suite: a directory holding labels.json, or the labels.json file."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Worker processes analyzing traces (default: the number of CPUs).", min=1),
    format: CompareFormat = typer.Option(CompareFormat.terminal, "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the result to this file (atomically) instead of stdout."),
    rules: Optional[list[Path]] = typer.Option(None, "--rules", help="Directory of extra rule files (*.yaml); repeatable."),
    window: float = typer.Option(1.0, "--window", help="Time-series window in seconds.", min=0.001),
    min_macro_f1: Optional[float] = typer.Option(
        None, "--min-macro-f1", help="Exit 1 when macro-F1 is below this or a control reports anything at >= medium.", min=0.0, max=1.0
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress on stderr when it is a terminal."),
) -> None:
    """Score the rules on a labelled suite: per-rule precision/recall/F1, macro-F1, index directions."""
    from coherence_diag import scoring
    from coherence_diag.render import score as render_score

    with _errors_to_exit_codes():
        _refuse_overwriting_input(output, str(scoring.labels_path(suite).parent))
        if output is not None and not output.resolve().parent.is_dir():  # before the (long) analysis
            raise InputError(f"{output}: cannot write output, directory {output.parent} does not exist")
        with _progress(progress) as step:
            result = scoring.score_suite(suite, window_s=window, rules_dirs=rules, jobs=jobs, progress=step)
        gate = scoring.accuracy_gate(result, min_macro_f1) if min_macro_f1 is not None else None
        if format is CompareFormat.terminal:
            _emit_terminal(lambda console: render_score.render_terminal(result, console, gate), output)
        else:
            text = render_score.render_json(result, gate) if format is CompareFormat.json else render_score.render_markdown(result, gate)
            if output:
                write_atomic(output, text)
            else:
                sys.stdout.write(text)
    if gate is not None and not gate.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command()
def explain(
    name: str = typer.Argument(..., help="A rule id, an index (CI, DI, WPI, HCL), a feature name, or 'features' / 'indices'."),
    trace: Optional[str] = typer.Option(
        None, "--trace", "-t", help="Explain the rule NAME on this trace: each clause, score term and signal with its values, and the verdict."
    ),
    format: OutputFormat = typer.Option(OutputFormat.terminal, "--format", "-f", help="Output format (json only with --trace)."),
    window: float = _window_option(),
    max_bad_fraction: float = _max_bad_fraction_option(),
    rules: Optional[list[Path]] = _rules_option(),
    progress: bool = _progress_option(),
) -> None:
    """Explain a rule, an index or a feature: definition, inputs, what to check next; with --trace,
    why a rule did or did not fire on that trace."""
    from coherence_diag import docgen

    with _errors_to_exit_codes():
        if trace is None:
            if format is OutputFormat.json:
                raise InputError("--format json explains a rule on a trace: give --trace TRACE")
            typer.echo(docgen.explain(name, list(rules or [])))
            return
        from coherence_diag.analysis import analyze as run_analysis
        from coherence_diag.render import explain as render_explain
        from coherence_diag.rules.loader import find_rule, load_rules

        find_rule(name, load_rules(list(rules or [])))  # an unknown rule fails before the (slow) analysis
        with _progress(progress) as step:
            result = run_analysis(trace, window_s=window, max_bad_fraction=max_bad_fraction, rules_dirs=rules, progress=step)
        explanation = result.explain(name)
        if format is OutputFormat.json:
            sys.stdout.write(render_explain.render_json(explanation, result.report.trace.path))
        else:
            render_explain.render_terminal(explanation, Console(highlight=False), result.report.trace.path)


class GateFormat(str, Enum):
    terminal = "terminal"
    json = "json"
    markdown = "markdown"


@app.command()
def gate(
    trace: str = typer.Argument(..., help="Trace to judge (same forms as `analyze`)."),
    policy: Path = typer.Option(..., "--policy", "-p", help="Policy file (YAML; docs/gate.md)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline trace for the policy's regression checks."),
    format: GateFormat = typer.Option(GateFormat.terminal, "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the result to this file (atomically) instead of stdout."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write a JUnit XML file: one test case per check."),
    rules: Optional[list[Path]] = typer.Option(None, "--rules", help="Directory of extra rule files (*.yaml); repeatable."),
    window: float = typer.Option(1.0, "--window", help="Time-series window in seconds.", min=0.001),
    max_bad_fraction: float = typer.Option(
        0.01, "--max-bad-fraction", help="Largest fraction of invalid rows set aside before a trace is rejected (exit 2).", min=0.0, max=1.0
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress on stderr when it is a terminal."),
) -> None:
    """Check a trace against a policy: exit 0 if it passes, 1 if it fails, 2 on bad input or policy."""
    from coherence_diag.analysis import analyze as run_analysis
    from coherence_diag.gate import evaluate, load_policy
    from coherence_diag.render import gate as render_gate

    with _errors_to_exit_codes():
        for target in (output, junit):
            for source in (trace, baseline, str(policy)):
                if source is not None:
                    _refuse_overwriting_input(target, source)
        if output is not None and junit is not None and output.resolve() == junit.resolve():
            raise InputError(f"{output}: --output and --junit name the same file")
        for target in (output, junit):  # before any work, so that one output is not written without the other
            if target is not None and not target.resolve().parent.is_dir():
                raise InputError(f"{target}: cannot write output, directory {target.parent} does not exist")
        # The policy is validated before any trace is read: a bad policy fails fast.
        checked = load_policy(policy, list(rules or []))
        options = dict(window_s=window, max_bad_fraction=max_bad_fraction, rules_dirs=rules)
        with _progress(progress) as step:
            report = run_analysis(trace, progress=step, **options).report
            base = run_analysis(baseline, progress=step, **options).report if baseline is not None else None
        result = evaluate(checked, report, base)
        if junit is not None:
            write_atomic(junit, render_gate.render_junit(result))
        if format is GateFormat.terminal:
            if output:
                console = Console(record=True, width=120, file=open(os.devnull, "w"), force_terminal=False)
                render_gate.render_terminal(result, console)
                write_atomic(output, console.export_text())
            else:
                render_gate.render_terminal(result, Console(highlight=False))
        else:
            text = render_gate.render_json(result) if format is GateFormat.json else render_gate.render_markdown(result)
            if output:
                write_atomic(output, text)
            else:
                sys.stdout.write(text)
    if not result.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


policy_app = typer.Typer(help="Gate policies: validate policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    file: Path = typer.Argument(..., help="Policy file to validate."),
    rules: Optional[list[Path]] = typer.Option(None, "--rules", help="Also accept the rule ids of this directory; repeatable."),
) -> None:
    """Validate a policy file without a trace (exit 2 naming file, check and problem)."""
    from coherence_diag.gate import load_policy

    with _errors_to_exit_codes():
        checked = load_policy(file, list(rules or []))
        typer.echo(f"{file}: ok (policy {checked.name!r}, {len(checked.checks)} checks)")


def _refuse_overwriting_input(output: Optional[Path], trace: str) -> None:
    if output is None:
        return
    target = output.resolve()
    source = Path(trace).resolve()
    if target == source or (source.is_dir() and source in target.parents):
        raise InputError(f"{output}: refusing to write the report over or inside the input trace {trace}")


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # last resort: Typer/Click internals
        if os.environ.get("COHERENCE_DIAG_DEBUG"):
            raise
        err_console.print(f"internal error: {type(exc).__name__}: {exc}", markup=False)
        sys.exit(EXIT_INTERNAL)
