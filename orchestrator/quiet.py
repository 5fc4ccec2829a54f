"""A quiet console: third-party start-up chatter kept out of the commands' output.

TensorFlow writes its start-up notices (absl's "All log messages before
absl::InitializeLog() is called...", the oneDNN and CPU-instruction notices, CUDA
plugin registration and driver probing) straight to file descriptor 2 from C++,
where Python's ``logging`` and ``warnings`` filters cannot reach them. Two measures:

1. :func:`quiet_environment` sets ``TF_CPP_MIN_LOG_LEVEL=2`` (C++ INFO and WARNING
   hidden, ERROR kept) unless the user set it, and remembers that it did, so
   :func:`worker_environment` can give the workers the user's environment back:
   worker logs keep everything.
2. :func:`load_keras_quietly` imports Keras (and TensorFlow, and lets it probe its
   devices) with descriptor 2 pointed at a temporary file, then replays every line
   that is not known start-up noise (:data:`NOISE`). Errors and real warnings raised
   during the import still show; anything printed afterwards is untouched.

``ESC_VERBOSE=1``, or a ``TF_CPP_MIN_LOG_LEVEL`` of the user's own, turns both off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

_MARKER = "ESC_CONSOLE_SET_TF_LOG_LEVEL"

# One pattern per kind of start-up line (TensorFlow 2.16-2.21, CPU and CUDA builds).
NOISE = re.compile(
    "|".join(
        (
            r"All log messages before absl::InitializeLog\(\) is called",
            r"oneDNN custom operations are on",
            r"TF_ENABLE_ONEDNN_OPTS",
            r"cpu_feature_guard\.cc",
            r"This TensorFlow binary is optimized to use available CPU instructions",
            r"To enable the following instructions: .* rebuild TensorFlow",
            r"rebuild TensorFlow with the appropriate compiler flags",
            r"Unable to register cu(DNN|FFT|BLAS) factory",
            r"computation placer already registered",
            r"failed call to cuInit",
            r"Could not find cuda drivers",
            r"could not open file to read NUMA node",
            r"cuda_(executor|diagnostics|driver|dnn|fft|blas)\.cc",
            r"TF-TRT Warning: Could not find TensorRT",
            r"Unable to register cuDNN|Unable to register cuFFT|Unable to register cuBLAS",
            r"port\.cc:\d+\] oneDNN",
            r"E0000 00:00:.*(cuda|cuDNN|cuFFT|cuBLAS)",
            r"Created TensorFlow Lite XNNPACK delegate for CPU",
        )
    )
)


def verbose() -> bool:
    """True when the user asked for everything (``ESC_VERBOSE=1``)."""
    return os.environ.get("ESC_VERBOSE", "").lower() in ("1", "true", "yes")


def quiet_environment(environ: os._Environ[str] | dict[str, str] = os.environ) -> None:
    """Hide TensorFlow's C++ INFO/WARNING logs in this process (unless set or verbose)."""
    if verbose() or "TF_CPP_MIN_LOG_LEVEL" in environ:
        return
    environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    environ[_MARKER] = "1"


def worker_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) without what :func:`quiet_environment` set.

    Workers started by a command log everything TensorFlow says, as they would when
    started by hand.
    """
    env = dict(os.environ if environ is None else environ)
    if env.pop(_MARKER, None):
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def is_noise(line: str) -> bool:
    """Whether ``line`` is a known third-party start-up notice."""
    return bool(NOISE.search(line))


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Point descriptor 2 at a temporary file; on exit replay its non-noise lines."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def load_keras_quietly() -> None:
    """Import Keras and initialise its backend's devices with the start-up noise filtered."""
    with filtered_stderr():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_logical_devices()


# Commands that load Keras; their TensorFlow start-up happens inside the filter.
KERAS_COMMANDS = frozenset({"submit-cv", "cv-report", "predict", "export"})


def quiet_console(argv: list[str]) -> None:
    """Everything a command needs before it starts: the environment and, if it uses
    Keras, a filtered import. ``argv`` is ``sys.argv[1:]``."""
    quiet_environment()
    if os.environ.get(_MARKER) != "1":
        return  # the user chose TensorFlow's log level (or ESC_VERBOSE): show what it says
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in KERAS_COMMANDS:
        load_keras_quietly()
