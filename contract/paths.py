"""The dataset-root rule both sides apply: no path outside the dataset root is read.

The scanner (``orchestrator.datasets``) and the extraction workers
(``workers.extraction``) check every clip path against its dataset root. A path with
no symbolic link below a real root is what ``os.path.realpath`` would give, so the
common case costs one ``lstat`` per part instead of a ``realpath`` (one ``lstat`` per
part of the whole path, from ``/``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence


def is_inside(real_path: str, root: str) -> bool:
    """True if ``real_path`` is ``root`` or below it (both real paths)."""
    return os.path.commonpath([root, real_path]) == root


def plain_parts(parts: Sequence[str]) -> bool:
    """True if no part of a split relative path is empty, ``.`` or ``..``."""
    return all(p not in ("", ".", "..") for p in parts)


def no_links_below(root: str, parts: Sequence[str]) -> bool:
    """True if every one of ``parts`` under ``root`` exists and none is a symbolic link."""
    path = root
    for part in parts:
        path = os.path.join(path, part)
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return False
        except OSError:
            return False
    return True
