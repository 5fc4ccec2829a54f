"""TensorBoard logs of a trial: scalars per epoch, kept with the run's records.

Keras' ``TensorBoard`` callback writes event files (``epoch_loss``,
``epoch_accuracy``, ``epoch_learning_rate`` under ``train/``; ``epoch_loss``,
``epoch_accuracy`` under ``validation/``) to a local temporary folder while the trial
trains; :func:`save_logs` then copies them to ``runs/<run_id>/tensorboard/trial<k>/``
of the run's store (local or ``s3://``), so ``tensorboard --logdir
<store>/runs/<run_id>/tensorboard`` shows every trial of the run side by side.
"""

from __future__ import annotations

from pathlib import Path

import keras

from storage.runs import RunStore


def tensorboard_callback(log_dir: str | Path) -> keras.callbacks.Callback:
    """Epoch scalars only: no graph, no profiler, no histograms (cheap on any device)."""
    return keras.callbacks.TensorBoard(
        log_dir=str(log_dir),
        histogram_freq=0,
        write_graph=False,
        write_images=False,
        update_freq="epoch",
        profile_batch=0,
    )


def logs_key(run_id: str, k: int) -> str:
    """Where trial ``k``'s event files live in the store."""
    return f"runs/{run_id}/tensorboard/trial{k}"


def save_logs(runs: RunStore, run_id: str, k: int, log_dir: str | Path) -> list[str]:
    """Replace trial ``k``'s stored event files with those under ``log_dir``; their keys."""
    prefix = logs_key(run_id, k)
    runs.blobs.delete(prefix)  # a retrained trial must not show its old curves too
    keys = []
    for path in sorted(Path(log_dir).rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(log_dir).as_posix()}"
            runs.blobs.put_file(key, path)
            keys.append(key)
    return keys
