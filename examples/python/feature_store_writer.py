"""feature_store demo, writer: writes through the broker, then reads its writes.

Adds new users with put_many, updates one with compare_and_set, and calls the
broker's C++ view `top_users`. Every write is visible to readers when it returns.
"""
import time

import demo_args


def main() -> None:
    ap = demo_args.parser(__doc__)
    ap.add_argument("--count", type=int, default=100)
    args = ap.parse_args()
    store = demo_args.open_store(args)

    new_users = {
        f"user-new-{i:03d}": {"id": f"user-new-{i:03d}", "age": 20 + i % 50, "country": "NZ",
                              "score": 0.5 + (i % 50) / 100.0, "active": True, "tags": ["new"]}
        for i in range(args.count)
    }
    start = time.perf_counter()
    store.put_many("users", new_users)
    elapsed_ms = (time.perf_counter() - start) * 1000
    # Read-your-writes: the rows are in shared memory as soon as put_many returns.
    missing = [k for k in new_users if store.get("users", k) is None]
    if missing:
        raise SystemExit(f"[writer] {len(missing)} written rows are not visible: {missing[:3]}")

    version = store.put("users", "user-new-000", dict(new_users["user-new-000"], score=0.99))
    version = store.compare_and_set(
        "users", "user-new-000", version, dict(new_users["user-new-000"], score=1.0)
    )
    top = store.call_view("top_users", {"n": 3})
    print(f"[writer] put_many of {args.count} users took {elapsed_ms:.2f} ms; all visible at once")
    print(f"[writer] compare_and_set moved user-new-000 to version {version}; "
          f"top_users view says: {[u['id'] for u in top]}")


if __name__ == "__main__":
    main()
