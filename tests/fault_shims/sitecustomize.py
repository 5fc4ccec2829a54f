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
"""

import os

_flag = os.environ.get("ESC_FAULT_ENOSPC_FLAG")
if _flag:
    import errno

    from zarr.storage import LocalStore

    _prefixes = tuple(os.environ.get("ESC_FAULT_ENOSPC_KEYS", "windows/").split(","))
    _original_set = LocalStore.set

    async def _set(self, key, value, *args, **kwargs):  # type: ignore[no-untyped-def]
        if key.startswith(_prefixes) and not key.endswith("zarr.json") and os.path.exists(_flag):
            raise OSError(
                errno.ENOSPC, "No space left on device (injected by tests/fault_shims)", key
            )
        return await _original_set(self, key, value, *args, **kwargs)

    LocalStore.set = _set  # type: ignore[method-assign]

    # The feature store writes whole chunks of local stores itself (byte-identical to
    # zarr, without its async overhead): the same fault applies there.
    from storage.chunk_writer import LocalChunkWriter

    _original_write_chunk = LocalChunkWriter.write_chunk

    def _write_chunk(self, chunk, data):  # type: ignore[no-untyped-def]
        key = f"{os.path.basename(self._base)}/"
        if key.startswith(_prefixes) and os.path.exists(_flag):
            raise OSError(
                errno.ENOSPC, "No space left on device (injected by tests/fault_shims)", key
            )
        return _original_write_chunk(self, chunk, data)

    LocalChunkWriter.write_chunk = _write_chunk  # type: ignore[method-assign]
