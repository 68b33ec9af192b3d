"""Tune Polars' memory allocator when this package is the first to load Polars.

Polars allocates through jemalloc (on Linux and macOS), set up for long-running processes: four
arenas per core; freed pages are purged lazily after 0.5 s (MADV_FREE: the kernel may take
them back, but until it does they count in the process's RSS) and returned for good 1 s later.
An analysis frees and allocates hundreds of MB per stage. One arena per core lets each stage
reuse the pages the previous one freed (a fifth of the CPU time went to the kernel faulting
pages back in with four: about 10% less wall time at 10M rows, docs/benchmarks.md). Pages
unused for 0.5 s are returned at once (`muzzy_decay_ms:0`), not held lazily for another second:
at 10M rows the peak RSS drops from 1,446-1,661 MiB (1 s + 1 s lazy) to 1,326-1,347 MiB, with
CPU time within the run-to-run noise (docs/benchmarks.md, session 12). Longer decays were
measured slower or larger: 5 s held GBs of freed pages at 100M rows (docs/scale.md).

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
    os.environ[ENV] = f"narenas:{max(1, _cores())},dirty_decay_ms:500,muzzy_decay_ms:0"
