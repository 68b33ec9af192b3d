"""Styles shared by the renderers: one colour per severity and per check status, in every view."""

from __future__ import annotations

SEVERITY_STYLE = {"low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red"}  # Rich styles
STATUS_STYLE = {"pass": "green", "fail": "bold red", "skipped": "yellow"}  # a gate or accuracy check
STATUS_MARK = {"pass": "✅ pass", "fail": "❌ FAIL", "skipped": "⏭️ skipped"}  # the same, in Markdown
