"""A markdown table of `slither-example --all --json` (the README's results).

    build/examples/slither-example --all --json > results.json
    python examples/python/results_table.py results.json
"""

from __future__ import annotations

import argparse
import json
import sys


def cell(mode: dict, slither_seconds: float | None) -> str:
    text = f"{mode['seconds']:.3f} s"
    if slither_seconds and mode["mode"] != "slither":
        text += f" ({mode['seconds'] / slither_seconds:.1f}x)"
    if not mode["held"]:
        text += " **broken**"
    return text


def table(summary: dict) -> str:
    modes = ["slither", "unsafe_threaded", "safe_python", "multiprocessing_pool"]
    lines = [
        "| example | items | " + " | ".join(modes) + " |",
        "|---|---:|" + "---|" * len(modes),
    ]
    for ex in summary["examples"]:
        if "slither" not in ex:
            continue
        by_mode = {b["mode"]: b for b in ex["baselines"]}
        by_mode["slither"] = ex["slither"]
        slither_seconds = ex["slither"]["seconds"]
        cells = [cell(by_mode[m], slither_seconds) if m in by_mode else "-" for m in modes]
        lines.append(f"| {ex['name']} | {ex['slither']['items']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("summary", help="the JSON that slither-example --json printed ('-': stdin)")
    args = ap.parse_args()
    with (sys.stdin if args.summary == "-" else open(args.summary, encoding="utf-8")) as f:
        summary = json.load(f)
    print(f"Scale {summary['scale']}, {summary['workers']} workers; wall time, and in brackets "
          "how many times longer than Slither; **broken**: an invariant failed.\n")
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
