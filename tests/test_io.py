"""bayesmeta.io: atomic text writes (the config.yaml of a run) leave the old file or the new one,
never a mix or a temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bayesmeta import io


def test_atomic_write_text_writes_creates_folders_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "config.yaml"
    io.atomic_write_text("first ünïcode\n", path)
    assert path.read_text() == "first ünïcode\n"
    io.atomic_write_text("second\n", path)
    assert path.read_text() == "second\n"
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    io.atomic_write_text("old\n", path)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_text("new\n", path)
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_the_new_text_is_synced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename must not happen before the data is on disk: fsync of the temp file comes first."""
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    io.atomic_write_text("x", tmp_path / "f.txt")
    assert calls == ["fsync", "replace"]
