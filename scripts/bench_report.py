#!/usr/bin/env python3
"""Turns Google Benchmark JSON (with repetitions) into the project's report.

Usage: bench_report.py REPORT_SPEC.json BENCH_OUTPUT.json

Prints a markdown table of medians, then one `BENCH <name> <value> <unit>`
line per figure and one `RATIO <name> <value>` line per comparison (how many
times better we are than the baseline, measured in the same run).
"""
import json
import sys

TIME_TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def medians(results):
    """Maps benchmark run name -> its median aggregate (or its only run)."""
    by_name = {}
    for b in results["benchmarks"]:
        name = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                by_name[name] = b
        else:
            by_name.setdefault(name, b)
    return by_name


def metric(entry, kind):
    if kind == "ns_per_op":
        return entry["real_time"] * TIME_TO_NS[entry.get("time_unit", "ns")]
    if kind == "cpu_ns_per_op":  # the benchmark thread's CPU time: steadier on a shared machine
        return entry["cpu_time"] * TIME_TO_NS[entry.get("time_unit", "ns")]
    if kind in ("items_per_second", "bytes_per_second"):
        return float(entry[kind])
    if kind.startswith("counter:"):  # a user counter the benchmark set (state.counters)
        return float(entry[kind[len("counter:"):]])
    raise SystemExit(f"bench_report: unknown metric '{kind}'")


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    with open(sys.argv[2]) as f:
        runs = medians(json.load(f))

    def lookup(name):
        if name not in runs:
            raise SystemExit(f"bench_report: benchmark '{name}' missing from {sys.argv[2]}")
        return runs[name]

    lines = []
    print("| figure | median | unit |")
    print("|---|---:|---|")
    for b in spec.get("bench", []):
        value = metric(lookup(b["benchmark"]), b["metric"]) * b.get("scale", 1.0)
        print(f"| {b['name']} | {value:.4g} | {b['unit']} |")
        lines.append(f"BENCH {b['name']} {value:.6g} {b['unit']}")
    for r in spec.get("ratio", []):
        ours = metric(lookup(r["ours"]), r["metric"])
        base = metric(lookup(r["baseline"]), r["metric"])
        # For times lower is better; for rates higher is better.
        ratio = base / ours if r["metric"] in ("ns_per_op", "cpu_ns_per_op") else ours / base
        print(f"| {r['name']} ({r['ours']} vs {r['baseline']}) | {ratio:.3g} | x |")
        lines.append(f"RATIO {r['name']} {ratio:.4g}")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
