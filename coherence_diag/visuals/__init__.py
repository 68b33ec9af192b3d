"""The report's visuals as typed aggregates (compute layer; render/charts.py draws them).

    from coherence_diag.visuals import build_visuals
    for visual in build_visuals(analysis):
        visual.table or visual.omitted_reason
"""

from coherence_diag.model.visuals import (
    MAX_EPISODES,
    MAX_TABLE_ROWS,
    UNIT_SUFFIXES,
    Episode,
    Visual,
    VisualTable,
    column_has_unit,
)
from coherence_diag.visuals.build import SUPPORTS, VisualInputs, build_visuals, iter_visuals

__all__ = [
    "MAX_EPISODES", "MAX_TABLE_ROWS", "SUPPORTS", "UNIT_SUFFIXES", "Episode", "Visual", "VisualInputs", "VisualTable",
    "build_visuals", "column_has_unit", "iter_visuals",
]
