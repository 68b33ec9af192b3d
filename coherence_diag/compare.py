"""Compare two traces, or two environments of one trace: deltas, distribution shift, findings.

Filled in by issue 4 (`coherence-diag compare`); the module exists so that the import layers
(pyproject, import-linter) name it from the start.
"""
