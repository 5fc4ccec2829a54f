"""The dataset-root rule (contract.paths) and the scanner's file check built on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contract.paths import is_inside, no_links_below, plain_parts
from orchestrator.datasets import _check_file


def _realpath_check(root: Path, rel_path: str) -> str | None:
    """The check as it was written before the lstat shortcut: realpath every file."""
    real = os.path.realpath(root / rel_path)
    if not is_inside(real, str(root)):
        return "symlink points outside the dataset root"
    if not os.path.isfile(real):
        return "not a regular file"
    return None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "audio" / "fold1").mkdir(parents=True)
    (root / "audio" / "fold1" / "a.wav").write_bytes(b"RIFF")
    (root / "audio" / "fold1" / "sub").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.wav").write_bytes(b"RIFF")
    (root / "audio" / "fold1" / "in.wav").symlink_to(root / "audio" / "fold1" / "a.wav")
    (root / "audio" / "fold1" / "out.wav").symlink_to(outside / "x.wav")
    (root / "audio" / "linked").symlink_to(outside)
    (root / "audio" / "inner").symlink_to(root / "audio" / "fold1")
    (root / "audio" / "fold1" / "gone.wav").symlink_to(root / "nothing.wav")
    return root.resolve()


REL_PATHS = [
    "audio/fold1/a.wav",  # plain file
    "audio/fold1/in.wav",  # link to a file inside the root
    "audio/fold1/out.wav",  # link to a file outside
    "audio/linked/x.wav",  # a linked folder that leads outside
    "audio/inner/a.wav",  # a linked folder that stays inside
    "audio/fold1/../fold1/a.wav",  # '..' that stays inside
    "audio/../../outside/x.wav",  # '..' that leaves the root
    "audio/fold1/missing.wav",
    "audio/fold1/gone.wav",  # dangling link
    "audio/fold1/sub",  # a folder
    "audio/fold1//a.wav",  # empty part
]


@pytest.mark.parametrize("rel_path", REL_PATHS)
def test_check_file_agrees_with_realpath(tree: Path, rel_path: str) -> None:
    assert _check_file(tree, rel_path) == _realpath_check(tree, rel_path)


def test_the_cases_cover_every_answer(tree: Path) -> None:
    answers = {_check_file(tree, r) for r in REL_PATHS}
    assert answers == {None, "symlink points outside the dataset root", "not a regular file"}


def test_no_links_below(tree: Path) -> None:
    root = str(tree)
    assert no_links_below(root, ["audio", "fold1", "a.wav"])
    assert not no_links_below(root, ["audio", "fold1", "in.wav"])  # the file is a link
    assert not no_links_below(root, ["audio", "inner", "a.wav"])  # a folder is a link
    assert not no_links_below(root, ["audio", "fold1", "missing.wav"])


def test_plain_parts() -> None:
    assert plain_parts(["audio", "fold1", "a.wav"])
    assert not plain_parts(["audio", "..", "a.wav"])
    assert not plain_parts(["audio", ".", "a.wav"])
    assert not plain_parts(["audio", "", "a.wav"])
