"""`make bench`: Herald against the FastAPI + Celery baseline, with C tools where installed.

    .venv/bin/python benchmarks/bench.py

With `wrk` and Postfix's `smtp-sink` (`apt-get install wrk postfix`) it runs
benchmarks/native.py: neither the load generator nor the sink is Python, the table gives each
system's CPU per delivered notification and peak RSS, and its first row is the sink's own
ceiling. Without them it runs benchmarks/suite.py, whose load generator and sink are Python and
share the two cores with what they measure; it says so, above the table and in it.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from native_tools import missing_tools

HERE = Path(__file__).resolve().parent


def main() -> None:
    missing = missing_tools()
    script = "suite.py" if missing else "native.py"
    if missing:
        print(
            f"WARNING: {', '.join(missing)} not installed (apt-get install wrk postfix): "
            "measuring with benchmarks/suite.py, whose Python load generator and SMTP sink eat "
            "the cores they measure",
            flush=True,
        )
    sys.argv = [str(HERE / script), *sys.argv[1:]]
    runpy.run_path(str(HERE / script), run_name="__main__")


if __name__ == "__main__":
    main()
