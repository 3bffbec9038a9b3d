"""yolact_d2.utils.atomic_io: the one atomic-write helper of checkpoints, converted weights,
evaluation results and the synthetic dataset (docs/RELIABILITY.md)."""
import os
import subprocess
import sys

import pytest

from yolact_d2.utils import atomic_io


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("mode, data", [("wb", b"new \x00 bytes"), ("w", "new text")])
def test_success_replaces_the_content_and_leaves_no_temporary_file(tmp_path, mode, data):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_io.atomic_open(str(target), mode) as f:
        f.write(data)
    assert target.read_bytes() == (data if isinstance(data, bytes) else data.encode())
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("sync", [True, False])
def test_atomic_write_bytes_creates_the_file(tmp_path, sync):
    target = tmp_path / "new.json"
    atomic_io.atomic_write_bytes(str(target), b"{}", sync=sync)
    assert target.read_bytes() == b"{}"
    assert os.listdir(tmp_path) == ["new.json"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_keeps_the_target_and_removes_the_temporary_file(tmp_path, error):
    target = tmp_path / "model.pth"
    target.write_bytes(b"previous complete file")
    with pytest.raises(type(error)):
        with atomic_io.atomic_open(str(target), "wb") as f:
            f.write(b"half of the new")
            raise error
    assert target.read_bytes() == b"previous complete file"
    assert os.listdir(tmp_path) == ["model.pth"]


def test_failure_before_the_first_write_creates_nothing(tmp_path):
    target = tmp_path / "never.txt"
    with pytest.raises(RuntimeError, match="simulated"):
        with atomic_io.atomic_open(str(target), "w"):
            raise RuntimeError("simulated")
    assert os.listdir(tmp_path) == []


def test_a_failed_rename_keeps_the_target_and_removes_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "last_checkpoint"
    target.write_text("model_0001.pth")

    def no_rename(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(atomic_io.os, "replace", no_rename)
    with pytest.raises(PermissionError):
        atomic_io.atomic_write_bytes(str(target), b"model_0002.pth")
    monkeypatch.undo()
    assert target.read_text() == "model_0001.pth"
    assert os.listdir(tmp_path) == ["last_checkpoint"]


def test_only_write_modes(tmp_path):
    with pytest.raises(ValueError, match="modes 'w' and 'wb'"):
        with atomic_io.atomic_open(str(tmp_path / "x"), "a"):
            pass
    assert os.listdir(tmp_path) == []


def test_temporary_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f".model.pth.tmp-{_dead_pid()}-abcdef12"
    live = tmp_path / f".model.pth.tmp-{os.getppid()}-abcdef12"
    other = tmp_path / ".hidden"
    for path in (dead, live, other):
        path.write_bytes(b"x")
    assert atomic_io.remove_stale_temporary_files(str(tmp_path)) == [str(dead)]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])
    assert atomic_io.remove_stale_temporary_files(str(tmp_path / "missing")) == []


def test_publish_file_moves_a_complete_file_over_the_target(tmp_path):
    staging = tmp_path / ".staging-1"
    staging.mkdir()
    (staging / "results.json").write_text("[1]")
    (tmp_path / "results.json").write_text("[0]")
    atomic_io.publish_file(str(staging / "results.json"), str(tmp_path / "results.json"))
    assert (tmp_path / "results.json").read_text() == "[1]"
    assert os.listdir(staging) == []


def test_make_output_dir_creates_parents_and_names_the_option_when_it_cannot(tmp_path):
    from yolact_d2.utils.atomic_io import make_output_dir
    from yolact_d2.utils.errors import UserError

    target = tmp_path / "a" / "b"
    assert make_output_dir(str(target), "--output") == str(target) and target.is_dir()
    assert make_output_dir(str(target), "--output") == str(target)  # already there: fine
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    for path in (blocker, blocker / "below"):
        with pytest.raises(UserError) as info:
            make_output_dir(str(path), "--output folder")
        assert str(info.value).startswith(f"--output folder {path}: cannot be created ("), str(info.value)
    assert blocker.read_text() == "keep"
