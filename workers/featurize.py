"""One audio file to its feature windows: the step every caller shares.

The extraction worker, ``orchestrator features``, ``orchestrator predict`` and the
benchmarks all decode a file with :func:`workers.audio.load_audio` at the
configuration's rate and length, then compute its windows with
:func:`workers.features.extract_clip_features`. Nothing else happens here.
"""

from __future__ import annotations

import os

from workers.audio import load_audio
from workers.features import ClipFeatures, FeatureConfig, extract_clip_features


def featurize_file(path: str | os.PathLike[str], config: FeatureConfig) -> ClipFeatures:
    """Windows of the audio file at ``path`` for ``config``.

    Returns:
        ``ClipFeatures`` with ``windows`` of shape ``(n_windows, n_mels, frames, 2)``
        (log-mel dB and delta), float32.

    Raises:
        workers.audio.AudioDecodeError: the file cannot be decoded (reason inside).
    """
    signal, _info = load_audio(path, sr=config.sample_rate, max_seconds=config.max_seconds)
    return extract_clip_features(signal, config)
