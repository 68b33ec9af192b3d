"""Charts of the report's visuals: Altair (Vega-Lite) specs rendered offline to checked SVG.

    from coherence_diag.render.charts import render_svg
    svg = render_svg(visual)        # str: safe to embed inline in an HTML page

`chart_spec` builds the Vega-Lite spec of a defined `Visual` from its table alone (no
computation beyond what Vega-Lite does with a few rows: folds, filters). `render_svg` renders it
with vl-convert in-process (no browser, no network: external data is disallowed, fonts are the
machine's), rewrites the element ids vl-convert numbers per process into ids namespaced by the
chart (so two charts of one page never collide, and the same input gives byte-identical SVG),
and passes the result through the allowlist check of svg_safety.py. Text from the trace (device,
pool and series names) is written by the SVG serializer, which escapes it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from functools import cache
from typing import Any, Final

import altair as alt
import vl_convert

from coherence_diag.model.visuals import Visual, VisualTable
from coherence_diag.render.svg_safety import check_svg

VEGA_LITE_VERSION = "6.4"  # the Vega-Lite bundled in vl-convert that renders the specs
# Pinned font stack. vl-convert ships Liberation Sans inside its library and measures text with
# it, whatever fonts the machine has: the same layout (and bytes) everywhere, and ~10x faster
# label measurement than with a font file of the system (DejaVu Sans). Browsers without
# Liberation Sans use Arial or Helvetica, of the same metrics (Liberation Sans is metric-compatible).
FONT_STACK = "Liberation Sans, Arimo, Arial, Helvetica, sans-serif"
WIDTH_PX = 640
PANEL_HEIGHT_PX = 90
LOCALE: Final = "en-US"  # Final: the literal vl-convert's signature names

# Fixed colours, so a chart's look does not depend on the order categories appear in.
EPISODE_COLORS = {"burst": "#d62728", "backlog": "#ff9896", "retry_storm": "#9467bd", "stall": "#8c564b", "wave": "#17becf"}
CHANGE_COLORS = {"better": "#2ca02c", "worse": "#d62728", "unchanged": "#9e9e9e", "changed": "#1f77b4",
                 "within noise": "#c7c7c7", "n/a": "#e0e0e0"}
KIND_COLORS = {"layer": "#1f77b4", "link": "#ff7f0e"}

# Views of the visual's own table refer to it by name (chart_spec inlines it once); views with data
# of their own (episodes, reference lines) carry it.
TABLE_NAME = "table"
_TABLE = alt.NamedData(name=TABLE_NAME)
EPISODES_NAME = "episodes"  # the episodes marked on a time chart, also inlined once by chart_spec
_EPISODES = alt.NamedData(name=EPISODES_NAME)

_GEOMETRY = re.compile(r'(\s(?:d|transform)=")([^"]*)"')
_LONG_DECIMAL = re.compile(r"(\d\.\d\d)\d+")
_ID = re.compile(r'\bid="([^"]*)"')
_REF = re.compile(r'url\(#([^)\s]+)\)|href="#([^"]*)"')


def chart_spec(visual: Visual, *, validate: bool = False) -> dict[str, Any]:
    """The Vega-Lite spec (a dict) of a defined visual (`validate`: check it against the
    Vega-Lite schema, slow: tests do it once per kind)."""
    if visual.table is None:
        raise ValueError(f"visual {visual.id!r} is omitted ({visual.omitted_reason}); it has no chart")
    build = _BUILDERS[visual.kind]
    # No title inside the chart: the page's heading names it (and every label is one more text
    # for vl-convert to measure); the description becomes the SVG's accessible name.
    chart = build(visual, visual.table, _TABLE).properties(description=visual.title)
    if validate:
        spec = _configure(chart).to_dict(validate=True)
    else:
        # The shared configuration, built once: each `configure_*` call deep-copies the whole
        # chart, which took most of a chart's spec-building time (tests check both give the same).
        spec = chart.to_dict(validate=False)
        spec["config"] = copy.deepcopy(_config())
    spec.pop("$schema", None)  # vl-convert renders with its bundled Vega-Lite (VEGA_LITE_VERSION)
    # The table is inlined once, as the named dataset every view of it refers to, after Altair's
    # (per-value, slow) serialization.
    datasets = spec.setdefault("datasets", {})
    datasets[TABLE_NAME] = visual.table.records()
    if visual.episodes:
        datasets[EPISODES_NAME] = [{"kind": e.kind, "start_s": e.start_s, "end_s": e.end_s} for e in visual.episodes]
    return spec


def _configure(chart: Any) -> Any:
    """The charts' look: pinned fonts, white background, margins, axes and legends."""
    return (
        # Padding beyond the measured layout: a browser without Liberation Sans, Arial or
        # Helvetica draws the text in a wider fallback font; the margin keeps it inside the chart.
        chart.configure(font=FONT_STACK, background="white", padding={"left": 30, "top": 10, "right": 20, "bottom": 10})
        .configure_mark(aria=False)  # per-mark labels would repeat the table in every mark; the page has the table
        .configure_view(stroke="#dddddd")
        .configure_axis(labelFontSize=10, titleFontSize=11)
        .configure_legend(labelFontSize=10, titleFontSize=11, labelLimit=220)
    )


@cache
def _config() -> dict[str, Any]:
    """`_configure`'s `config` object, built once per process."""
    config: dict[str, Any] = _configure(alt.Chart(_TABLE).mark_point()).to_dict(validate=False)["config"]
    return config


def render_svg(visual: Visual, namespace: str | None = None) -> str:
    """The chart of `visual` as checked SVG; element ids prefixed `<namespace or id>-`."""
    prefix = f"{namespace or visual.id}-"
    svg = vl_convert.vegalite_to_svg(
        chart_spec(visual),
        vl_version=VEGA_LITE_VERSION,
        allowed_base_urls=[],  # no external data of any kind
        format_locale=LOCALE,
        time_format_locale=LOCALE,
    )
    return check_svg(namespace_ids(compact_svg(compact_geometry(svg)), prefix), id_prefix=prefix)


def warm_up() -> None:
    """Draw a small chart with axis labels and a legend: starts vl-convert's JavaScript runtime,
    compiles Vega-Lite once and loads the font, so that the first chart of a report does not
    pay for it (the chart process of `coherence-diag report` runs this while traces are analyzed)."""
    table = VisualTable(("component", "kind", "health_frac"), (("scheduler", "layer", 0.9), ("scheduler_compute", "link", 0.5)))
    render_svg(Visual("synchronization-map", "warm-up", "", "sync_map", table, None, ()))


def render_all(visuals: tuple[Visual, ...], namespace: str = "") -> dict[str, str]:
    """SVG of every defined visual, by visual id (omitted ones have no chart)."""
    return {v.id: render_svg(v, f"{namespace}{v.id}") for v in visuals if v.table is not None}


def compact_geometry(svg: str) -> str:
    """Coordinates in path data and transforms cut to 2 decimals (1/100 px): Vega writes full
    float precision, which roughly doubles the size of a heatmap's SVG for no visible change."""
    return _GEOMETRY.sub(lambda m: m.group(1) + _LONG_DECIMAL.sub(r"\1", m.group(2)) + '"', svg)


_TAG = re.compile(r'<(/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"]*")*)\s*(/?)>')
_RGB = re.compile(r'"rgb\((\d{1,3}), ?(\d{1,3}), ?(\d{1,3})\)"')
_REDUNDANT = (' pointer-events="none"', ' opacity="1"')  # no pointer interaction in a static page; opacity 1 is the default
_CLASS = re.compile(r' class="[^"]*"')


def compact_svg(svg: str) -> str:
    """Drop what a static, inline chart does not need, without changing what is drawn: Vega's
    class names (no stylesheet reads them), default or pointer-only attributes, `aria-hidden`
    on elements inside an already hidden group, and the font family repeated on every text
    (set once on the root, where the texts inherit it); colours as #rrggbb. The result is
    checked by svg_safety afterwards like any SVG."""
    font = f' font-family="{FONT_STACK}"'
    hidden: list[bool] = []

    def tag(m: re.Match[str]) -> str:
        closing, name, attrs, empty = m.groups()
        if closing:
            if hidden:
                hidden.pop()
            return m.group(0)
        inside_hidden = bool(hidden) and hidden[-1]
        is_hidden = inside_hidden or ' aria-hidden="true"' in attrs
        if inside_hidden:
            attrs = attrs.replace(' aria-hidden="true"', "")
        for redundant in _REDUNDANT:
            attrs = attrs.replace(redundant, "")
        attrs = _CLASS.sub("", attrs)
        if name == "svg":
            attrs += font
        elif name == "text":
            attrs = attrs.replace(font, "")
        attrs = _RGB.sub(lambda c: '"#{:02x}{:02x}{:02x}"'.format(*(int(x) for x in c.groups())), attrs)
        if not empty:
            hidden.append(is_hidden)
        return f"<{name}{attrs}{'/' if empty else ''}>"

    return _TAG.sub(tag, svg)


def namespace_ids(svg: str, prefix: str) -> str:
    """Rename every id (vl-convert numbers gradients and clip paths per process) to prefix + its
    position among the SVG's ids, and every reference to it: deterministic and collision-free."""
    names: dict[str, str] = {}
    for old in _ID.findall(svg):
        names.setdefault(old, f"{prefix}{len(names)}")
    svg = _ID.sub(lambda m: f'id="{names.get(m.group(1), m.group(1))}"', svg)

    def ref(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return f"url(#{names.get(m.group(1), m.group(1))})"
        return f'href="#{names.get(m.group(2), m.group(2))}"'

    return _REF.sub(ref, svg)


# --- one builder per visual kind -----------------------------------------------------------------


def _labels(table: VisualTable, column: str) -> list[str]:
    """The distinct labels of a text column, in table order (the order a chart's axis keeps)."""
    return list(dict.fromkeys(str(v) for v in table.column(column)))


def _fields(names: list[str]) -> list[str | alt.FieldName]:
    return [*names]


def _time_x(table: VisualTable, *, labelled: bool = True) -> alt.X:
    """The shared time axis: exactly the span of the bins (no padding before 0); `labelled`
    False for the upper panels of a stack, which share the bottom panel's labels."""
    end = max(table.numbers("bin_end_s"))
    axis = alt.Axis(tickCount=8) if labelled else alt.Axis(tickCount=8, labels=False, title=None)
    return alt.X("bin_start_s:Q", title="seconds since the trace start", scale=alt.Scale(domain=[0, end], nice=False), axis=axis)


def _heatmap(visual: Visual, table: VisualTable, data: Any) -> alt.HConcatChart:
    order = _labels(table, "device")

    def panel(column: str, title: str, device_labels: bool) -> alt.Chart:
        y_axis = alt.Axis() if device_labels else alt.Axis(labels=False, ticks=False)  # the right panel reads the left one's names
        return (
            alt.Chart(data, title=title, width=WIDTH_PX // 2 - 40)
            .mark_rect()
            .transform_filter(f"isValid(datum.{column})")
            .encode(
                x=_time_x(table),
                x2="bin_end_s:Q",
                y=alt.Y("device:N", sort=order, title=None, axis=y_axis),
                color=alt.Color(f"{column}:Q", title="utilization", scale=alt.Scale(domain=[0, 1], scheme="blues")),
            )
        )

    return alt.hconcat(panel("nominal_frac", "nominal", True), panel("effective_frac", "effective", False), spacing=12).resolve_scale(
        color="shared"
    )


def _episode_layer(visual: Visual, *, legend: bool = True) -> alt.Chart | None:
    if not visual.episodes:
        return None
    kinds = [k for k in EPISODE_COLORS if any(e.kind == k for e in visual.episodes)]
    return (
        alt.Chart(_EPISODES)  # the records are inlined by chart_spec (Altair deep-copies inline values per layer)
        .mark_rect(opacity=0.18, clip=True)
        .encode(
            x="start_s:Q",
            x2="end_s:Q",
            color=alt.Color(
                "kind:N",
                title="episode",
                scale=alt.Scale(domain=kinds, range=[EPISODE_COLORS[k] for k in kinds]),
                legend=alt.Legend() if legend else None,
            ),
        )
    )


PERCENTILE_NAMES = ["p50", "p95", "p99"]


def _percentile_panel(table: VisualTable, data: Any, signal: str, title: str) -> alt.Chart:
    fields = [f"{signal}_{p}_ms" for p in PERCENTILE_NAMES]
    return (
        alt.Chart(data, height=PANEL_HEIGHT_PX, width=WIDTH_PX)
        .transform_fold(_fields(fields), as_=["column", "value_ms"])
        .transform_filter("isValid(datum.value_ms)")
        # One legend for the three panels: the percentile's name, whatever the signal.
        .transform_calculate(percentile=f"replace(datum.column, '{signal}_', '')")
        .transform_calculate(percentile="replace(datum.percentile, '_ms', '')")
        .mark_line(strokeWidth=1.5)
        .encode(
            x=_time_x(table, labelled=False),
            y=alt.Y("value_ms:Q", title=f"{title} (ms)", axis=alt.Axis(tickCount=4)),
            strokeDash=alt.StrokeDash("percentile:N", title="percentile", sort=PERCENTILE_NAMES, scale=alt.Scale(domain=PERCENTILE_NAMES)),
        )
    )


def _timeline(visual: Visual, table: VisualTable, data: Any) -> alt.VConcatChart:
    episodes = _episode_layer(visual)
    latency = _percentile_panel(table, data, "latency", "latency")
    panels: list[alt.Chart | alt.LayerChart] = [alt.LayerChart(layer=[episodes, latency]) if episodes is not None else latency]
    panels.append(_percentile_panel(table, data, "ttft", "TTFT"))
    panels.append(_percentile_panel(table, data, "queue_wait", "queue wait"))
    has_depth = any(v is not None for v in table.column("queue_depth_count"))
    misses = [c for c in ("slo_miss_count", "failed_count") if any(v for v in table.column(c))]
    load = alt.Chart(data, height=PANEL_HEIGHT_PX, width=WIDTH_PX).mark_line(color="#1f77b4").encode(
        x=_time_x(table, labelled=not (has_depth or misses)), y=alt.Y("arrivals_per_s:Q", title="arrivals / s", axis=alt.Axis(tickCount=4))
    )
    panels.append(load)
    if has_depth:
        depth = alt.Chart(data, height=PANEL_HEIGHT_PX, width=WIDTH_PX).mark_area(color="#ff7f0e", opacity=0.6).encode(
            x=_time_x(table, labelled=not misses), y=alt.Y("queue_depth_count:Q", title="queue depth", axis=alt.Axis(tickCount=4))
        ).transform_filter("isValid(datum.queue_depth_count)")
        again = _episode_layer(visual, legend=False)  # the latency panel's legend names them
        panels.append(alt.LayerChart(layer=[again, depth]) if again is not None else depth)
    if misses:
        panels.append(
            alt.Chart(data, height=PANEL_HEIGHT_PX, width=WIDTH_PX)
            .transform_fold(_fields(misses), as_=["what", "requests"])
            .mark_bar()
            .encode(
                x=_time_x(table),
                y=alt.Y("requests:Q", title="requests", stack=True, axis=alt.Axis(tickCount=4)),
                color=alt.Color("what:N", title="per bin", scale=alt.Scale(domain=misses, range=["#d62728", "#7f7f7f"][: len(misses)])),
            )
        )
    return alt.vconcat(*panels, spacing=6).resolve_scale(x="shared", color="independent", strokeDash="shared")


def _wave(visual: Visual, table: VisualTable, data: Any) -> alt.Chart:
    order = _labels(table, "series")
    return (
        alt.Chart(data, width=WIDTH_PX)
        .mark_rect()
        .encode(
            x=_time_x(table),
            x2="bin_end_s:Q",
            y=alt.Y("series:N", sort=order, title=None),
            color=alt.Color("excursion_z:Q", title="robust z", scale=alt.Scale(domain=[0, 12], clamp=True, scheme="orangered")),
        )
    )


def _sync_map(visual: Visual, table: VisualTable, data: Any) -> alt.LayerChart:
    order = _labels(table, "component")
    bars = alt.Chart(data, width=WIDTH_PX - 200).mark_bar().encode(
        x=alt.X("health_frac:Q", title="health / alignment (1 = coherent)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("component:N", sort=order, title=None),
        color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=list(KIND_COLORS), range=list(KIND_COLORS.values()))),
    )
    bound = alt.Chart(alt.Data(values=[{"bound_frac": 0.65}])).mark_rule(strokeDash=[4, 3], color="#d62728").encode(x="bound_frac:Q")
    return alt.LayerChart(layer=[bars, bound])


def _capacity(visual: Visual, table: VisualTable, data: Any) -> alt.Chart | alt.HConcatChart:
    order = _labels(table, "pool")
    fields = ["nominal_frac", "effective_frac"]
    utilization = (
        alt.Chart(data, width=WIDTH_PX // 2 - 60, title="utilization")
        .transform_fold(_fields(fields), as_=["measure", "value_frac"])
        .mark_bar()
        .encode(
            x=alt.X("value_frac:Q", title="share of device time", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("pool:N", sort=order, title=None),
            yOffset=alt.YOffset("measure:N", sort=fields),
            color=alt.Color("measure:N", title=None, sort=fields, scale=alt.Scale(domain=fields, range=["#9ecae1", "#08519c"]),
                            legend=alt.Legend(labelExpr="replace(datum.label, '_frac', '')")),
        )
    )
    if not any(v is not None for v in table.column("idle_while_queued_s")):
        return utilization
    idle = (
        alt.Chart(data, width=WIDTH_PX // 2 - 60, title="idle while queued")
        .transform_filter("isValid(datum.idle_while_queued_s)")
        .mark_bar(color="#d62728")
        .encode(x=alt.X("idle_while_queued_s:Q", title="device-seconds"), y=alt.Y("pool:N", sort=order, title=None))
    )
    return alt.hconcat(utilization, idle)


def _stragglers(visual: Visual, table: VisualTable, data: Any) -> alt.LayerChart:
    bars = (
        alt.Chart(data, width=WIDTH_PX - 260)
        .transform_calculate(label="datum.device + ' (' + datum.phase + ')'")
        .mark_bar()
        .encode(
            x=alt.X("vs_fleet_median_ratio:Q", title="service time / fleet median of the phase"),
            y=alt.Y("label:N", sort=None, title=None),
            color=alt.Color("accelerator:N", title="accelerator", sort="ascending"),
        )
    )
    one = alt.Chart(alt.Data(values=[{"typical_ratio": 1.0}])).mark_rule(strokeDash=[4, 3], color="#333333").encode(x="typical_ratio:Q")
    return alt.LayerChart(layer=[bars, one])


def _energy(visual: Visual, table: VisualTable, data: Any) -> alt.LayerChart:
    power = alt.Chart(data, width=WIDTH_PX, height=200).transform_filter("isValid(datum.power_mean_w)").mark_line(color="#2ca02c").encode(
        x=_time_x(table), y=alt.Y("power_mean_w:Q", title="mean board power (W)", axis=alt.Axis(titleColor="#2ca02c"))
    )
    latency = alt.Chart(data).transform_filter("isValid(datum.latency_p95_ms)").mark_line(color="#d62728").encode(
        x=_time_x(table), y=alt.Y("latency_p95_ms:Q", title="latency p95 (ms)", axis=alt.Axis(titleColor="#d62728"))
    )
    return alt.LayerChart(layer=[power, latency]).resolve_scale(y="independent")


def _ecdf(visual: Visual, table: VisualTable, data: Any) -> alt.Chart:
    order = _labels(table, "group")
    return (
        alt.Chart(data, width=WIDTH_PX, height=260)
        .transform_filter("datum.latency_ms > 0")
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("latency_ms:Q", title="end-to-end latency (ms, log scale)", scale=alt.Scale(type="log")),
            y=alt.Y("quantile_frac:Q", title="share of requests at or below", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("group:N", title=None, sort=order),
            detail="group:N",
        )
    )


def _before_after(visual: Visual, table: VisualTable, data: Any) -> alt.Chart:
    order = _labels(table, "measure")
    return (
        alt.Chart(data, width=WIDTH_PX - 260)
        .transform_filter("isValid(datum.relative_change_frac)")
        .mark_bar()
        .encode(
            x=alt.X("relative_change_frac:Q", title="relative change (candidate vs base)", axis=alt.Axis(format="+%")),
            y=alt.Y("measure:N", sort=order, title=None),
            color=alt.Color("change:N", title=None, scale=alt.Scale(domain=list(CHANGE_COLORS), range=list(CHANGE_COLORS.values()))),
        )
    )


_Chart = alt.Chart | alt.LayerChart | alt.HConcatChart | alt.VConcatChart
_BUILDERS: dict[str, Callable[[Visual, VisualTable, Any], _Chart]] = {
    "heatmap": _heatmap,
    "timeline": _timeline,
    "wave": _wave,
    "sync_map": _sync_map,
    "capacity": _capacity,
    "stragglers": _stragglers,
    "energy": _energy,
    "ecdf": _ecdf,
    "before_after": _before_after,
}
