"""Numbers with their units as text: the one place that decides how a value reads.

Units are the names features and measures declare: "ms", "frac" (a share in [0, 1], shown as a
percentage), "rps", "index" (a coherence index in [0, 1]), "ratio", "count", "corr", "p" and
"per_min". Every output format and the gate's messages format through here, so a unit reads the
same in the terminal, Markdown, JUnit and JSON text fields.

No markup: renderers style the text (Rich, HTML) themselves. Missing values read `NA`.
This module is a leaf: it imports nothing of coherence_diag.
"""

from __future__ import annotations

import re

NA = "n/a"

# Text after a number of the unit; "frac" reads as a percentage, the other units as bare numbers.
_SUFFIX = {"ms": " ms", "rps": " rps", "per_min": "/min"}
_ISO = re.compile(r"^\d{4}-(\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?Z$")


def exact(value: float | None, unit: str) -> str:
    """A measured value as the gate states it: '812.3 ms', '15.12 rps', '0.0213' (4 significant
    digits for fractions and indices, which policies bound as plain numbers)."""
    if value is None:
        return NA
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "rps":
        return f"{value:.2f} rps"
    return f"{value:.4g}"


def bound(value: float, unit: str) -> str:
    """A policy threshold as written: '500 ms', '0.7'."""
    return f"{value:g} {unit}" if unit in ("ms", "rps") else f"{value:g}"


def display(value: float | None, unit: str) -> str:
    """A value for a table: '1,234 ms', '12.5 ms', '42.1%', '15.12 rps', '0.812'."""
    if value is None:
        return NA
    if unit == "ms":
        return f"{value:,.0f} ms" if abs(value) >= 100 else f"{value:,.1f} ms"
    if unit == "frac":
        return percent(value)
    if unit == "rps":
        return f"{value:,.2f} rps"
    return f"{value:.3f}"


def delta(value: float | None, unit: str) -> str:
    """A signed difference of two values of `unit`: '+120 ms', '-1.5 pp' (fractions), '+0.031'."""
    if value is None:
        return NA
    if unit == "frac":
        return points(value)
    if unit == "ms":
        return f"{value:+,.0f} ms" if abs(value) >= 100 else f"{value:+,.1f} ms"
    if unit == "rps":
        return f"{value:+,.2f} rps"
    return f"{value:+.3f}"


def percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.4213 -> '42.1%'."""
    return NA if fraction is None else f"{fraction:.{digits}%}"


def relative(change: float | None) -> str:
    """A relative change, signed: 0.123 -> '+12.3%'."""
    return NA if change is None else f"{change:+.1%}"


def points(difference: float | None) -> str:
    """A difference of two fractions in percentage points: 0.015 -> '+1.5 pp'."""
    return NA if difference is None else f"{difference * 100:+.1f} pp"


def limit_percent(fraction: float) -> str:
    """A relative limit as written in a policy: 0.1 -> '10%'."""
    return f"{fraction * 100:g}%"


def regression_change(change: float | None, absolute: bool) -> str:
    """How much worse a measure got: '+12.3%', or '+0.05 absolute (baseline 0)'."""
    if change is None:
        return NA
    if absolute:
        return f"{change:+.4g} absolute (baseline 0)"
    return relative(change)


def number(value: float | None, spec: str = ".3f") -> str:
    """A unitless number with a format spec ('.3f', ',.0f'), or NA."""
    return NA if value is None else format(value, spec)


def magnitude(value: float | None) -> str:
    """A number of any size, compact: '123,456', '0.04213'."""
    if value is None:
        return NA
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def p_value(p: float | None) -> str:
    return NA if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def clipped_p_value(p: float | None) -> str:
    """scipy clips the Anderson-Darling p-value to [0.001, 0.25]: say so at the clips."""
    if p is None:
        return NA
    return "<=0.001" if p <= 0.001 else (">=0.25" if p >= 0.25 else f"{p:.3f}")


def timestamp(iso: str | None) -> str:
    """A report timestamp in full: '2026-01-01T00:00:48.250000Z' -> '2026-01-01 00:00:48.250 UTC'
    (milliseconds only when not zero); text that is not such a timestamp is returned as is."""
    if iso is None:
        return NA
    m = _ISO.match(iso)
    if not m:
        return iso
    millis = (m.group(3) or ".000")[1:4].ljust(3, "0")
    return f"{iso[:4]}-{m.group(1)} {m.group(2)}{'' if millis == '000' else '.' + millis} UTC"


def cell(value: object) -> str:
    """A value of a table meant to be copied (the numbers behind a chart): integers in full,
    other numbers with at most 4 decimals and no trailing zeros, no thousands separators."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return str(value)


def evidence(value: object, unit: str | None = None) -> str:
    """A piece of evidence: a feature value in its unit, or a detail (text, timestamp, list)."""
    if isinstance(value, str) and (m := _ISO.match(value)):
        return f"{m.group(1)} {m.group(2)}"  # month-day and time: the year is in the trace facts
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        if unit == "frac":
            return percent(value)
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return text + _SUFFIX.get(unit or "", "")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(evidence(v) for v in value[:6]) + (", ..." if len(value) > 6 else "") + "]"
    return str(value)
