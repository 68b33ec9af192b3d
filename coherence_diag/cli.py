"""The `coherence-diag` command line: a thin layer over the library.

It parses options, calls the library, renders the typed result and maps errors to exit codes
(report-contract.md): 0 ran, 1 gate failed, 2 bad usage or bad input, 3 internal error.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

import typer
from rich.console import Console
from typer.core import TyperCommand

from coherence_diag import __version__
from coherence_diag.errors import InputError
from coherence_diag.outputs import write_atomic
from coherence_diag.render import registry

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


# The --format choices of each command: the listed formats of its subject in render/registry.py,
# the first the default.
if TYPE_CHECKING:
    from coherence_diag.ingest import TraceSource
    from coherence_diag.scale.read import ScaleOptions

    ReportFormat: TypeAlias = str
    ComparisonFormat: TypeAlias = str
    GateFormat: TypeAlias = str
    ScoreFormat: TypeAlias = str
    ExplanationFormat: TypeAlias = str
else:
    ReportFormat = Literal[registry.formats("report")]
    ComparisonFormat = Literal[registry.formats("comparison")]
    GateFormat = Literal[registry.formats("gate")]
    ScoreFormat = Literal[registry.formats("score")]
    ExplanationFormat = Literal[registry.formats("explanation")]


class TraceFormat(StrEnum):
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
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
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
    """The current step on stderr (a spinner; a bar over work units when a large trace is read in
    units), only when stderr is a terminal: a StepProgress, or None."""
    from coherence_diag.render.progress import step_progress

    with step_progress(err_console, enabled) as step:
        yield step


def _scale(memory_budget: str | None, scheduler: str | None, step: object | None) -> ScaleOptions:
    """The ScaleOptions of --memory-budget and --scheduler, with the unit bar of `step`."""
    from coherence_diag.scale.plan import parse_bytes
    from coherence_diag.scale.read import ScaleOptions

    budget = parse_bytes(memory_budget) if memory_budget is not None else None
    return ScaleOptions(budget, scheduler or None, getattr(step, "units", None), note=_note)


def _note(line: str) -> None:
    err_console.print(f"note: {line}", markup=False)


# Options shared by the commands, declared once. The defaults are the library's
# (timeseries.DEFAULT_WINDOW_S, validate.DEFAULT_MAX_BAD_FRACTION; tests/test_cli.py checks), not
# imported from there so that `--help` does not load Polars.
DEFAULT_WINDOW_S = 1.0
DEFAULT_MAX_BAD_FRACTION = 0.01
FORMAT_HELP = "Output format."

WindowOption = Annotated[float, typer.Option("--window", help="Time-series window in seconds.", min=0.001)]
MaxBadFractionOption = Annotated[
    float,
    typer.Option(
        "--max-bad-fraction", help="Largest fraction of invalid rows set aside before a trace is rejected (exit 2).", min=0.0, max=1.0
    ),
]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress on stderr when it is a terminal.")]
MemoryBudgetOption = Annotated[
    str | None,
    typer.Option(
        "--memory-budget",
        help="Memory for the whole run (e.g. 6GiB, 1.5GiB; default: half the machine's memory): a Parquet trace whose "
        "estimated peak exceeds it is read in time-slice work units, and a budget the analysis cannot keep is refused "
        "(exit 2) with the smallest that fits. Same report; docs/scale.md.",
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Run the work units on Dask: local (this machine's cores), tcp://HOST:PORT, or dask (DASK_SCHEDULER_ADDRESS); "
        "needs the [dask] extra. Same output as in-process.",
    ),
]
RulesOption = Annotated[list[Path] | None, typer.Option("--rules", help="Also load the rule files (*.yaml) of this directory; repeatable.")]
JobsOption = Annotated[
    int | None,
    typer.Option("--jobs", "-j", help="Worker processes analyzing traces (default: the number of CPUs; 1: all in this process).", min=1),
]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Write the result to this file (atomically) instead of stdout.")]
# `--from SOURCE PATH`, repeatable: Typer cannot declare a repeated option of two values, so the
# option is declared as text and `PairCommand` gives it its two values (parser keeps the pairs).
FromOption = Annotated[
    list[str] | None,
    typer.Option(
        "--from", help="Read foreign telemetry: a source name (convert --list) and a file, directory or glob; repeatable.",
        parser=lambda value: value, show_default=False,
    ),
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="With --from: supply LAYER.COLUMN=VALUE on every row of the layer; repeatable.")
]
MapOption = Annotated[
    Path | None, typer.Option("--map", help="With --from: a YAML file of supplied values (`set`) and lookups (`map`), e.g. device -> host.")
]
StartOption = Annotated[
    str | None,
    typer.Option(
        "--start",
        help="With --from: ISO-8601 time at which sources with a relative clock start (default: aligned with the others); "
        "also the time of a prometheus/dcgm snapshot that carries none.",
    ),
]


class PairCommand(TyperCommand):
    """A command whose `--from` takes two values (SOURCE PATH) and repeats."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        for param in self.params:
            if "--from" in getattr(param, "opts", ()):
                param.nargs, param.multiple = 2, True
                param.metavar = "SOURCE PATH"


def _pairs(values: list[str] | None) -> list[tuple[str, str]]:
    """The (source, path) pairs of `--from` (tuples at run time; see PairCommand)."""
    return [(str(v[0]), str(v[1])) for v in (values or [])]


def _trace_or_inputs(
    trace: str | None, froms: list[str] | None, sets: list[str] | None, map_file: Path | None, start: str | None
) -> str | TraceSource:
    """TRACE, or the `--from` inputs converted in memory (a TraceSource); exactly one of them."""
    pairs = _pairs(froms)
    if trace is not None and pairs:
        raise InputError("give a TRACE or --from SOURCE PATH inputs, not both")
    if not pairs:
        if trace is None:
            raise InputError("missing TRACE (or --from SOURCE PATH to convert foreign telemetry in memory)")
        if sets or map_file is not None or start is not None:
            raise InputError("--set, --map and --start apply to --from inputs; TRACE is already in the trace format")
        return trace
    from coherence_diag.convert import open_inputs

    return open_inputs(pairs, sets=sets, map_file=map_file, start=start)


def emit(subject: registry.Subject, format: str, value: object, output: Path | None, *extra: object) -> None:
    """Render `value` with the registered renderer: text to `output` (atomically) or stdout; a
    terminal view onto stdout, or as plain text into `output`."""
    renderer = registry.get(subject, format)
    if renderer.console:
        if output is None:
            registry.draw(subject, format, value, Console(highlight=False), *extra)
            return
        console = Console(record=True, width=120, file=io.StringIO(), force_terminal=False)
        registry.draw(subject, format, value, console, *extra)
        text = console.export_text()
    else:
        text = registry.render_text(subject, format, value, *extra)
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomic(output, text)


def _check_outputs(outputs: tuple[Path | None, ...], inputs: tuple[str | None, ...]) -> None:
    """Before any work: no output over or inside an input, no two outputs on one file, and every
    output's directory exists (so that a long run does not fail at its end, or write one output
    without the other)."""
    given = [o for o in outputs if o is not None]
    for target in given:
        for source in inputs:
            if source is not None:
                _refuse_overwriting_input(target, source)
        if not target.resolve().parent.is_dir():
            raise InputError(f"{target}: cannot write output, directory {target.parent} does not exist")
    for i, target in enumerate(given):
        for other in given[i + 1 :]:
            if target.resolve() == other.resolve():
                raise InputError(f"{target}: two outputs name the same file")


@app.command(cls=PairCommand)
def analyze(
    trace: Annotated[
        str | None, typer.Argument(help="Trace: a .parquet or .csv file, a directory of shards or per-layer files, or a glob.")
    ] = None,
    from_: FromOption = None,
    set_: SetOption = None,
    map_: MapOption = None,
    start: StartOption = None,
    format: Annotated[ReportFormat, typer.Option("--format", "-f", help=FORMAT_HELP)] = "terminal",
    output: OutputOption = None,
    window: WindowOption = DEFAULT_WINDOW_S,
    max_bad_fraction: MaxBadFractionOption = DEFAULT_MAX_BAD_FRACTION,
    progress: ProgressOption = True,
    rules: RulesOption = None,
    features: Annotated[
        bool, typer.Option("--features", help="Also report every computed feature (its value, or why it is undefined).")
    ] = False,
    memory_budget: MemoryBudgetOption = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Analyze a trace, or foreign telemetry given with --from: metrics, coherence indices and findings."""
    from coherence_diag.analysis import analyze as run_analysis

    with _errors_to_exit_codes():
        _check_outputs((output,), (trace, *(p for _, p in _pairs(from_))))
        with _progress(progress) as step:
            source = _trace_or_inputs(trace, from_, set_, map_, start)
            result = run_analysis(
                source,
                window_s=window,
                max_bad_fraction=max_bad_fraction,
                rules_dirs=rules,
                progress=step,
                with_features=features,
                scale=_scale(memory_budget, scheduler, step),
            )
        emit("report", format, result.report, output)


@app.command()
def compare(
    base: Annotated[str, typer.Argument(help="The base trace (before the change, or the migration source).")],
    candidate: Annotated[str | None, typer.Argument(help="The candidate trace (after). Omit it to compare two envs of BASE.")] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env", help="With one trace: the base env, then the candidate env (give --env twice). Default: its two envs, earliest first."
        ),
    ] = None,
    format: Annotated[ComparisonFormat, typer.Option("--format", "-f", help=FORMAT_HELP)] = "terminal",
    output: OutputOption = None,
    window: WindowOption = DEFAULT_WINDOW_S,
    max_bad_fraction: MaxBadFractionOption = DEFAULT_MAX_BAD_FRACTION,
    rules: RulesOption = None,
    progress: ProgressOption = True,
    memory_budget: MemoryBudgetOption = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Compare two traces (before/after), or two environments of one trace (migration)."""
    from coherence_diag import compare as comparing

    with _errors_to_exit_codes():
        _check_outputs((output,), (base, candidate))
        if candidate is not None and env:
            raise InputError("--env selects two environments of ONE trace; with two traces, give no --env")
        if candidate is None and env and len(env) != 2:
            raise InputError(f"--env must be given exactly twice (base env, candidate env), got {len(env)}")
        with _progress(progress) as step:
            scale = _scale(memory_budget, scheduler, step)
            options = dict(window_s=window, max_bad_fraction=max_bad_fraction, rules_dirs=rules, progress=step, scale=scale)
            if candidate is not None:
                result = comparing.compare_traces(base, candidate, **options)
            else:
                base_env, candidate_env = env if env else (None, None)
                result = comparing.compare_envs(base, base_env, candidate_env, **options)
        emit("comparison", format, result, output)


@app.command(cls=PairCommand)
def convert(
    from_: FromOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The trace to write (Parquet, atomically) and TRACE.provenance.json next to it.")
    ] = None,
    set_: SetOption = None,
    map_: MapOption = None,
    start: StartOption = None,
    max_bad_fraction: MaxBadFractionOption = DEFAULT_MAX_BAD_FRACTION,
    list_: Annotated[bool, typer.Option("--list", help="List every source: what it reads, can and cannot supply.")] = False,
) -> None:
    """Convert foreign telemetry (public request traces, metrics) into a trace, with its provenance."""
    from coherence_diag import convert as converting

    with _errors_to_exit_codes():
        if list_:
            for source in converting.source_list():
                typer.echo(f"{source.name}: {source.title}\n  reads: {source.reads}\n  clock: {source.clock}")
                for line in source.supplies:
                    typer.echo(f"  supplies: {line}")
                for line in source.cannot_supply:
                    typer.echo(f"  cannot supply: {line}")
            return
        pairs = _pairs(from_)
        if not pairs or output is None:
            raise InputError("convert needs --from SOURCE PATH (repeatable) and --output TRACE (or --list)")
        sidecar = Path(f"{output}.provenance.json")
        _check_outputs((output, sidecar), tuple(p for _, p in pairs))
        done = converting.convert(pairs, output, sets=set_, map_file=map_, start=start, max_bad_fraction=max_bad_fraction)
        layers = ", ".join(f"{name} {n:,}" for name, n in done.layers.items())
        aside = f"; set aside {sum(done.set_aside.values()):,} ({', '.join(done.set_aside)})" if done.set_aside else ""
        err_console.print(f"wrote {done.rows:,} rows ({layers}) to {done.output}, provenance to {done.provenance_file}{aside}", markup=False)


@app.command()
def normalize(
    trace: Annotated[str, typer.Argument(help="Trace: a .parquet or .csv file, a directory of shards or per-layer files, or a glob.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The Parquet file to write (atomically), sorted by (layer, ts), with statistics.")
    ],
    memory_budget: Annotated[
        str, typer.Option("--memory-budget", help="Memory for sorting, e.g. 2GiB or 512MiB; a larger trace is sorted in chunks on disk.")
    ] = "2GiB",
    progress: ProgressOption = True,
) -> None:
    """Rewrite a trace as one Parquet file sorted by (layer, ts) with row-group statistics, so that
    large-trace runs read only the row groups they need."""
    from coherence_diag.scale.normalize import normalize as run_normalize
    from coherence_diag.scale.plan import parse_bytes

    with _errors_to_exit_codes():
        _check_outputs((output, Path(f"{output}.provenance.json")), (trace,))
        budget = parse_bytes(memory_budget)
        with _progress(progress) as step:
            done = run_normalize(trace, output, budget_bytes=budget, progress=step)
        how = "in memory" if done.chunks == 1 else f"in {done.chunks} chunks on disk"
        note = f"; provenance to {done.provenance_file}" if done.provenance_file else ""
        err_console.print(
            f"wrote {done.rows:,} rows in {done.row_groups} row groups to {done.output}, sorted by (layer, ts) {how}{note}", markup=False
        )


@app.command()
def report(
    traces: Annotated[list[str], typer.Argument(help="Traces (same forms as `analyze`): one HTML page each.")],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for <name>.html per trace, index.html and summary.json (created if missing).")
    ],
    jobs: JobsOption = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Compare every trace with this one: a before/after section.")] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", "-p", help="Check every trace against this gate policy; exit 1 when one fails.")
    ] = None,
    keep_going: Annotated[
        bool, typer.Option("--keep-going", help="Exit 0 even when a trace cannot be analyzed (its index row holds the error).")
    ] = False,
    window: WindowOption = DEFAULT_WINDOW_S,
    max_bad_fraction: MaxBadFractionOption = DEFAULT_MAX_BAD_FRACTION,
    rules: RulesOption = None,
    progress: ProgressOption = True,
    memory_budget: MemoryBudgetOption = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Write one self-contained offline HTML report per trace, an index (worst first) and summary.json.
    With --scheduler, each trace is a task on the Dask cluster (one trace: its work units are);
    traces analyzed at once on this machine share --memory-budget."""
    from coherence_diag.batch import BatchOptions
    from coherence_diag.gate import load_policy
    from coherence_diag.render.progress import progress_bar
    from coherence_diag.reports import build_reports
    from coherence_diag.scale.plan import parse_bytes

    with _errors_to_exit_codes():
        checked = load_policy(policy, list(rules or [])) if policy is not None else None  # a bad policy fails before any trace is read
        budget = parse_bytes(memory_budget) if memory_budget is not None else None
        options = BatchOptions(window, max_bad_fraction, tuple(str(r) for r in rules or ()), baseline, checked, budget, scheduler or None)
        with progress_bar(err_console, progress) as step:
            result = build_reports(traces, out, options=options, jobs=jobs, progress=step)
        for entry in result.entries:
            for line in entry.notes:
                _note(line)
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


@app.command()
def simulate(
    scenario: Annotated[str | None, typer.Option("--scenario", "-s", help="Scenario name (see --list).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same trace.")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the trace (.parquet, .csv, or a directory).")] = None,
    scale: Annotated[float, typer.Option("--scale", help="Multiply traffic and fleet size (large benchmark traces).", min=0.0001)] = 1.0,
    duration: Annotated[float | None, typer.Option("--duration", help="Simulated seconds of traffic (default: the scenario's).")] = None,
    arrivals: Annotated[
        str | None, typer.Option("--arrivals", help="Replay a real arrival process: a request trace of any source of `convert --list`.")
    ] = None,
    arrivals_from: Annotated[
        str | None, typer.Option("--arrivals-from", help="The source of --arrivals (default: recognised from the file).")
    ] = None,
    fmt: Annotated[TraceFormat | None, typer.Option("--format", help="Container; default from the output suffix.")] = None,
    naming: Annotated[str, typer.Option("--naming", help="Entity names: plain, or random (seeded).")] = "plain",
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
) -> None:
    """Simulate a heterogeneous serving fleet and write a trace (trace-format v1)."""
    from coherence_diag.simulate import SCENARIOS, write_trace
    from coherence_diag.simulate import simulate as run_simulation

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
        if arrivals_from is not None and arrivals is None:
            raise InputError("--arrivals-from names the source of --arrivals FILE; give --arrivals too")
        replay = None
        if arrivals is not None:
            from coherence_diag.convert import read_arrivals

            replay = read_arrivals(arrivals, arrivals_from)
        frame = run_simulation(scenario, seed, scale=scale, duration_s=duration, arrivals=None if replay is None else replay[0], naming=naming)
        write_trace(frame, output, fmt=fmt.value if fmt else None)
        note = ""
        if replay is not None:
            from coherence_diag.convert import replay_provenance, write_provenance

            sidecar = write_provenance(output, replay_provenance(frame, replay[1], replay[0], scenario=scenario, seed=seed, scale=scale))
            note = f" (arrivals replayed from {replay[1].name} {arrivals}; provenance in {sidecar})"
        err_console.print(f"wrote {frame.height:,} rows to {output}{note}", markup=False)


rules_app = typer.Typer(help="The taxonomy rules: list them, check rule files.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("list")
def rules_list(rules: RulesOption = None) -> None:
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
def rules_check(directory: Annotated[Path, typer.Argument(help="Directory of rule files to validate.")]) -> None:
    """Validate rule files (exit 2 naming file, rule and problem)."""
    from coherence_diag.rules.loader import load_rules

    with _errors_to_exit_codes():
        loaded = load_rules([directory])
        typer.echo(f"{directory}: ok ({len(loaded)} rules in all, shipped ones included)")


@rules_app.command("score")
def rules_score(
    suite: Annotated[Path, typer.Argument(help="A labelled suite: a directory holding labels.json, or the labels.json file.")],
    jobs: JobsOption = None,
    format: Annotated[ScoreFormat, typer.Option("--format", "-f", help=FORMAT_HELP)] = "terminal",
    output: OutputOption = None,
    rules: RulesOption = None,
    window: WindowOption = DEFAULT_WINDOW_S,
    min_macro_f1: Annotated[
        float | None,
        typer.Option(
            "--min-macro-f1", help="Exit 1 when macro-F1 is below this or a control reports anything at >= medium.", min=0.0, max=1.0
        ),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Score the rules on a labelled suite: per-rule precision/recall/F1, macro-F1, index directions."""
    from coherence_diag import scoring

    with _errors_to_exit_codes():
        _check_outputs((output,), (str(scoring.labels_path(suite).parent),))
        with _progress(progress) as step:
            result = scoring.score_suite(suite, window_s=window, rules_dirs=rules, jobs=jobs, progress=step)
        gate = scoring.accuracy_gate(result, min_macro_f1) if min_macro_f1 is not None else None
        emit("score", format, result, output, gate)
    if gate is not None and not gate.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command()
def explain(
    name: Annotated[str, typer.Argument(help="A rule id, an index (CI, DI, WPI, HCL), a feature name, or 'features' / 'indices'.")],
    trace: Annotated[
        str | None,
        typer.Option(
            "--trace", "-t", help="Explain the rule NAME on this trace: each clause, score term and signal with its values, and the verdict."
        ),
    ] = None,
    format: Annotated[ExplanationFormat, typer.Option("--format", "-f", help="Output format (json only with --trace).")] = "terminal",
    output: OutputOption = None,
    window: WindowOption = DEFAULT_WINDOW_S,
    max_bad_fraction: MaxBadFractionOption = DEFAULT_MAX_BAD_FRACTION,
    rules: RulesOption = None,
    progress: ProgressOption = True,
) -> None:
    """Explain a rule, an index or a feature: definition, inputs, what to check next; with --trace,
    why a rule did or did not fire on that trace."""
    from coherence_diag import docgen

    with _errors_to_exit_codes():
        _check_outputs((output,), (trace,))
        if trace is None:
            if format != "terminal":
                raise InputError(f"--format {format} explains a rule on a trace: give --trace TRACE")
            text = docgen.explain(name, list(rules or [])) + "\n"
            if output is None:
                sys.stdout.write(text)
            else:
                write_atomic(output, text)
            return
        from coherence_diag.analysis import analyze as run_analysis
        from coherence_diag.rules.loader import find_rule, load_rules

        find_rule(name, load_rules(list(rules or [])))  # an unknown rule fails before the (slow) analysis
        with _progress(progress) as step:
            result = run_analysis(trace, window_s=window, max_bad_fraction=max_bad_fraction, rules_dirs=rules, progress=step)
        emit("explanation", format, result.explain(name), output, result.report.trace.path)


@app.command(cls=PairCommand)
def gate(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy file (YAML; docs/gate.md).")],
    trace: Annotated[str | None, typer.Argument(help="Trace to judge (same forms as `analyze`).")] = None,
    from_: FromOption = None,
    set_: SetOption = None,
    map_: MapOption = None,
    start: StartOption = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Baseline trace for the policy's regression checks.")] = None,
    format: Annotated[GateFormat, typer.Option("--format", "-f", help=FORMAT_HELP)] = "terminal",
    output: OutputOption = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write a JUnit XML file: one test case per check.")] = None,
    rules: RulesOption = None,
    window: WindowOption = DEFAULT_WINDOW_S,
    max_bad_fraction: MaxBadFractionOption = DEFAULT_MAX_BAD_FRACTION,
    progress: ProgressOption = True,
    memory_budget: MemoryBudgetOption = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Check a trace against a policy: exit 0 if it passes, 1 if it fails, 2 on bad input or policy."""
    from coherence_diag.analysis import analyze as run_analysis
    from coherence_diag.gate import evaluate, load_policy

    with _errors_to_exit_codes():
        _check_outputs((output, junit), (trace, baseline, str(policy), *(p for _, p in _pairs(from_))))
        # The policy is validated before any trace is read: a bad policy fails fast.
        checked = load_policy(policy, list(rules or []))
        with _progress(progress) as step:
            source = _trace_or_inputs(trace, from_, set_, map_, start)
            scale = _scale(memory_budget, scheduler, step)
            report = run_analysis(
                source, window_s=window, max_bad_fraction=max_bad_fraction, rules_dirs=rules, progress=step, scale=scale
            ).report
            base = (
                run_analysis(baseline, window_s=window, max_bad_fraction=max_bad_fraction, rules_dirs=rules, progress=step, scale=scale).report
                if baseline is not None
                else None
            )
        result = evaluate(checked, report, base)
        if junit is not None:
            emit("gate", "junit", result, junit)
        emit("gate", format, result, output)
    if not result.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


policy_app = typer.Typer(help="Gate policies: validate policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    file: Annotated[Path, typer.Argument(help="Policy file to validate.")],
    rules: RulesOption = None,
) -> None:
    """Validate a policy file without a trace (exit 2 naming file, check and problem)."""
    from coherence_diag.gate import load_policy

    with _errors_to_exit_codes():
        checked = load_policy(file, list(rules or []))
        typer.echo(f"{file}: ok (policy {checked.name!r}, {len(checked.checks)} checks)")


def _refuse_overwriting_input(output: Path, trace: str) -> None:
    target = output.resolve()
    source = Path(trace).resolve()
    if target == source or (source.is_dir() and source in target.parents):
        raise InputError(f"{output}: refusing to write output over or inside the input {trace}; expected a path outside the input")


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
