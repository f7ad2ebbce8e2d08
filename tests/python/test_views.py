"""Zero-copy views: numpy arrays over the read-only shared mapping, pinned while referenced."""

from __future__ import annotations

import gc
import subprocess
import sys

import numpy as np
import pytest

import slither


def shm_ranges(namespace: str, store: str) -> list[tuple[int, int, str]]:
    """(start, end, perms) of this process's mappings of the store's segments."""
    prefix = f"/dev/shm/slither.{namespace}.{store}."
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith(prefix):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                out.append((start, end, parts[1]))
    return out


def data_address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def inside_mapping(a: np.ndarray, namespace: str, store: str) -> tuple[int, int, str]:
    lo, hi = data_address(a), data_address(a) + a.nbytes
    for start, end, perms in shm_ranges(namespace, store):
        if start <= lo and hi <= end:
            return start, end, perms
    raise AssertionError(f"array memory {lo:#x}-{hi:#x} is not inside a mapping of the store")


@pytest.fixture
def matrix(scratch):
    m = np.arange(256 * 64, dtype=np.float32).reshape(256, 64)
    scratch.put("t", "matrix", m)
    return m


def test_view_is_numpy_over_the_shared_mapping(scratch, matrix):
    v = scratch.view("t", "matrix")
    assert isinstance(v, np.ndarray)
    assert v.dtype == np.float32 and v.shape == (256, 64)
    np.testing.assert_array_equal(v, matrix)
    _, _, perms = inside_mapping(v, scratch.namespace, scratch.name)
    assert perms.startswith("r-")  # mapped read-only
    assert data_address(v) % 64 == 0  # stored arrays are 64-byte aligned
    assert v.flags.writeable is False
    assert v.base is not None


def test_view_cannot_be_written(scratch, matrix):
    v = scratch.view("t", "matrix")
    with pytest.raises(ValueError):
        v[0, 0] = 1.0
    with pytest.raises(ValueError):
        v.flags.writeable = True


def test_two_views_share_memory_no_copies(scratch, matrix):
    a = scratch.view("t", "matrix")
    b = scratch.table("t").view("matrix")
    assert data_address(a) == data_address(b)


def test_get_returns_a_private_copy(scratch, matrix):
    g = scratch.get("t", "matrix")
    with pytest.raises(AssertionError):
        inside_mapping(g, scratch.namespace, scratch.name)
    np.testing.assert_array_equal(g, matrix)


def test_view_stays_valid_after_overwrite_and_delete(scratch, matrix):
    v = scratch.view("t", "matrix")
    for i in range(20):  # replacements retire the old block; the view's hold keeps it
        scratch.put("t", "matrix", np.full((256, 64), float(i), dtype=np.float32))
        scratch.put_many("t", {f"filler{j}": np.zeros(1024) for j in range(8)})
    scratch.delete("t", "matrix")
    np.testing.assert_array_equal(v, matrix)
    slices = v[10:20]  # a numpy slice keeps the pin through its base chain
    del v
    gc.collect()
    np.testing.assert_array_equal(slices, matrix[10:20])


def test_view_of_non_array_is_memoryview_of_encoding(scratch):
    scratch.put("t", "doc", {"a": [1, 2]})
    mv = scratch.view("t", "doc")
    assert isinstance(mv, memoryview) and mv.readonly
    assert slither.decode(bytes(mv)) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        mv[0] = 0


def test_view_of_missing_key_is_not_found(scratch):
    with pytest.raises(slither.NotFound, match="no key 'absent' in table 't'"):
        scratch.view("t", "absent")


def test_large_view_is_zero_copy(scratch):
    big = np.random.default_rng(1).random((4096, 1024), dtype=np.float32)  # 16 MiB
    scratch.put("t", "big", big)
    v = scratch.view("t", "big")
    inside_mapping(v, scratch.namespace, scratch.name)
    assert float(v[4095, 1023]) == float(big[4095, 1023])


def test_without_numpy_arrays_are_memoryviews(broker, scratch):
    scratch.put("t", "vec", np.arange(6, dtype=np.int32).reshape(2, 3))
    code = f"""
import sys
sys.modules["numpy"] = None  # numpy is not importable in this process
import slither
r = slither.Reader({broker.namespace!r}, "scratch")
v = r.view("t", "vec")
g = r.get("t", "vec")
assert isinstance(v, memoryview) and v.readonly and v.format == "i" and v.shape == (2, 3), v
assert isinstance(g, memoryview) and g.tolist() == [[0, 1, 2], [3, 4, 5]]
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
