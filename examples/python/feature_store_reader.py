"""feature_store demo, reader: reads user rows in place from shared memory.

Run by `slither-example feature_store`; attaches to the broker named on the
command line, reads every user row without a broker round trip, and reports
the per-get latency it saw.
"""
import statistics
import time

import demo_args


def main() -> None:
    ap = demo_args.parser(__doc__)
    args = ap.parse_args()
    store = demo_args.open_store(args)
    users = store.table("users")
    # The rows loaded from features.jsonl (user-0000 ...); the writer process,
    # running meanwhile, adds user-new-* rows that this count must not race with.
    keys = users.keys(prefix="user-0")

    by_country: dict[str, list[float]] = {}
    for key in keys:
        row = users.get(key)
        by_country.setdefault(row["country"], []).append(row["score"])

    # Latency: many gets per timing so the clock's own cost does not dominate.
    rounds = []
    for _ in range(15):
        start = time.perf_counter_ns()
        for key in keys:
            users.get(key)
        rounds.append((time.perf_counter_ns() - start) / len(keys))

    summary = ", ".join(
        f"{c}={statistics.mean(s):.3f}" for c, s in sorted(by_country.items())
    )
    print(f"[reader] {len(keys)} users read in place; mean score by country: {summary}")
    print(f"[reader] store.get median latency: {statistics.median(rounds):.0f} ns per row")


if __name__ == "__main__":
    main()
