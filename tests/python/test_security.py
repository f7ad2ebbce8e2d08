"""Owner-only permissions: runtime directory 0700, shared-memory segments 0600."""

from __future__ import annotations

import glob
import os
import stat


def test_runtime_dir_is_owner_only(broker):
    mode = stat.S_IMODE(os.stat(broker.runtime_dir).st_mode)
    assert mode == 0o700, oct(mode)


def test_segments_are_owner_only(broker, features):
    segments = glob.glob(f"/dev/shm/slither.{broker.namespace}.*")
    assert any(".features." in s for s in segments), segments
    for path in segments:
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600, (path, oct(st.st_mode))
        assert st.st_uid == os.getuid()
