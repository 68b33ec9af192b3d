"""Foundations for traces larger than memory (issue 12; docs/scale.md): footers (what the
Parquet footers say), layout (whether time and layer predicates can skip row groups), plan (work
units: window-aligned time slices within a memory budget) and normalize (rewrite any trace
sorted by (layer, ts) with row-group statistics, in bounded memory).
"""
