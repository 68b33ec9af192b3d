"""The allocator setting: applied when the package loads Polars first, never over the user's.

Polars itself prefixes its own defaults to `_RJEM_MALLOC_CONF` when it loads; jemalloc reads the
options left to right, so the last value of an option is the one that holds.
"""

from __future__ import annotations

import os
import subprocess
import sys

ENV = "_RJEM_MALLOC_CONF"


def _options(code: str, **env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k != ENV}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True)
    value = out.stdout.strip()
    return dict(item.split(":", 1) for item in value.split(",")) if value != "None" else {}


def test_importing_the_package_first_sets_one_arena_per_core():
    options = _options(f"import os, coherence_diag, polars; print(os.environ.get({ENV!r}))")
    assert int(options["narenas"]) == len(os.sched_getaffinity(0))
    assert options["dirty_decay_ms"] == "500"
    assert options["muzzy_decay_ms"] == "0"  # purged pages leave the RSS at once


def test_a_process_that_loaded_polars_first_is_left_alone():
    options = _options(f"import os, polars, coherence_diag; print(os.environ.get({ENV!r}))")
    assert "narenas" not in options


def test_the_users_setting_wins():
    options = _options(f"import os, coherence_diag, polars; print(os.environ[{ENV!r}])", **{ENV: "narenas:7"})
    assert options["narenas"] == "7" and options.get("muzzy_decay_ms") != "0"
