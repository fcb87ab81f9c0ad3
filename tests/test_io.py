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


@pytest.mark.parametrize("writer", ["text", "torch"])
def test_temp_file_is_a_hidden_sibling_of_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str) -> None:
    """The temp file lives in the target's folder (a rename is atomic only within one file
    system) and is a dot-file named after the target ending in .tmp, so a glob for *.pt or
    config.yaml never picks up a half-written file. Missing parent folders are created."""
    import torch

    seen: list[Path] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(Path(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    if writer == "text":
        io.atomic_write_text("x", path)
    else:
        io.atomic_torch_save({"w": torch.ones(2)}, path)
    assert len(seen) == 1 and seen[0].parent == path.parent
    assert seen[0].name.startswith(".last.pt.") and seen[0].name.endswith(".tmp")
    assert path.is_file()


def test_safe_torch_load_errors_name_the_file_and_the_cause(tmp_path: Path) -> None:
    import torch

    from bayesmeta.exceptions import CheckpointError

    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=f"got '{missing}' \\(not found\\)"):
        io.safe_torch_load(missing)
    bad = tmp_path / "bad.pt"
    io.atomic_torch_save({"w": torch.ones(3)}, bad)
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(CheckpointError, match=r"bad.pt: cannot be read, it is truncated or corrupt \((RuntimeError|EOFError|ValueError|OSError|UnpicklingError): .+\)"):
        io.safe_torch_load(bad)
    evil = tmp_path / "evil.pt"
    torch.save({"f": io.Path("x")}, evil)  # a pathlib object: not a plain container
    # the refused global is named; torch's advice to retry with weights_only=False is not repeated
    with pytest.raises(CheckpointError, match=r"refused to load: .*\(global pathlib.PosixPath\)") as err:
        io.safe_torch_load(evil)
    assert "weights_only=False" not in str(err.value)


def test_safe_torch_load_asks_for_weights_only_and_cpu_explicitly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch >= 2.6 defaults to weights_only=True, but pyproject allows torch >= 2.4, whose default
    is False (full unpickling): the safety must not rest on the default. map_location="cpu" lets a
    checkpoint written on a GPU load on a CPU-only machine."""
    import torch

    path = tmp_path / "w.pt"
    io.atomic_torch_save({"w": torch.ones(2)}, path)
    seen: dict = {}
    real_load = torch.load

    def spy(f, *args, **kwargs):
        seen.update(kwargs)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert torch.equal(io.safe_torch_load(path)["w"], torch.ones(2))
    assert seen.get("weights_only") is True and seen.get("map_location") == "cpu"
