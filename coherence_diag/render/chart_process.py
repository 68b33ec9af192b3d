"""Entry points of a process that draws charts (`coherence-diag report`'s chart process).

Light on purpose: importing this module imports neither Altair nor vl-convert, so the process
that hands visuals over (and pickles these functions by name) never pays for the charting
libraries; the chart process imports them once, in `warm_up`.
"""

from __future__ import annotations

from coherence_diag.model import Visual


def draw(visual: Visual) -> str:
    """The checked SVG of a defined visual (render/charts.py), its element ids prefixed
    `svg-<visual id>-` (unique within a page, distinct from the page's own ids)."""
    from coherence_diag.render import charts

    return charts.render_svg(visual, f"svg-{visual.id}")


def warm_up() -> None:
    """Import the charting libraries and draw one small chart: the first drawing starts
    vl-convert's JavaScript runtime and loads its fonts, which takes longer than any chart."""
    from coherence_diag.render import charts

    charts.warm_up()


def ready() -> bool:
    """A no-op task: submitting it starts a process of a pool (which then runs `warm_up`)."""
    return True
