"""coherence-diag: trace-driven diagnosis of cross-layer incoherence in inference fleets."""

from __future__ import annotations

from coherence_diag import _allocator

_allocator.configure()  # before anything imports Polars

__version__ = "0.1.0"


def analyze(path, **kwargs):  # noqa: ANN001, ANN201 - thin re-export, typed in analysis.analyze
    """Analyze a trace; see `coherence_diag.analysis.analyze`."""
    from coherence_diag.analysis import analyze as _analyze

    return _analyze(path, **kwargs)


__all__ = ["__version__", "analyze"]
