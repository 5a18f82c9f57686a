"""Run every benchmark (or some): ``python -m benchmarks [--quick] [NAME ...]``.

Each ``benchmarks/bench_<name>.py`` module exposes ``run(quick: bool) -> dict`` of figures, where a
figure is a number or ``{"median", "min", "max", ...}``. Results are printed as a table and written to
``benchmarks/results/latest.json`` with the date, machine and versions. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("tenantflow", "wasmtime", "componentize-py", "RestrictedPython", "aiosqlite", "dbos"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def _row(name: str, figure: Any) -> str:
    if isinstance(figure, dict) and "median" in figure:
        return f"  {name:40} {figure['median']:>14.3f}   (min {figure['min']:.3f}, max {figure['max']:.3f})"
    return f"  {name:40} {figure!s:>14}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(available())})"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; available: {', '.join(available())}")
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
        },
        "versions": _versions(),
        "quick": args.quick,
        "results": {},
    }
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.bench_{name}")
        figures = module.run(quick=args.quick)
        report["results"][name] = figures
        for figure_name, figure in figures.items():
            print(_row(figure_name, figure))
        print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
