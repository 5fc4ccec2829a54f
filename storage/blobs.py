"""Small files (JSON records, models, predictions) under a root URL, written atomically.

Local paths and object-store URLs (``s3://bucket/prefix``) work the same way
through fsspec. A write is all-or-nothing: locally a temporary file in the same
folder is renamed over the target; on an object store a single PUT is atomic.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


class BlobStore:
    """Key -> bytes mapping under ``root`` (a local path or an fsspec URL).

    Keys are ``/``-separated relative paths such as ``runs/<id>/config.json``.
    """

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        self.root = root.rstrip("/")
        self._fs, self._base = fsspec.core.url_to_fs(self.root, **(storage_options or {}))
        self._local = isinstance(self._fs, LocalFileSystem)

    def _path(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid blob key {key!r}")
        return f"{self._base}/{'/'.join(parts)}"

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``, replacing what was there, atomically."""
        path = self._path(key)
        if self._local:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        else:
            self._fs.pipe_file(path, data)

    def get_bytes(self, key: str) -> bytes:
        """The bytes at ``key``; ``FileNotFoundError`` if absent."""
        return self._fs.cat_file(self._path(key))

    def put_json(self, key: str, obj: Any) -> None:
        """Write ``obj`` as indented JSON at ``key``, atomically."""
        self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        """The JSON document at ``key``; ``FileNotFoundError`` if absent."""
        return json.loads(self.get_bytes(key))

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Copy a local file to ``key``, atomically."""
        self.put_bytes(key, Path(local_path).read_bytes())

    def get_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Copy ``key`` to a local file."""
        Path(local_path).write_bytes(self.get_bytes(key))

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a blob."""
        return bool(self._fs.exists(self._path(key)))

    def list(self, prefix: str) -> list[str]:
        """Names (not full keys) directly under ``prefix``, sorted; ``[]`` if none.

        Temporary files of writes in progress (``.name.*.tmp``) are not listed.
        """
        try:
            entries = self._fs.ls(self._path(prefix), detail=False)
        except FileNotFoundError:
            return []
        names = (str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return sorted(n for n in names if not n.startswith("."))

    def delete(self, key: str) -> None:
        """Remove ``key`` and, for a prefix, everything under it; absent is fine."""
        path = self._path(key)
        if self._fs.exists(path):
            self._fs.rm(path, recursive=True)
