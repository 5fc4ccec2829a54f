"""Audio-domain variants of a clip (SB-CNN augmentations) as pure numpy functions.

Salamon and Bello (2017, "Deep convolutional neural networks and data augmentation for
environmental sound classification") trained on four deformations of every training
clip: time stretch, pitch shift (two ranges), dynamic range compression and a mix with
background audio, worth about 6 points on UrbanSound8K. The functions here compute
them on a decoded mono signal; ``workers.variant_featurize`` decodes, applies one
and extracts the windows; the store keeps each variant beside the originals
(``docs/store-layout.md``, "Variants").

Every function takes a signal ``y`` of shape ``(n_samples,)`` (float, mono) and returns
float32 of the **same length** (cropped or zero-padded at the end), so a variant has
the same window count as its clip. All are deterministic: the same input and
parameters give the same bytes (the only choice, the background's offset, comes from
an explicit ``seed``). No I/O.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("time_stretch", "pitch_shift", "drc", "background")

# Dynamic range compression presets: (threshold dB re full scale, ratio, attack ms,
# release ms, makeup gain dB). SB-CNN used four Dolby E presets ("music standard",
# "film standard", "speech", "radio"); these are simple stand-ins of the same spirit,
# from mild (music) to heavy (radio).
DRC_PRESETS: dict[str, tuple[float, float, float, float, float]] = {
    "music": (-30.0, 2.0, 10.0, 200.0, 6.0),
    "film": (-25.0, 3.0, 5.0, 150.0, 8.0),
    "speech": (-30.0, 4.0, 2.0, 100.0, 12.0),
    "radio": (-35.0, 8.0, 1.0, 60.0, 16.0),
}


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` cropped or zero-padded at the end to ``n`` samples, float32."""
    out = np.zeros(n, dtype=np.float32)
    k = min(n, len(y))
    out[:k] = y[:k]
    return out


def _as_mono(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"y must be mono, shape (n_samples,), got {y.shape}")
    return y


def _hann(n_fft: int) -> np.ndarray:
    return np.hanning(n_fft + 1)[:-1].astype(np.float32)


def _stft(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred STFT of ``y`` (zero padding), complex64 ``(n_frames, 1 + n_fft // 2)``."""
    pad = n_fft // 2
    padded = np.pad(y.astype(np.float32), (pad, pad + n_fft))
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    return np.fft.rfft(frames * _hann(n_fft), axis=1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Inverse of :func:`_stft` (``spec``: ``(n_frames, bins)``) by weighted overlap-add."""
    window = _hann(n_fft)
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * window
    n_frames = frames.shape[0]
    total = n_fft + hop * (n_frames - 1)
    out = np.zeros(total, dtype=np.float64)
    norm = np.zeros(total, dtype=np.float64)
    w2 = window.astype(np.float64) ** 2
    for t in range(n_frames):
        out[t * hop : t * hop + n_fft] += frames[t]
        norm[t * hop : t * hop + n_fft] += w2
    out /= np.where(norm > 1e-8, norm, 1.0)
    pad = n_fft // 2
    return out[pad : pad + length]


def _phase_vocoder(y: np.ndarray, rate: float, n_fft: int, hop: int) -> np.ndarray:
    """``y`` played ``rate`` times as fast, pitch kept: ``round(len(y) / rate)`` samples."""
    spec = _stft(y, n_fft, hop)
    n_frames, n_bins = spec.shape
    mag_all, phase_all = np.abs(spec), np.angle(spec)
    steps = np.arange(0.0, n_frames - 1, rate)
    left = np.floor(steps).astype(int)
    frac = (steps - left).astype(np.float32)[:, None]
    mag = (1 - frac) * mag_all[left] + frac * mag_all[left + 1]
    expected = np.linspace(0, np.pi * hop, n_bins, dtype=np.float32)[None, :]
    dphase = phase_all[left + 1] - phase_all[left] - expected
    dphase -= (2 * np.pi) * np.round(dphase / (2 * np.pi))
    advance = dphase + expected
    phase = np.empty_like(advance)
    phase[0] = phase_all[0]
    np.cumsum(advance[:-1], axis=0, out=phase[1:])
    phase[1:] += phase_all[0]
    stretched = np.empty(mag.shape, dtype=np.complex64)
    stretched.real = mag * np.cos(phase)
    stretched.imag = mag * np.sin(phase)
    return _istft(stretched, n_fft, hop, round(len(y) / rate))


def time_stretch(
    y: np.ndarray, *, rate: float, n_fft: int = 2048, hop_length: int = 512
) -> np.ndarray:
    """Play ``y`` ``rate`` times as fast without changing its pitch (phase vocoder).

    Args:
        y: Mono signal, ``(n_samples,)``.
        rate: Speed factor, > 0 (0.81: 19 % slower; 1.23: 23 % faster).
        n_fft: STFT frame length in samples.
        hop_length: STFT hop in samples.

    Returns:
        ``(n_samples,)`` float32: the stretched signal, cropped (``rate < 1``) or
        zero-padded at the end (``rate > 1``) to the input's length.
    """
    y = _as_mono(y)
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if len(y) == 0 or rate == 1.0:
        return y.astype(np.float32)
    return _fit_length(_phase_vocoder(y, float(rate), n_fft, hop_length), len(y))


def resample_fourier(y: np.ndarray, n_out: int) -> np.ndarray:
    """``y`` resampled to ``n_out`` samples over the same duration (FFT method).

    Args:
        y: Mono signal, ``(n_samples,)``.
        n_out: Output length in samples, >= 1.

    Returns:
        ``(n_out,)`` float64: the band-limited interpolation (frequencies above the
        lower Nyquist rate dropped).
    """
    y = _as_mono(y)
    n = len(y)
    spec = np.fft.rfft(y)
    keep = min(len(spec), n_out // 2 + 1)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    out[:keep] = spec[:keep]
    return np.fft.irfft(out, n=n_out) * (n_out / max(n, 1))


@functools.lru_cache(maxsize=1)
def _smooth_numbers() -> np.ndarray:
    """Sorted 7-smooth numbers (2^a 3^b 5^c 7^d) up to 2**26: sizes numpy's FFT does fast."""
    limit = 2**26
    out = []
    p2 = 1
    while p2 <= limit:
        p3 = p2
        while p3 <= limit:
            p5 = p3
            while p5 <= limit:
                p7 = p5
                while p7 <= limit:
                    out.append(p7)
                    p7 *= 7
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return np.array(sorted(out), dtype=np.int64)


def _smooth_at_least(n: int) -> int:
    table = _smooth_numbers()
    k = int(np.searchsorted(table, n))
    return int(table[k]) if k < len(table) else int(n)


def _smooth_nearest(x: float) -> int:
    table = _smooth_numbers()
    k = int(np.searchsorted(table, x))
    if k >= len(table):
        return round(x)
    below = int(table[k - 1]) if k > 0 else int(table[k])
    above = int(table[k])
    return below if x - below <= above - x else above


def pitch_shift(
    y: np.ndarray, *, semitones: float, n_fft: int = 2048, hop_length: int = 512
) -> np.ndarray:
    """Shift ``y``'s pitch by ``semitones`` keeping its duration.

    Time stretch by ``rate = 2 ** (-semitones / 12)`` (phase vocoder) to ``m`` samples,
    then resample those to ``n`` samples (:func:`resample_fourier`) and crop to the
    input's length: every frequency is multiplied by ``m / n``. ``n`` (the input's
    length or just above) and ``m`` (nearest to ``n / rate``) are 7-smooth numbers, for
    which the FFT is fast (about 20 times faster than at a length with a large prime
    factor); the ratio then differs from ``2 ** (semitones / 12)`` by less than 0.1 %
    (0.02 semitone) at clip lengths of a second or more.

    Args:
        y: Mono signal, ``(n_samples,)``.
        semitones: Shift in semitones (e.g. -3.5 .. 3.5; 12 = one octave up).
        n_fft: STFT frame length of the stretch, in samples.
        hop_length: STFT hop of the stretch, in samples.

    Returns:
        ``(n_samples,)`` float32.
    """
    y = _as_mono(y)
    if len(y) == 0 or semitones == 0:
        return y.astype(np.float32)
    rate = 2.0 ** (-float(semitones) / 12.0)
    n = _smooth_at_least(len(y))
    m = max(1, _smooth_nearest(n / rate))
    stretched = _fit_length(_phase_vocoder(y, n / m, n_fft, hop_length), m)
    return _fit_length(resample_fourier(stretched, n), len(y))


def dynamic_range_compression(
    y: np.ndarray,
    *,
    sr: int,
    threshold_db: float,
    ratio: float,
    attack_ms: float,
    release_ms: float,
    makeup_db: float = 0.0,
    block_ms: float = 5.0,
) -> np.ndarray:
    """A simple feed-forward compressor: levels above ``threshold_db`` reduced by ``ratio``.

    The level is the RMS of blocks of ``block_ms``, in dB re full scale (1.0), smoothed
    by one-pole attack/release filters (level rising: ``attack_ms``; falling:
    ``release_ms``). The gain of a block is ``-(level - threshold) * (1 - 1/ratio)``
    dB above the threshold, 0 below, plus ``makeup_db``; it is interpolated linearly
    between block centres and applied per sample. The output is clipped to [-1, 1].

    Args:
        y: Mono signal, ``(n_samples,)``, full scale 1.0.
        sr: Sample rate in Hz.
        threshold_db: Level above which compression starts, dBFS (e.g. -30).
        ratio: Input dB per output dB above the threshold, >= 1 (1: no compression).
        attack_ms, release_ms: Time constants of the level detector, ms, > 0.
        makeup_db: Gain added everywhere, dB.
        block_ms: Block length of the level detector, ms.

    Returns:
        ``(n_samples,)`` float32.
    """
    y = _as_mono(y)
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    n = len(y)
    if n == 0:
        return y.astype(np.float32)
    block = max(1, round(sr * block_ms / 1000.0))
    n_blocks = -(-n // block)
    padded = np.zeros(n_blocks * block)
    padded[:n] = y
    power = np.mean(padded.reshape(n_blocks, block) ** 2, axis=1)
    level = 10.0 * np.log10(np.maximum(power, 1e-12))
    a_att = np.exp(-block_ms / max(attack_ms, 1e-3))
    a_rel = np.exp(-block_ms / max(release_ms, 1e-3))
    smooth = np.empty_like(level)
    state = level[0]
    for i, value in enumerate(level.tolist()):
        coeff = a_att if value > state else a_rel
        state = coeff * state + (1.0 - coeff) * value
        smooth[i] = state
    gain_db = -np.maximum(smooth - threshold_db, 0.0) * (1.0 - 1.0 / ratio) + makeup_db
    centres = (np.arange(n_blocks) + 0.5) * block
    gain = 10.0 ** (np.interp(np.arange(n), centres, gain_db) / 20.0)
    return np.clip(y * gain, -1.0, 1.0).astype(np.float32)


def drc_preset(y: np.ndarray, *, sr: int, preset: str) -> np.ndarray:
    """:func:`dynamic_range_compression` with one of :data:`DRC_PRESETS` (``music``...)."""
    if preset not in DRC_PRESETS:
        raise ValueError(f"unknown DRC preset {preset!r}; one of {sorted(DRC_PRESETS)}")
    threshold, ratio, attack, release, makeup = DRC_PRESETS[preset]
    return dynamic_range_compression(
        y,
        sr=sr,
        threshold_db=threshold,
        ratio=ratio,
        attack_ms=attack,
        release_ms=release,
        makeup_db=makeup,
    )


def mix_background(
    y: np.ndarray, background: np.ndarray, *, snr_db: float, offset: int = 0
) -> np.ndarray:
    """``y`` plus ``background`` scaled so that the signal-to-noise ratio is ``snr_db``.

    The background is read from sample ``offset`` (modulo its length) and repeated as
    needed to cover ``y``. SNR is the ratio of mean powers over the whole clip:
    ``10 * log10(mean(y**2) / mean((g * b)**2)) == snr_db``. A silent ``y`` or
    background is returned unchanged (no SNR defines a gain).

    Args:
        y: Mono signal, ``(n_samples,)``.
        background: Mono signal, ``(m,)``, any length >= 0, same sample rate.
        snr_db: Signal-to-noise ratio in dB (e.g. 10: background 10 dB below).
        offset: First background sample, >= 0.

    Returns:
        ``(n_samples,)`` float32 (not clipped).
    """
    y = _as_mono(y)
    b = _as_mono(background)
    n = len(y)
    if n == 0 or len(b) == 0:
        return y.astype(np.float32)
    index = (int(offset) + np.arange(n)) % len(b)
    b = b[index]
    p_y, p_b = float(np.mean(y**2)), float(np.mean(b**2))
    if p_y <= 0 or p_b <= 0:
        return y.astype(np.float32)
    gain = np.sqrt(p_y / (p_b * 10.0 ** (float(snr_db) / 10.0)))
    return (y + gain * b).astype(np.float32)


def stable_int(*parts: Any) -> int:
    """A 63-bit integer from ``parts`` that is the same in every process (SHA-1 of JSON)."""
    digest = hashlib.sha1(json.dumps(list(parts), sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def background_order(clip_id: str, candidates: Sequence[str], *, variant: str) -> list[int]:
    """Indices into ``candidates`` (clip ids of the clip's fold), in the order to try them.

    A permutation drawn from ``clip_id``, ``variant`` and each candidate's id, the same
    in every process; the clip itself is left out. The first candidate whose audio
    decodes is the background (an undecodable one is skipped the same way by every
    worker).
    """
    others = [i for i, c in enumerate(candidates) if c != clip_id]
    return sorted(others, key=lambda i: stable_int("background", clip_id, variant, candidates[i]))


def choose_background(clip_id: str, candidates: Sequence[str], *, variant: str) -> int | None:
    """The first of :func:`background_order`; ``None`` when there is no other candidate."""
    order = background_order(clip_id, candidates, variant=variant)
    return order[0] if order else None


@dataclass(frozen=True)
class Variant:
    """One variant of every clip: a named transform with fixed parameters.

    Attributes:
        name: Its name in the store (``variants/<name>``): lower-case letters, digits,
            ``_.+-`` (``contract.wire.VARIANT_NAME``).
        kind: ``time_stretch`` (params ``rate``), ``pitch_shift`` (``semitones``),
            ``drc`` (``preset``) or ``background`` (``snr_db``, ``seed``).
        params: The parameters as sorted ``(key, value)`` pairs (JSON scalars).
    """

    name: str
    kind: str
    params: tuple[tuple[str, Any], ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown variant kind {self.kind!r}; one of {KINDS}")

    @classmethod
    def make(cls, name: str, kind: str, **params: Any) -> Variant:
        return cls(name, kind, tuple(sorted(params.items())))

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def needs_background(self) -> bool:
        return self.kind == "background"

    def to_dict(self) -> dict[str, Any]:
        """The spec stored in the variant group's ``variant`` attribute."""
        return {"name": self.name, "kind": self.kind, "params": self.param_dict}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        return cls.make(str(data["name"]), str(data["kind"]), **dict(data["params"]))

    def apply(
        self,
        y: np.ndarray,
        *,
        sr: int,
        clip_id: str = "",
        background: np.ndarray | None = None,
    ) -> np.ndarray:
        """This variant of ``y`` (``(n_samples,)`` at ``sr`` Hz): ``(n_samples,)`` float32.

        ``background`` (kind ``background`` only) is the chosen clip's signal; its
        offset is drawn from ``clip_id``, the name and the ``seed`` parameter. Without a
        background (no other clip in the fold) the clip is returned unchanged.
        """
        p = self.param_dict
        if self.kind == "time_stretch":
            return time_stretch(y, rate=float(p["rate"]))
        if self.kind == "pitch_shift":
            return pitch_shift(y, semitones=float(p["semitones"]))
        if self.kind == "drc":
            return drc_preset(y, sr=sr, preset=str(p["preset"]))
        if background is None or len(background) == 0:
            return _as_mono(y).astype(np.float32)
        offset = stable_int("offset", clip_id, self.name, p.get("seed", 0)) % len(background)
        return mix_background(y, background, snr_db=float(p["snr_db"]), offset=offset)


def _ts(rate: float) -> Variant:
    return Variant.make(f"ts_{rate:g}", "time_stretch", rate=rate)


def _ps(semitones: float) -> Variant:
    return Variant.make(f"ps_{semitones:+g}", "pitch_shift", semitones=semitones)


def _drc(preset: str) -> Variant:
    return Variant.make(f"drc_{preset}", "drc", preset=preset)


def _bg(k: int, snr_db: float) -> Variant:
    return Variant.make(f"bg_{k}", "background", snr_db=snr_db, seed=k)


# SB-CNN's full set: TS {0.81, 0.93, 1.07, 1.23}, PS1 {-2, -1, 1, 2}, PS2 {-3.5, -2.5,
# 2.5, 3.5}, DRC (four presets), BG (three mixes; here other clips of the same fold).
VARIANT_SETS: dict[str, tuple[Variant, ...]] = {
    "none": (),
    "light": (_ts(0.93), _ts(1.07), _ps(-2), _ps(2), _bg(1, 10.0)),
    "sbcnn": (
        *(_ts(r) for r in (0.81, 0.93, 1.07, 1.23)),
        *(_ps(s) for s in (-2, -1, 1, 2)),
        *(_ps(s) for s in (-3.5, -2.5, 2.5, 3.5)),
        *(_drc(p) for p in ("music", "film", "speech", "radio")),
        _bg(1, 10.0),
        _bg(2, 6.0),
        _bg(3, 3.0),
    ),
}


def variant_set(spec: str) -> tuple[Variant, ...]:
    """Variants of ``spec``: a set name (``none``, ``light``, ``sbcnn``), or a comma-separated
    list of set names and variant names of :data:`VARIANT_SETS` (``light,drc_radio``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    by_name = {v.name: v for vs in VARIANT_SETS.values() for v in vs}
    chosen: dict[str, Variant] = {}
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part in VARIANT_SETS:
            chosen.update((v.name, v) for v in VARIANT_SETS[part])
        elif part in by_name:
            chosen[part] = by_name[part]
        else:
            raise ValueError(
                f"unknown variant set or variant {part!r}: sets {sorted(VARIANT_SETS)}, "
                f"variants {sorted(by_name)}"
            )
    return tuple(chosen[k] for k in sorted(chosen))


__all__ = [
    "DRC_PRESETS",
    "KINDS",
    "VARIANT_SETS",
    "Variant",
    "background_order",
    "choose_background",
    "drc_preset",
    "dynamic_range_compression",
    "mix_background",
    "pitch_shift",
    "resample_fourier",
    "stable_int",
    "time_stretch",
    "variant_set",
]
