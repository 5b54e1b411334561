#!/usr/bin/env python3
"""A PNG chart and a markdown table from one side-by-side run of bench_loop.py.

    python bench/bench_loop.py --json results.json
    python bench/plot_results.py results.json --png bench/results.png --markdown bench/results.md

The chart shows each workload's median ops/s relative to stock asyncio (log scale), one bar per
loop; the table gives the medians and the ratios. Both carry the run's date, machine and versions.
Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from _report import fmt_rate, ratio

LOOPS = ["asyncio", "uvloop", "turboloop"]


def medians(run: Dict[str, Any]) -> Dict[str, Dict[str, Optional[float]]]:
    """{workload: {loop: median ops/s or None}}."""
    return {
        workload: {loop: (per_loop.get(loop) or {}).get("median") for loop in LOOPS}
        for workload, per_loop in run["results"].items()
    }


def caption(run: Dict[str, Any]) -> str:
    versions = ", ".join(f"{loop} {run['loops'][loop].get('version', 'n/a')}" for loop in LOOPS if loop in run["loops"])
    return (
        f"{run['date']}, {run['platform']}, {run['nproc']} CPUs, Python {run['python']}; {versions}; "
        f"{run['statistic']}"
    )


def markdown(run: Dict[str, Any]) -> str:
    rows: List[str] = [
        f"Side-by-side run: {caption(run)}.",
        "",
        "| workload | asyncio ops/s | uvloop ops/s | turboloop ops/s | tl/asyncio | tl/uvloop |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workload, rates in medians(run).items():
        rows.append(
            f"| {workload} | {fmt_rate(rates['asyncio'])} | {fmt_rate(rates['uvloop'])} | "
            f"{fmt_rate(rates['turboloop'])} | {ratio(rates['turboloop'], rates['asyncio'])} | "
            f"{ratio(rates['turboloop'], rates['uvloop'])} |"
        )
    return "\n".join(rows) + "\n"


def plot(run: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = medians(run)
    workloads = list(table)
    width = 0.8 / len(LOOPS)
    figure, axes = plt.subplots(figsize=(10, 4.8))
    for index, loop in enumerate(LOOPS):
        speedups = [
            (table[w][loop] / table[w]["asyncio"]) if table[w][loop] and table[w]["asyncio"] else 0.0
            for w in workloads
        ]
        positions = [i + (index - (len(LOOPS) - 1) / 2) * width for i in range(len(workloads))]
        axes.bar(positions, speedups, width, label=loop)
    axes.set_yscale("log")
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(workloads)))
    axes.set_xticklabels(workloads)
    axes.set_ylabel("ops/s relative to stock asyncio (log scale)")
    axes.set_title("turboloop vs uvloop vs asyncio (higher is better)")
    axes.legend()
    figure.text(0.01, 0.01, caption(run), fontsize=7)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=120)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", help="the --json file of a bench_loop.py run")
    parser.add_argument("--png", required=True, help="where to write the chart")
    parser.add_argument("--markdown", required=True, help="where to write the table")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as file:
        run = json.load(file)
    plot(run, args.png)
    with open(args.markdown, "w", encoding="utf-8") as file:
        file.write(markdown(run))
    print(f"wrote {args.png} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
