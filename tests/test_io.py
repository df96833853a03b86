"""Atomic writes: nothing half-written is left behind, and the result has ordinary file permissions."""

import os

import pytest

from edgeseg.io import atomic_write_bytes


def test_atomic_write_gives_umask_permissions_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


def test_atomic_write_failure_leaves_no_temporary_file(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "a.bin", "not bytes")
    assert list(tmp_path.iterdir()) == []
