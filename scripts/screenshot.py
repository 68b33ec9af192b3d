"""Screenshot of a sample report for the README: `make screenshot`.

    python scripts/screenshot.py --trace sample_traces/burst-amplification.parquet --out docs/report-screenshot.png

Builds the report of one sample trace (`coherence-diag report`, into a temporary directory) and
takes a PNG of its page in headless Chromium (Playwright driving the system's Chromium, as the
browser tests do; never a downloaded browser): the top of the page, the findings and the first
chart; 1100 x 2300 px by default (`--width`, `--height`). The same trace and tool give the same page;
the PNG may differ in a few pixels between Chromium versions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

CHROMIUM = Path(os.environ.get("COHERENCE_DIAG_CHROMIUM", "/usr/bin/chromium"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default="sample_traces/burst-amplification.parquet")
    parser.add_argument("--out", type=Path, default=Path("docs/report-screenshot.png"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=2300)
    parser.add_argument("--anchor", default="", help="a section to start from, e.g. '#charts' (default: the top)")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"error: no Chromium at {CHROMIUM} (apt-get install chromium, or set COHERENCE_DIAG_CHROMIUM)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    from coherence_diag.batch import BatchOptions
    from coherence_diag.reports import build_reports

    with tempfile.TemporaryDirectory() as tmp:
        result = build_reports([args.trace], tmp, options=BatchOptions(), jobs=1)
        if result.failed:
            print(f"error: {result.failed[0].error}", file=sys.stderr)
            return 2
        page_file = Path(tmp) / f"{result.entries[0].name}.html"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height}, device_scale_factor=1)
            page.goto(page_file.as_uri() + args.anchor)
            page.wait_for_load_state("load")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=False)
            browser.close()
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes) from {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
