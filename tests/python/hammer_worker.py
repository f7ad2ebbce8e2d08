"""A writer or reader process for test_processes.py; prints one JSON report on stdout.

    python hammer_worker.py writer|reader RUNTIME_DIR NAMESPACE STORE TABLE SECONDS SEED
"""

from __future__ import annotations

import json
import random
import sys
import time
import zlib

import numpy as np

import slither

HOT_KEYS = 64
VECTORS = 4


def make_value(seq: int, key: str, rng: random.Random) -> dict:
    payload = rng.randbytes(rng.randrange(0, 2048))
    arr = np.arange(rng.randrange(1, 256), dtype=np.float64) * seq
    return {"seq": seq, "key": key, "payload": payload, "crc": zlib.crc32(payload),
            "arr": arr, "arr_crc": zlib.crc32(arr.tobytes())}


def check_value(v: dict, key: str) -> None:
    if v["key"] != key:
        raise AssertionError(f"{key}: holds the value of {v['key']}")
    if zlib.crc32(v["payload"]) != v["crc"]:
        raise AssertionError(f"{key}: payload checksum mismatch at seq {v['seq']}")
    if zlib.crc32(np.ascontiguousarray(v["arr"]).tobytes()) != v["arr_crc"]:
        raise AssertionError(f"{key}: array checksum mismatch at seq {v['seq']}")


def check_vector(vec: np.ndarray, key: str) -> None:
    # Written as [s, s, ..., s, -s]: a torn or reused block would break the pattern.
    s = vec[0]
    if not (np.all(vec[:-1] == s) and vec[-1] == -s):
        raise AssertionError(f"{key}: inconsistent vector view (first {s}, last {vec[-1]})")


def writer(store: slither.Store, table: str, deadline: float, rng: random.Random) -> dict:
    seq = 0
    last: dict[str, int] = {}
    unique = 0
    while time.monotonic() < deadline:
        seq += 1
        if seq % 10 == 0:
            batch = {}
            for _ in range(8):
                unique += 1
                batch[f"u{unique}"] = make_value(unique, f"u{unique}", rng)
            store.put_many(table, batch)
        elif seq % 10 == 5:
            vec = np.full(4096, float(seq))
            vec[-1] = -float(seq)
            store.put(table, f"vec{seq % VECTORS}", vec)
        else:
            key = f"h{seq % HOT_KEYS}"
            store.put(table, key, make_value(seq, key, rng))
            last[key] = seq
    return {"writes": seq, "last": last, "unique": unique}


def reader(store: slither.Store, table: str, deadline: float, rng: random.Random) -> dict:
    reads = views = 0
    seen: dict[str, int] = {}
    errors: list[str] = []
    while time.monotonic() < deadline:
        try:
            if rng.random() < 0.2:
                key = f"vec{rng.randrange(VECTORS)}"
                try:
                    check_vector(store.view(table, key), key)
                    views += 1
                except slither.NotFound:
                    pass
                continue
            key = f"h{rng.randrange(HOT_KEYS)}"
            v = store.get(table, key)
            reads += 1
            if v is None:
                continue
            check_value(v, key)
            if v["seq"] < seen.get(key, 0):
                raise AssertionError(f"{key}: seq went back from {seen[key]} to {v['seq']}")
            seen[key] = v["seq"]
        except Exception as e:  # noqa: BLE001 - every failure is reported to the test
            errors.append(f"{type(e).__name__}: {e}")
    return {"reads": reads, "views": views, "errors": errors[:10], "error_count": len(errors)}


def main() -> None:
    role, runtime_dir, namespace, store_name, table, seconds, seed = sys.argv[1:8]
    client = slither.connect(runtime_dir=runtime_dir, namespace=namespace)
    store = client.store(store_name)
    rng = random.Random(int(seed))
    deadline = time.monotonic() + float(seconds)
    report = (writer if role == "writer" else reader)(store, table, deadline, rng)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
