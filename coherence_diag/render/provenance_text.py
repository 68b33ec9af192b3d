"""Plain-text phrases of a converted trace's provenance, shared by the terminal view and the HTML
page (each escapes them for its own markup)."""

from __future__ import annotations

from coherence_diag.model import ColumnOrigin, MetricSummary

# What an absent layer or column means, wherever provenance is shown.
ABSENT_MEANING = "no source gives them: absent, not idle or empty"


def summary_line(m: MetricSummary) -> str:
    """One histogram or counter summary; histogram quantiles are labelled as the estimates they are."""
    when = f"at {m.window_start} (since process start)" if m.cumulative else f"{m.window_start}..{m.window_end}"
    if m.kind == "counter":
        resets = f", {m.resets} reset(s)" if m.resets else ""
        return f"{m.metric} {{{m.series}}} {when}: +{m.count:g} {m.unit}{resets}"
    qs = ", ".join(f"{q} ~{v:.3g} {m.unit} in {m.quantile_buckets.get(q, '?')}" for q, v in m.quantiles.items())
    mean = f", mean {m.mean:.3g} {m.unit}" if m.mean is not None else ""
    return f"{m.metric} {{{m.series}}} {when}: {m.count:g} observations{mean}; histogram estimates: {qs}"


def column_how(origin: ColumnOrigin) -> str:
    """How a column is given: a derived column's formula, else the input fields it is read from,
    else its note (why it is absent, an approximation)."""
    if origin.status == "derived" and origin.formula:
        return origin.formula
    return ", ".join(origin.fields) or (origin.note or "")
