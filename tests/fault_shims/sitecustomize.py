"""Fault injection for the reliability tests ONLY: a full disk under the feature store.

Tests run as root, so ``chmod`` cannot make the store unwritable, and mounting a tiny
tmpfs needs privileges. Instead a worker is started with this folder on PYTHONPATH;
Python then imports this module as ``sitecustomize`` at start-up, and when
``ESC_FAULT_ENOSPC_FLAG`` is set it wraps ``zarr.storage.LocalStore.set`` so that writing
a key that starts with one of ``ESC_FAULT_ENOSPC_KEYS`` (comma-separated, default
``windows/``) raises ``OSError(ENOSPC)`` (and likewise the feature store's own
whole-chunk writer for local stores) -- exactly what a full disk raises -- for as long
as the flag file exists. Deleting the flag file "frees the disk" without restarting the
worker. Nothing else is patched; the broker, Celery and the task code are real.

The middle tier (tests in this process) installs the same fault with :func:`install`,
passing ``monkeypatch.setattr`` so that it is undone after the test.
"""

import os


def install(flag, prefixes=("windows/",), setattr_=setattr):  # type: ignore[no-untyped-def]
    """Make writes of keys starting with ``prefixes`` fail with ENOSPC while ``flag`` exists."""
    import errno

    from zarr.storage import LocalStore

    prefixes = tuple(prefixes)
    _original_set = LocalStore.set

    async def _set(self, key, value, *args, **kwargs):  # type: ignore[no-untyped-def]
        if key.startswith(prefixes) and not key.endswith("zarr.json") and os.path.exists(flag):
            raise OSError(
                errno.ENOSPC, "No space left on device (injected by tests/fault_shims)", key
            )
        return await _original_set(self, key, value, *args, **kwargs)

    setattr_(LocalStore, "set", _set)

    # The feature store writes whole chunks of local stores itself (byte-identical to
    # zarr, without its async overhead): the same fault applies there.
    from storage.chunk_writer import LocalChunkWriter

    _original_write_chunk = LocalChunkWriter.write_chunk

    def _write_chunk(self, chunk, data):  # type: ignore[no-untyped-def]
        key = f"{os.path.basename(self._base)}/"
        if key.startswith(prefixes) and os.path.exists(flag):
            raise OSError(
                errno.ENOSPC, "No space left on device (injected by tests/fault_shims)", key
            )
        return _original_write_chunk(self, chunk, data)

    setattr_(LocalChunkWriter, "write_chunk", _write_chunk)


_flag = os.environ.get("ESC_FAULT_ENOSPC_FLAG")
if _flag:
    install(_flag, os.environ.get("ESC_FAULT_ENOSPC_KEYS", "windows/").split(","))
