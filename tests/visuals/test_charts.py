"""Charts: every defined visual renders to non-blank SVG that passes the allowlist, byte-identical
on re-render, with ids namespaced per chart; trace-derived names end up escaped; hostile SVG is
rejected; vl-convert renders without network access."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coherence_diag.render.charts import FONT_STACK, chart_spec, namespace_ids, render_all, render_svg
from coherence_diag.render.svg_safety import UnsafeSvgError, check_svg
from coherence_diag.visuals import build_visuals
from tests.visuals.conftest import IMG, SCRIPT

SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">'
MARKS = re.compile(r"<(path|rect|line|circle)\b")


@pytest.fixture(scope="module")
def burst_visuals(sample_analyses):
    return build_visuals(sample_analyses["burst-amplification"])


@pytest.fixture(scope="module")
def rendered(burst_visuals):
    return render_all(burst_visuals, namespace="r1-")


def test_every_defined_visual_renders_non_blank(burst_visuals, rendered):
    defined = [v.id for v in burst_visuals if v.table is not None]
    assert sorted(rendered) == sorted(defined)
    for vid, svg in rendered.items():
        assert svg.startswith("<svg"), vid
        # Non-blank: more marks than the frame, axes and legend alone draw.
        assert len(MARKS.findall(svg)) > 20, vid
        assert FONT_STACK in svg, vid
        check_svg(svg, id_prefix=f"r1-{vid}-")  # what render_all returned already passed it; idempotent


def test_ids_namespaced_and_disjoint_between_charts(rendered):
    seen: set[str] = set()
    for vid, svg in rendered.items():
        ids = re.findall(r'\bid="([^"]*)"', svg)
        assert all(i.startswith(f"r1-{vid}-") for i in ids), (vid, ids)
        assert not seen & set(ids)
        seen |= set(ids)
    assert seen, "vl-convert emitted no ids to namespace (clip paths, gradients): the check above proves nothing"


def test_byte_identical_rerender(burst_visuals, rendered):
    # vl-convert numbers gradients and clip paths per process (gradient_0, gradient_1, ...):
    # namespacing makes the second render of the same visual identical to the first.
    for visual in burst_visuals[:3]:
        again = render_svg(visual, namespace=f"r1-{visual.id}")
        assert again == rendered[visual.id], visual.id


def test_trace_derived_names_are_escaped(hostile):
    visuals = {v.id: v for v in build_visuals(hostile)}
    shown = 0
    for vid in ("utilization-heatmap", "hidden-capacity", "stragglers", "latency-ecdf", "wave-propagation"):
        visual = visuals[vid]
        if visual.table is None:
            continue
        svg = render_svg(visual)
        assert "<script" not in svg and "<img" not in svg, vid
        shown += escape(SCRIPT) in svg or escape(IMG) in svg
        root = ET.fromstring(svg)
        texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
        # The payloads survive as inert text (a label may be cut short with an ellipsis).
        shown += any(t and (t.startswith(SCRIPT[:8]) or t.startswith(IMG[:4])) for t in texts)
    assert shown >= 4


@pytest.mark.parametrize(
    "body, problem",
    [
        ("<script>alert(1)</script>", "element <script>"),
        ('<foreignObject width="5" height="5"><div>x</div></foreignObject>', "foreignObject"),
        ('<rect width="5" height="5" onload="alert(1)"/>', "event handler"),
        ('<g onclick="alert(1)"/>', "event handler"),
        ('<image href="http://example.invalid/x.png" width="5" height="5"/>', "element <image>"),
        ('<a href="http://example.invalid/"><text>x</text></a>', "element <a>"),
        ('<use href="http://example.invalid/sprite.svg#x"/>', "element <use>"),
        ('<rect fill="url(http://example.invalid/x#p)" width="5" height="5"/>', "refers outside"),
        ('<rect fill="url(#nowhere)" width="5" height="5"/>', "not defined"),
        ('<rect style="fill:red" width="5" height="5"/>', "attribute 'style'"),
        ('<style>rect{fill:url(http://example.invalid/)}</style>', "element <style>"),
        ('<rect clip-path="javascript:alert(1)" width="5"/>', "script"),
        ('<linearGradient id="g" xlink:href="javascript:alert(1)"/>', "script"),
        ('<!-- comment --><rect width="5"/>', "comment"),
        ('<text>a</text><svg:foo xmlns:svg="http://example.invalid/ns"/>', "namespace"),
    ],
)
def test_sanitizer_rejects_hostile_svg(body, problem):
    with pytest.raises(UnsafeSvgError, match=problem):
        check_svg(f"{SVG_OPEN}{body}</svg>")


def test_sanitizer_rejects_entities_doctype_and_foreign_ids():
    with pytest.raises(UnsafeSvgError):
        check_svg('<!DOCTYPE svg [<!ENTITY a "aaaa">]>' + SVG_OPEN + "<text>&a;</text></svg>")
    with pytest.raises(UnsafeSvgError, match="prefix"):
        check_svg(SVG_OPEN + '<defs><clipPath id="clip1"><rect width="1"/></clipPath></defs></svg>', id_prefix="c-")
    with pytest.raises(UnsafeSvgError, match="not well-formed"):
        check_svg(SVG_OPEN + "<text>unclosed</svg>")
    ok = SVG_OPEN + '<defs><clipPath id="c-0"><rect width="1"/></clipPath></defs><g clip-path="url(#c-0)"/></svg>'
    assert check_svg(ok, id_prefix="c-") == ok


def test_namespace_ids_rewrites_definitions_and_references():
    svg = SVG_OPEN + '<defs><linearGradient id="gradient_7"/><clipPath id="clip3"/></defs>' \
        '<rect fill="url(#gradient_7)" clip-path="url(#clip3)"/></svg>'
    out = namespace_ids(svg, "chart-")
    assert 'id="chart-0"' in out and 'id="chart-1"' in out
    assert "url(#chart-0)" in out and "url(#chart-1)" in out
    assert "gradient_7" not in out and "clip3" not in out
    check_svg(out, id_prefix="chart-")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=60))
def test_any_escaped_text_is_accepted_and_stays_text(name):
    svg = f"{SVG_OPEN}<text aria-label={quoteattr(name)}>{escape(name)}</text></svg>"
    check_svg(svg)
    text = ET.fromstring(svg).find("{http://www.w3.org/2000/svg}text")
    assert (text.text or "") == name and text.get("aria-label") == name


@settings(max_examples=100, deadline=None)
@given(st.from_regex(r"on[a-z]{1,12}", fullmatch=True))
def test_any_event_handler_attribute_is_rejected(attr):
    with pytest.raises(UnsafeSvgError):
        check_svg(f'{SVG_OPEN}<g {attr}="x"/></svg>')


def test_spec_embeds_the_table_once_and_is_json(burst_visuals):
    import json

    spec = chart_spec(burst_visuals[1])
    text = json.dumps(spec)
    assert "$schema" not in spec and "http" not in text  # no URL for a renderer to fetch
    timeline = burst_visuals[1]
    assert timeline.episodes and list(spec["datasets"]) == ["table", "episodes"]  # each inlined once
    assert len(spec["datasets"]["table"]) == len(timeline.table.rows)
    assert len(spec["datasets"]["episodes"]) == len(timeline.episodes)
    assert "values" not in text  # no view carries inline data of its own


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_renders_without_network(tmp_path):
    """vl-convert in a network namespace with no interface: it must not need to fetch anything."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    script = textwrap.dedent(
        """
        from coherence_diag.render.charts import render_svg
        from coherence_diag.visuals import Visual, VisualTable
        table = VisualTable(("component", "kind", "health_frac"), (("scheduler", "layer", 0.8), ("scheduler_compute", "link", 0.4)))
        v = Visual("synchronization-map", "t", "c", "sync_map", table, None, ())
        svg = render_svg(v)
        assert svg.count("<path") > 3
        print("ok")
        """
    )
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_compact_svg_drops_only_what_a_static_chart_does_not_need():
    from coherence_diag.render.charts import compact_svg

    svg = (
        SVG_OPEN.replace("<svg ", '<svg class="marks" ')
        + '<g class="mark-rect role-mark" aria-hidden="true"><path aria-hidden="true" d="M0,0h5v5h-5Z" fill="rgb(8, 81, 156)" opacity="1"/></g>'
        + '<g role="graphics-symbol" aria-label="x &gt; 1"><text pointer-events="none" font-family="' + FONT_STACK + '" fill="#000">a &lt;b&gt;</text>'
        + '<path aria-hidden="true" d="M0,0"/></g></svg>'
    )
    out = compact_svg(svg)
    check_svg(out)
    assert "class=" not in out and 'opacity="1"' not in out and "pointer-events" not in out and "rgb(" not in out
    assert 'fill="#08519c"' in out
    assert out.count('aria-hidden="true"') == 2  # kept on the hidden group and on an element outside it
    assert out.count(FONT_STACK) == 1 and out.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert 'aria-label="x &gt; 1"' in out and ">a &lt;b&gt;</text>" in out  # text and labels untouched


def test_specs_are_valid_vega_lite_and_the_fast_path_builds_the_same(burst_visuals):
    """At run time the shared configuration is attached without Altair's validation (and
    without its per-call deep copies); the result is the validated spec, byte for byte."""
    import json

    for visual in burst_visuals:
        if visual.table is not None:
            assert json.dumps(chart_spec(visual, validate=True)) == json.dumps(chart_spec(visual)), visual.id
