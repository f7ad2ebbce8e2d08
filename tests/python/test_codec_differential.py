"""Differential fuzzing of the codec: the Python fast path (slither.encode/decode,
encode_items/decode_items) against the C++ codec reached through slither::Value
(slither._native._testing).

Random values must encode to the same bytes both ways; random mutations of valid
encodings must be accepted by both or refused by both (with the same error
class), and what is accepted must read back to the same value and re-encode to
the input (the format is canonical).

SLITHER_CODEC_FUZZ_CASES sets the number of random values (default 1500; each
also yields a few dozen mutations); SLITHER_CODEC_FUZZ_SEED the seed.
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest

from slither import SlitherError, decode, encode
from slither._native import _testing, decode_items, encode_items

CASES = int(os.environ.get("SLITHER_CODEC_FUZZ_CASES", "1500"))
SEED = int(os.environ.get("SLITHER_CODEC_FUZZ_SEED", "20240601"))

DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
          np.uint64, np.float16, np.float32, np.float64]
INT_EDGES = [0, 1, -1, 127, 128, -32, -33, 255, 256, 2**14 - 1, 2**14, 2**31, -(2**31),
             2**63 - 1, -(2**63), 2**56, -(2**56) - 1]
FLOAT_EDGES = [0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308]


class Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def text(self) -> str:
        n = self.r.choice([0, 1, 5, 15, 31, 32, 33, 100, 300])
        alphabet = self.r.choice(["abcxyz_0", "ñü✓€𝄞aZ", "\x00\x7f\x80 a"])
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def array(self) -> np.ndarray:
        dtype = self.r.choice(DTYPES)
        shape = tuple(self.r.choice([0, 1, 3, 8, 17]) for _ in range(self.r.randint(0, 3)))
        a = (np.arange(int(np.prod(shape)), dtype=np.int64) * 37 % 251).astype(dtype).reshape(shape)
        if a.ndim == 2 and self.r.random() < 0.3:
            a = a.T  # strided: stored as a contiguous copy
        return a

    def value(self, depth: int):
        kinds = 10 if depth > 0 else 7
        k = self.r.randrange(kinds)
        if k == 0:
            return self.r.choice([None, True, False])
        if k == 1:
            return self.r.choice(INT_EDGES) if self.r.random() < 0.5 else self.r.randint(-(2**63), 2**63 - 1) >> self.r.randrange(64)
        if k == 2:
            return self.r.choice(FLOAT_EDGES) if self.r.random() < 0.3 else self.r.uniform(-1e9, 1e9)
        if k == 3:
            return self.text()
        if k == 4:
            return bytes(self.r.getrandbits(8) for _ in range(self.r.choice([0, 3, 40])))
        if k == 5:
            return self.array()
        if k == 6:
            return np.float32(self.r.random()) if self.r.random() < 0.5 else np.int64(self.r.randint(-9, 9))
        n = self.r.choice([0, 1, 2, 7, 9, 15, 16, 17])
        if k == 7:
            return [self.value(depth - 1) for _ in range(n)]
        if k == 8:
            return tuple(self.value(depth - 1) for _ in range(n))
        return {self.text() + str(i): self.value(depth - 1) for i in range(n)}

    def mutate(self, data: bytes) -> bytes:
        b = bytearray(data)
        for _ in range(self.r.randint(1, 3)):
            op = self.r.randrange(6)
            pos = self.r.randrange(len(b) + 1)
            if op == 0 and b:
                b[min(pos, len(b) - 1)] = self.r.getrandbits(8)
            elif op == 1 and b:
                b[min(pos, len(b) - 1)] ^= 1 << self.r.randrange(8)
            elif op == 2:
                del b[pos:pos + self.r.randint(1, 4)]
            elif op == 3:
                b[pos:pos] = bytes(self.r.choice([0x00, 0x7F, 0x80, 0xA1, 0xB1, 0xC0, 0xC3, 0xC5, 0xC7,
                                                  0xC8, 0xC9, 0xCA, 0xCB, 0xFF])
                                   for _ in range(self.r.randint(1, 3)))
            elif op == 4:
                del b[pos:]
            else:
                b += bytes(self.r.getrandbits(8) for _ in range(self.r.randint(1, 4)))
        if b and self.r.random() < 0.9:
            b[0] = 2  # keep the version byte, so the parser gets further
        return bytes(b)


def outcome(fn, data):
    """('ok', re-encoding of the result) or ('error', exception class)."""
    try:
        value = fn(data)
    except SlitherError as e:
        return ("error", type(e))
    return ("ok", value)


def test_random_values_encode_identically():
    g = Gen(SEED)
    for i in range(CASES):
        v = g.value(4)
        ours = encode(v)
        theirs = _testing.encode_via_value(v)
        assert ours == theirs, f"case {i}: {v!r}"
        # And both decoders read it back to the same, canonical, value.
        assert encode(decode(ours)) == ours
        assert encode(_testing.decode_via_value(ours)) == ours


def test_mutated_encodings_are_accepted_or_refused_alike():
    g = Gen(SEED + 1)
    checked = accepted = 0
    for _ in range(CASES):
        base = encode(g.value(3))
        for _ in range(20):
            data = g.mutate(base)
            ours = outcome(decode, data)
            theirs = outcome(_testing.decode_via_value, data)
            assert ours[0] == theirs[0], f"{data.hex()}: python {ours}, C++ {theirs}"
            if ours[0] == "ok":
                accepted += 1
                assert encode(ours[1]) == data == encode(theirs[1]), data.hex()
            else:
                assert ours[1] is theirs[1], f"{data.hex()}: python {ours}, C++ {theirs}"
            checked += 1
    assert accepted > 0 and checked == CASES * 20


def test_batches_encode_and_decode_alike():
    g = Gen(SEED + 2)
    for _ in range(max(CASES // 10, 20)):
        items = []
        for i in range(g.r.randint(0, 20)):
            if g.r.random() < 0.5:
                items.append((g.r.getrandbits(64) >> g.r.randrange(64), g.value(2)))
            else:
                meta = {g.text() + str(j): g.value(1) for j in range(g.r.choice([0, 1, 3]))}
                items.append((i, g.value(2), meta, g.text()))
        frame = encode_items(items)
        assert frame == _testing.encode_items_via_value(items)
        for _ in range(20):
            data = g.mutate(frame)
            ours = outcome(decode_items, data)
            theirs = outcome(_testing.decode_items_via_value, data)
            assert ours[0] == theirs[0], f"{data.hex()}: python {ours}, C++ {theirs}"
            if ours[0] == "ok":
                assert encode_items(ours[1]) == data == encode_items(theirs[1])
            else:
                assert ours[1] is theirs[1]


@pytest.mark.parametrize("data", [
    b"", b"\x02", b"\x01\x00", b"\x02\xcb", b"\x02\xc3\x02", b"\x02\xc3\x80\x00",
    b"\x02\xc5\x01x", b"\x02\xb2\x81a\x01\x81a\x02", b"\x02\xa1" * 200 + b"\x00",
    b"\x02\xca\x01\x01\x03", b"\x02\xc9\x05\x01\x08" + b"\x00" * 64,
])
def test_hand_made_edge_cases_agree(data):
    ours = outcome(decode, data)
    theirs = outcome(_testing.decode_via_value, data)
    assert ours[0] == theirs[0] and (ours[0] == "ok" or ours[1] is theirs[1]), (ours, theirs)
