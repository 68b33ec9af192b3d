"""Tune Polars' memory allocator when this package is the first to load Polars.

Polars allocates through jemalloc (on Linux and macOS), set up for long-running processes: four
arenas per core, and freed pages returned to the OS after 0.5 s. An analysis frees and
allocates hundreds of MB per stage, so with those settings a fifth of its CPU time went to the
kernel faulting pages back in (10M rows, 2 cores). One arena per core and a 1 s decay let each
stage reuse the pages the previous one freed: about 10% less wall time at 10M rows
(docs/benchmarks.md). The decay was 5 s until freed pages kept that long were measured to be
much of the peak: at 10M rows 1 s gives the same wall time (5.97-6.50 s against 6.34-6.67 s)
and a 12% lower peak (1.90-1.96 GB against 2.19-2.31 GB); at 100M rows in work units, peaks
lower by GBs (docs/scale.md).

`_RJEM_MALLOC_CONF` is Polars' own way to pass allocator options: on import it puts its
defaults in front of the variable's value (jemalloc reads options left to right, the last
wins) and then loads its native library, which reads the variable once. So the setting takes
effect only if Polars is not loaded yet, and a value the user set is left alone.
"""

from __future__ import annotations

import os
import sys

ENV = "_RJEM_MALLOC_CONF"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on (containers)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure() -> None:
    """Set Polars' allocator options unless Polars is already loaded or the user chose them."""
    if "polars" in sys.modules or ENV in os.environ:
        return
    os.environ[ENV] = f"narenas:{max(1, _cores())},dirty_decay_ms:1000,muzzy_decay_ms:1000"
