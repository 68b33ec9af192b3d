"""`coherence-diag report`: files, names, exit codes, determinism, size, safety of the HTML text."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html import unescape

import jsonschema
import pytest

from coherence_diag.batch import BatchOptions, TraceEntry, rank, report_names
from coherence_diag.gate import load_policy
from coherence_diag.render import html, summary
from coherence_diag.reports import build_reports
from tests.conftest import REPO
from tests.report.conftest import IMG_PAYLOAD, SCRIPT_PAYLOAD, sample

POLICY = REPO / "policies" / "serving-default.yaml"
GOOD = ["burst-amplification", "healthy"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, bad_trace):
    """Two good samples and an unusable file, built once in this process."""
    out = tmp_path_factory.mktemp("site")
    result = build_reports([*map(sample, GOOD), str(bad_trace)], out, jobs=1)
    return out, result


# ---------------------------------------------------------------- files and exit codes


def test_one_page_per_good_trace_an_index_and_a_summary(site):
    out, result = site
    assert sorted(p.name for p in out.iterdir()) == ["burst-amplification.html", "healthy.html", "index.html", "summary.json"]
    assert [e.name for e in result.entries] == ["burst-amplification", "healthy", "broken"]
    assert result.exit_code(keep_going=False) == 2 and result.exit_code(keep_going=True) == 0


def test_the_failed_trace_is_an_index_row_with_its_error(site, bad_trace):
    out, result = site
    (failed,) = result.failed
    assert failed.verdict == "error" and "not a Parquet file" in failed.error
    index = (out / "index.html").read_text()
    assert "not a Parquet file" in index and str(bad_trace) in index
    assert 'href="broken.html"' not in index  # no page for it


def test_index_is_sorted_worst_first_and_links_to_the_worst_finding(site):
    out, _ = site
    index = (out / "index.html").read_text()
    order = [index.index(f">{name}<") for name in ("broken", "burst-amplification", "healthy")]
    assert order == sorted(order)
    assert 'href="burst-amplification.html#finding-burst-amplification"' in index
    page = (out / "burst-amplification.html").read_text()
    assert 'id="finding-burst-amplification"' in page


def test_summary_matches_its_schema_and_the_index_order(site):
    out, result = site
    data = json.loads((out / "summary.json").read_text())
    jsonschema.validate(data, summary.schema())
    assert [t["name"] for t in data["traces"]] == ["broken", "burst-amplification", "healthy"]
    assert [t["rank"] for t in data["traces"]] == [1, 2, 3]
    broken, burst, healthy = data["traces"]
    assert broken["page"] is None and broken["verdict"] == "error" and "not a Parquet file" in broken["error"]
    assert burst["worst_finding"]["anchor"] == "burst-amplification.html#finding-burst-amplification"
    assert burst["verdict"] == burst["worst_finding"]["severity"]
    assert healthy["verdict"] == "clean" and healthy["findings"] == []
    assert data["counts"]["traces"] == 3 and data["counts"]["error"] == 1


def test_cli_exit_2_with_a_bad_trace_and_0_with_keep_going(run_cli, tmp_path, bad_trace):
    out = tmp_path / "out"
    result = run_cli("report", sample("healthy"), str(bad_trace), "--out", out, "--jobs", "1", "--no-progress")
    assert result.exit_code == 2
    assert str(bad_trace) in result.stderr and "Traceback" not in result.stderr
    assert (out / "healthy.html").is_file() and "not a Parquet file" in (out / "index.html").read_text()
    again = run_cli("report", sample("healthy"), str(bad_trace), "--out", out, "--jobs", "1", "--no-progress", "--keep-going")
    assert again.exit_code == 0


def test_bad_usage_exits_2_before_writing_anything(run_cli, tmp_path, bad_trace):
    out = tmp_path / "never"
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("checks: 3\n")
    for args in (
        ("--policy", bad_policy),
        ("--baseline", str(bad_trace)),
        ("--baseline", str(tmp_path / "missing.parquet")),
    ):
        result = run_cli("report", sample("healthy"), "--out", out, "--jobs", "1", "--no-progress", *args)
        assert result.exit_code == 2, args
        assert "Traceback" not in result.stderr and str(args[1]) in result.stderr
        assert not out.exists(), args
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = run_cli("report", sample("healthy"), "--out", a_file, "--no-progress")
    assert result.exit_code == 2 and "must be a directory" in result.stderr


def test_policy_adds_the_gate_and_sets_the_exit_code(run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("report", sample("burst-amplification"), "--out", out, "--policy", POLICY, "--jobs", "1", "--no-progress")
    gate = run_cli("gate", sample("burst-amplification"), "--policy", POLICY, "--no-progress")
    assert gate.exit_code == 1  # the sample fails the default policy ...
    assert result.exit_code == gate.exit_code  # ... and the report exits as the gate does
    page = (out / "burst-amplification.html").read_text()
    assert 'id="gate"' in page and "serving-default" in page
    entry = json.loads((out / "summary.json").read_text())["traces"][0]
    assert entry["gate"]["passed"] is False and entry["gate"]["counts"]["fail"] >= 1


def test_baseline_adds_the_before_after_section(tmp_path):
    options = BatchOptions(baseline=sample("healthy"))
    result = build_reports([sample("burst-amplification")], tmp_path, options=options, jobs=1)
    (entry,) = result.entries
    assert entry.comparison is not None
    page = (tmp_path / "burst-amplification.html").read_text()
    assert 'id="baseline"' in page and "Distribution shift" in page and "P99 latency" in page
    data = json.loads((tmp_path / "summary.json").read_text())
    jsonschema.validate(data, summary.schema())
    assert "burst-amplification" in data["traces"][0]["comparison"]["new_findings"]


# ---------------------------------------------------------------- names


def test_report_names_are_safe_and_deduplicated_in_order():
    paths = ["a/run.parquet", "b/run.parquet", "c/RUN.csv", "index.parquet", "captures/day1/", "we<i>rd name.csv", ".parquet", "a/run-2.parquet"]
    assert report_names(paths) == ["run", "run-2", "RUN-3", "index-2", "day1", "we-i-rd-name", "trace", "run-2-2"]


# ---------------------------------------------------------------- determinism and size


def test_byte_identical_rebuild_in_workers(tmp_path, site):
    """The same inputs give the same bytes, whether built in this process or in spawned workers."""
    out, _ = site
    again = tmp_path / "again"
    result = build_reports([*map(sample, GOOD), str(site[1].entries[2].path)], again, jobs=2)
    assert result.exit_code(keep_going=True) == 0
    for name in ("burst-amplification.html", "healthy.html", "index.html", "summary.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_byte_identical_rebuild_with_each_trace_a_task_on_a_local_cluster(tmp_path, site):
    """With --scheduler and several traces, each trace is a task on the cluster (a worker analyzes
    it whole): the same bytes as in this process, the unusable trace an index row with its error."""
    pytest.importorskip("distributed")
    out, built = site
    again = tmp_path / "cluster"
    traces = [*map(sample, GOOD), str(built.entries[2].path)]
    result = build_reports(traces, again, options=BatchOptions(scheduler="local"), jobs=1)
    assert [e.error is not None for e in result.entries] == [False, False, True]
    assert result.entries[2].error == built.entries[2].error
    for name in ("burst-amplification.html", "healthy.html", "index.html", "summary.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in out.iterdir())


def test_workers_of_a_batch_share_the_memory_budget():
    options = BatchOptions(memory_budget_bytes=6 << 30, scheduler="local")
    on_workers = options.for_workers(3)
    assert on_workers.scheduler is None and on_workers.scale.budget_share == 3
    assert on_workers.scale.memory_budget_bytes == 6 << 30  # the whole budget, of which each run plans a third
    assert options.for_workers(1).scale.budget_share == 1 and on_workers.for_workers(2).budget_share == 6


def test_pages_are_small(site):
    """Pages hold their charts and the numbers behind them: bounded by the visuals' fixed bins
    and top-N, not by the trace (the bar is 2 MB for a 10M-row trace: `make bench-report`)."""
    out, _ = site
    for page in out.glob("*.html"):
        if page.name == "index.html":
            assert page.stat().st_size < 40_000
        else:
            assert 150_000 < page.stat().st_size < 800_000, page.name
    assert (out / "summary.json").stat().st_size < 10_000


def test_no_temporary_file_is_left_and_a_failed_render_writes_no_index(tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(html, "render_index", broken)
    with pytest.raises(RuntimeError):
        build_reports([sample("healthy")], tmp_path, jobs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["healthy.html"]  # complete page, no index, no temp file


# ---------------------------------------------------------------- offline and safe


def _inline(tag: str, text: str) -> list[str]:
    return re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.S)


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("page", ["index.html", "burst-amplification.html", "healthy.html"])
def test_csp_allows_exactly_the_inline_style_and_script(site, page):
    text = (site[0] / page).read_text()
    (attribute,) = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    csp = unescape(attribute)
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["style-src"].split() == sorted({_hash(s) for s in _inline("style", text)})
    scripts = _inline("script", text)
    assert directives["script-src"].split() == (sorted({_hash(s) for s in scripts}) if scripts else ["'none'"])
    assert len(scripts) == (1 if page == "index.html" else 0)
    # Nothing that could load: no src attribute, no link element, no url() but references to an
    # id of the same chart, no absolute URL but the SVG namespace names (identifiers, never fetched).
    text = text.replace(' xmlns="http://www.w3.org/2000/svg"', "").replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    text = re.sub(r"url\(#[A-Za-z0-9_.:-]+\)", "", text)
    assert not re.search(r"\ssrc=|<link\b|url\(|https?://|//[a-z]", text, flags=re.I)


def test_hostile_names_are_escaped(tmp_path, hostile_trace):
    build_reports([str(hostile_trace)], tmp_path, jobs=1)
    text = (tmp_path / "hostile.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the pool and env names, as text
    assert SCRIPT_PAYLOAD not in text and IMG_PAYLOAD not in text
    assert "<script" not in text and "<img" not in text


def test_a_chart_section_drops_in_linked_from_its_finding(site):
    """The page lays out chart sections it is given (the charts come from render/charts.py)."""
    _, result = site
    entry: TraceEntry = result.entries[0]
    svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" role="img"><style>.m{fill:#888}</style><rect class="m" width="4" height="9"/></svg>'
    charts = [
        html.ChartSection(
            id="timeline", title="Disruption timeline", caption="Bursts then queue saturation.", svg=svg,
            columns=("bin_start_s", "p99_ms"), rows=(("48", "812.5"),), rules=("burst-amplification",),
            styles=(".m{fill:#888}",), time_origin="2026-01-01 00:00:00 UTC",
        ),
        html.ChartSection(id="energy", title="Energy vs latency", caption="", omitted_reason="the trace has no power_w column"),
    ]
    text = html.render_report(entry, charts)
    assert '<section class="chart" id="chart-timeline"' in text and svg in text
    assert '<a href="#chart-timeline">Disruption timeline</a>' in text  # the finding links to its chart
    assert '<a href="#finding-burst-amplification">burst-amplification</a>' in text  # and the chart to its finding
    assert "<td>48</td><td>812.5</td>" in text and "Time 0 s is 2026-01-01 00:00:00 UTC" in text
    assert "Not shown: the trace has no power_w column" in text
    assert _hash(".m{fill:#888}") in text
    with pytest.raises(ValueError):
        html.ChartSection(id="Bad Id", title="t", caption="c", svg=svg)
    with pytest.raises(ValueError):
        html.ChartSection(id="both", title="t", caption="c", svg=svg, omitted_reason="x")
    with pytest.raises(ValueError):
        html.render_report(entry, [charts[1], charts[1]])


def test_rank_puts_errors_then_the_most_severe_first(site):
    _, result = site
    assert [e.name for e in rank(reversed(result.entries))] == ["broken", "burst-amplification", "healthy"]


def test_policy_object_survives_the_trip_to_a_worker():
    import pickle

    policy = load_policy(POLICY)
    assert pickle.loads(pickle.dumps(BatchOptions(policy=policy))).policy == policy


# ---------------------------------------------------------------- charts in the page


def _chart_sections(text: str) -> dict[str, str]:
    """Chart id -> the HTML of its section, in page order."""
    return {m.group(1): m.group(0) for m in re.finditer(r'<section class="chart" id="chart-([a-z0-9-]+)".*?\n  </section>', text, flags=re.S)}


def test_every_visual_is_a_chart_with_its_numbers_or_a_stated_omission(site):
    from coherence_diag.visuals import SUPPORTS

    text = (site[0] / "burst-amplification.html").read_text()
    sections = _chart_sections(text)
    assert list(sections) == list(SUPPORTS)  # every visual, in the report's order
    for vid, section in sections.items():
        if vid == "before-after":  # no --baseline in this site
            assert "Not shown: no baseline given" in section and "<svg" not in section
            continue
        assert section.count("<svg") == 1 and "<figcaption>" in section, vid
        rows = re.search(r"The numbers behind this chart \((\d+) rows?\)", section)
        assert rows and section.count("<tr><td>") >= int(rows.group(1)), vid
        svg = section[section.index("<svg") : section.index("</svg>")]
        assert all(i.startswith(f"svg-{vid}-") for i in re.findall(r'\sid="([^"]+)"', svg)), vid
    # SVG ids are namespaced per chart: no id repeats in the page.
    ids = re.findall(r'\sid="([^"]+)"', text)
    assert len(ids) == len(set(ids))


def test_findings_link_to_their_charts_and_charts_back(site):
    text = (site[0] / "burst-amplification.html").read_text()
    finding = re.search(r'<section class="finding" id="finding-burst-amplification".*?</section>', text, flags=re.S).group(0)
    linked = re.findall(r'<a href="#chart-([a-z-]+)">', finding)
    assert set(linked) == {"disruption-timeline", "wave-propagation"}
    sections = _chart_sections(text)
    for vid in linked:
        assert '<a href="#finding-burst-amplification">burst-amplification</a> (found here)' in sections[vid]
    # The timeline marks the bursts the finding is about, with a link to it.
    assert re.search(r"<td>burst</td><td>[\d.]+</td><td>[\d.]+</td><td>burst: [\d.]+x the median arrivals</td>"
                     r'<td><a href="#finding-burst-amplification">', sections["disruption-timeline"])


def test_baseline_adds_the_before_after_chart(tmp_path):
    options = BatchOptions(baseline=sample("healthy"))
    build_reports([sample("burst-amplification")], tmp_path, options=options, jobs=1)
    sections = _chart_sections((tmp_path / "burst-amplification.html").read_text())
    assert "<svg" in sections["before-after"] and "<td>P99 latency</td>" in sections["before-after"]
    assert "<td>baseline</td>" in sections["latency-ecdf"] and "<td>this trace</td>" in sections["latency-ecdf"]


def test_pages_render_through_the_registry(site):
    from coherence_diag.batch import Batch
    from coherence_diag.render import registry

    out, result = site
    batch = Batch(result.entries, BatchOptions())
    assert registry.render_text("batch", "html", batch) == (out / "index.html").read_text()
    assert registry.render_text("batch", "json", batch) == (out / "summary.json").read_text()
    page = registry.render_text("page", "html", html.TracePage(result.entries[1]))
    assert "<h1>healthy</h1>" in page and 'id="charts"' not in page  # no chart sections given: no charts section


def test_analyze_and_the_report_process_never_load_the_chart_libraries(tmp_path):
    """`analyze` pays nothing for charts; `report` (one trace, default jobs) draws them in its
    chart process: the command's own process never imports Altair or vl-convert."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from coherence_diag import analyze\n"
        "analyze(sys.argv[1])\n"
        "before = sorted(m for m in ('altair', 'vl_convert') if m in sys.modules)\n"
        "from coherence_diag.reports import build_reports\n"
        "result = build_reports([sys.argv[1]], sys.argv[2], jobs=2)\n"
        "after = sorted(m for m in ('altair', 'vl_convert') if m in sys.modules)\n"
        "print(before, after, len(result.written))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, sample("healthy"), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "[]", "3"]
    assert "<svg" in (tmp_path / "healthy.html").read_text()  # the charts were drawn, elsewhere


def test_a_converted_trace_page_says_where_each_column_came_from_as_text(site):
    """The provenance of a converted trace (sources, each column's status, absent layers, metric
    summaries) is on its page as the terminal view has it, every string escaped."""
    import dataclasses

    from coherence_diag.model import ColumnOrigin, MetricSummary, Provenance, SourceUse

    _, result = site
    entry: TraceEntry = result.entries[0]
    summaries = tuple(
        MetricSummary(metric=f"vllm:e2e_request_latency_seconds{i}", series=f"model={SCRIPT_PAYLOAD}", kind="histogram", unit="s",
                      window_start="2026-01-01T00:00:00Z", window_end="2026-01-01T00:01:00Z", cumulative=False, count=12.0,
                      mean=0.5, quantiles={"p50": 0.4}, quantile_buckets={"p50": "(0.25, 0.5]"})
        for i in range(html.MAX_SUMMARY_ROWS + 3)
    )
    provenance = Provenance(
        sources=(SourceUse(name="prometheus", path=f"dir/{IMG_PAYLOAD}.prom", records=1200, rows=900, clock="absolute",
                           offset_s=0.0, notes=(f"note {SCRIPT_PAYLOAD}",), unmapped={"no_series:metric": 7}, summaries=summaries),),
        columns=(
            ColumnOrigin("scheduler", "ts", "observed", "prometheus", fields=("timestamp",)),
            ColumnOrigin("queue", "depth", "derived", "prometheus", formula=f"sum of {SCRIPT_PAYLOAD}"),
            ColumnOrigin("gpu", "gpu_util", "absent", note="no DCGM source"),
        ),
    )
    converted = dataclasses.replace(entry, report=dataclasses.replace(entry.report, provenance=provenance))
    text = html.render_report(converted)
    plain = html.render_report(entry)
    assert 'id="provenance"' in text and 'id="provenance"' not in plain
    assert "Absent layers: gpu" in text and "absent, not idle or empty" in text
    assert "<code>scheduler.ts</code></th><td>observed</td><td>prometheus</td><td>timestamp</td>" in text
    assert text.index("scheduler.ts") < text.index("queue.depth") < text.index("gpu.gpu_util")  # status order
    assert "not converted: no_series:metric 7" in text
    assert "p50 ~0.4 s in (0.25, 0.5]" in text and "… and 3 more in the JSON report." in text
    assert SCRIPT_PAYLOAD not in text and IMG_PAYLOAD not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
