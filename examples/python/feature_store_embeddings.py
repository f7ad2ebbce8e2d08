"""feature_store demo, embeddings reader: a zero-copy numpy view of a matrix.

Takes a read-only numpy view of the embeddings matrix that lives in shared
memory (no copy, no broker round trip), checks it is read-only, and uses it.
"""
import statistics
import time

import numpy as np

import demo_args


def main() -> None:
    ap = demo_args.parser(__doc__)
    args = ap.parse_args()
    store = demo_args.open_store(args)
    matrix = store.view("embeddings", "matrix")
    assert isinstance(matrix, np.ndarray)
    assert not matrix.flags.writeable, "views of shared memory must be read-only"
    try:
        matrix[0, 0] = 1.0
        raise SystemExit("[embeddings] writing through a view should have failed")
    except ValueError:
        pass

    norms = np.linalg.norm(matrix, axis=1)
    query = matrix[42]
    nearest = np.argsort(matrix @ query / (norms * norms[42]))[::-1][1:4]

    timings = []
    for _ in range(2000):
        start = time.perf_counter_ns()
        v = store.view("embeddings", "matrix")
        timings.append(time.perf_counter_ns() - start)
        del v
    mib = matrix.nbytes / (1 << 20)
    print(
        f"[embeddings] zero-copy view {matrix.shape} {matrix.dtype} ({mib:.1f} MiB), "
        f"read-only; rows nearest to 42: {nearest.tolist()}"
    )
    print(f"[embeddings] store.view median latency: {statistics.median(timings) / 1000:.1f} us")


if __name__ == "__main__":
    main()
