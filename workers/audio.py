"""Audio loading: any file libsndfile reads -> mono float32 at the target rate.

Equivalent to ``librosa.load(path, sr=sr, duration=max_seconds)`` (soundfile read,
mean downmix, ``soxr`` "HQ" resampling, length fixed to ``ceil(n * sr / orig_sr)``)
but with errors a person can act on, and a cap on how much of a long file is read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from contract.errors import EscError


class AudioDecodeError(EscError, ValueError):
    """A file could not be turned into audio samples.

    Attributes:
        path: The file, as given.
        reason: What went wrong, as a sentence for a person.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[AudioDecodeError], tuple[str, str]]:
        # Celery pickles exceptions raised in workers; keep both attributes.
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`load_audio` found in a file.

    Attributes:
        orig_sample_rate: The file's sample rate in Hz.
        channels: The file's channel count.
        subtype: libsndfile's sample format name, e.g. ``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``.
        orig_frames: Frames (samples per channel) in the file according to its header.
        frames_read: Frames actually read (at most ``ceil(max_seconds * orig_sample_rate)``).
        truncated: The file is longer than ``max_seconds`` and only its start was read.
    """

    orig_sample_rate: int
    channels: int
    subtype: str
    orig_frames: int
    frames_read: int
    truncated: bool


def _libsndfile_reason(exc: Exception) -> str:
    message = str(exc)
    # soundfile prefixes the libsndfile message with "Error opening '<path>': ".
    if ": " in message and message.startswith("Error opening"):
        message = message.rsplit(": ", 1)[-1]
    message = message.strip().rstrip(".")
    if "Format not recognised" in message:
        return f"not an audio file (libsndfile: {message})"
    return f"cannot decode audio (libsndfile: {message})"


def load_audio(
    path: str | os.PathLike[str],
    *,
    sr: int = 22050,
    max_seconds: float | None = 4.0,
) -> tuple[np.ndarray, AudioInfo]:
    """Read an audio file as mono float32 at ``sr`` Hz.

    Reads any format libsndfile reads (8/16/24/32-bit PCM and float WAV, FLAC, OGG
    Vorbis, ...), any channel count and rate. Channels are averaged (as
    ``librosa.to_mono``), then the signal is resampled with ``soxr`` quality "HQ"
    (librosa's default ``soxr_hq``) unless the rates already agree; the result has
    ``ceil(frames_read * sr / orig_sr)`` samples, like ``librosa.load``.

    Cap: only the first ``ceil(max_seconds * orig_sr)`` frames are read, so a
    10-minute file costs the same memory and time as a ``max_seconds`` one; the
    output is then cut to ``ceil(max_seconds * sr)`` samples.

    Args:
        path: File to read.
        sr: Output sample rate in Hz.
        max_seconds: Read at most this many seconds (``None``: the whole file).

    Returns:
        ``(y, info)``: ``y`` is float32 of shape ``(n_samples,)`` at ``sr`` Hz.

    Raises:
        AudioDecodeError: The file is missing, empty, not audio, unreadable, has no
            frames, or contains NaN/infinite samples.
        ValueError: ``sr`` or ``max_seconds`` is not positive.
    """
    if isinstance(sr, bool) or not isinstance(sr, int | np.integer) or sr < 1:
        raise ValueError(f"sr must be a positive integer, got {sr!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}")

    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise AudioDecodeError(path, "no such file") from None
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot access file ({exc.strerror})") from exc
    if size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes)")

    try:
        with sf.SoundFile(path) as handle:
            orig_sr = int(handle.samplerate)
            channels = int(handle.channels)
            subtype = str(handle.subtype)
            orig_frames = int(handle.frames)
            cap = orig_frames if max_seconds is None else math.ceil(max_seconds * orig_sr)
            wanted = min(orig_frames, cap)
            data = handle.read(frames=wanted, dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise AudioDecodeError(path, _libsndfile_reason(exc)) from exc
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioDecodeError(path, f"cannot decode audio ({exc})") from exc
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc

    frames_read = int(data.shape[0])
    if orig_frames == 0 or frames_read == 0:
        raise AudioDecodeError(path, "no audio frames")
    if frames_read < wanted:
        raise AudioDecodeError(
            path, f"header claims {orig_frames} frames but only {frames_read} could be read"
        )
    if not np.isfinite(data).all():
        raise AudioDecodeError(path, "contains NaN or infinite samples")

    mono = data[:, 0].copy() if channels == 1 else np.mean(data, axis=1, dtype=np.float32)
    if orig_sr != sr:
        try:
            y = soxr.resample(mono, orig_sr, sr, quality="HQ")
        except (ValueError, RuntimeError) as exc:
            reason = f"cannot resample {orig_sr} Hz to {sr} Hz ({exc})"
            raise AudioDecodeError(path, reason) from exc
        # Same float expression as librosa.resample, so the lengths agree to the sample.
        n_out = math.ceil(frames_read * (float(sr) / orig_sr))
        y = np.asarray(y, dtype=np.float32)
        y = y[:n_out] if y.size >= n_out else np.pad(y, (0, n_out - y.size))
    else:
        y = mono
    if max_seconds is not None:
        y = y[: math.ceil(max_seconds * sr)]

    info = AudioInfo(
        orig_sample_rate=orig_sr,
        channels=channels,
        subtype=subtype,
        orig_frames=orig_frames,
        frames_read=frames_read,
        truncated=orig_frames > wanted,
    )
    return np.ascontiguousarray(y), info
