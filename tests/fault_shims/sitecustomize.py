"""Fault injection for the reliability tests ONLY: a full disk under the feature store.

Tests run as root, so ``chmod`` cannot make the store unwritable, and mounting a tiny
tmpfs needs privileges. Instead a worker is started with this folder on PYTHONPATH;
Python then imports this module as ``sitecustomize`` at start-up, and when
``ESC_FAULT_ENOSPC_FLAG`` is set it wraps ``zarr.storage.LocalStore.set`` so that writing
a key that starts with one of ``ESC_FAULT_ENOSPC_KEYS`` (comma-separated, default
``windows/``) raises ``OSError(ENOSPC)`` -- exactly what a full disk raises -- for as long
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
