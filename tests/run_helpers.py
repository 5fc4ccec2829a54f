"""A small real run, built in-process: synthetic WAVs, a feature store, trained trials.

No queue: the clips are extracted with the workers' feature code and the trials run
with ``workers.trial_runner.run_trial`` (1 epoch), so the run's records are exactly
what the training task writes.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.cv_submission import create_training_run
from orchestrator.datasets import scan_dataset
from orchestrator.synthetic import make_synthetic_dataset
from storage.feature_store import FeatureStore
from storage.runs import RunStore
from storage.store_layout import create_or_extend
from workers.features import FeatureConfig
from workers.featurize import featurize_file
from workers.run_report import finalize_run
from workers.trial_config import TrialConfig
from workers.trial_runner import run_trial


def build_tiny_run(
    tmp: Path, *, n_classes: int = 3, clips: int = 2, epochs: int = 1
) -> tuple[RunStore, str, FeatureStore]:
    """A complete 2-trial official run under ``tmp``; ``(runs, run_id, store)``."""
    root = make_synthetic_dataset(
        tmp / "data", n_classes=n_classes, folds=2, clips_per_class_per_fold=clips, seed=5
    )
    manifest = scan_dataset(root)
    config = FeatureConfig(mode="fast")
    url = str(tmp / "features.zarr")
    store, _ = create_or_extend(
        url, manifest, config.to_dict(), (config.max_windows, *config.window_shape)
    )
    store = FeatureStore.open(url, mode="r+")
    for index, rel in enumerate(store.rel_paths()):
        f = featurize_file(Path(store.dataset_root) / str(rel), config)
        store.write_clip(index, f.windows, n_real=f.n_real, n_samples=f.n_samples)
    runs = RunStore(url)
    training = TrialConfig(epochs=epochs, batch_size=16, patience=2)
    run_id = create_training_run(store, runs, plan="official", training=training)
    for k in range(2):
        run_trial(store, runs, run_id, k)
    assert finalize_run(runs, run_id) is not None
    return runs, run_id, store
