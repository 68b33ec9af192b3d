"""Every way into a trace: the `TraceSource` protocol (source.py), the trace format's own files
(files.py), and one adapter module per foreign source (registry.py lists them: `convert --list`),
merged into one trace with its provenance (merge.py).

`open_trace(path)` opens a trace in the trace format; `open_sources(...)` maps foreign inputs.
"""

from coherence_diag.ingest.files import FileSource, SourceFile, open_trace, provenance_path
from coherence_diag.ingest.source import AUDIT_SCHEMA, ORIGIN, RECORD, FrameSource, TraceSource

__all__ = ["AUDIT_SCHEMA", "ORIGIN", "RECORD", "FileSource", "FrameSource", "SourceFile", "TraceSource", "open_trace", "provenance_path"]
