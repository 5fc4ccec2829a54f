"""The quiet console: third-party start-up noise filtered, real messages kept."""

from __future__ import annotations

import os
import subprocess
import sys

from orchestrator.quiet import is_noise, worker_environment

NOISE_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796132871.918108   11580 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
    "I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different "
    "computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "E0000 00:00:1.0 1 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to "
    "register factory for plugin cuDNN when one has already been registered",
    "E0000 00:00:1.0 1 cuda_executor.cc:1015] failed call to cuInit: UNKNOWN ERROR (303)",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ESC_VERBOSE")}
    return {**env, **extra}


def test_noise_patterns_match_startup_lines_only() -> None:
    assert all(is_noise(line) for line in NOISE_LINES)
    for real in (
        "error: no runs in /tmp/x",
        "UserWarning: Your input ran out of data",
        "WARNING:tensorflow:5 out of the last 5 calls to <function> triggered retracing",
        "E0000 00:00:1.0 1 op_kernel.cc:1830] OP_REQUIRES failed: OOM when allocating tensor",
    ):
        assert not is_noise(real), real


def test_filtered_stderr_replays_real_lines() -> None:
    noise = ("\n".join(NOISE_LINES) + "\n").encode()
    code = (
        "import os, sys\n"
        "from orchestrator.quiet import filtered_stderr\n"
        "with filtered_stderr():\n"
        f"    os.write(2, {noise!r})\n"
        "    os.write(2, b'a real error\\n')\n"
        "    print('python warning', file=sys.stderr)\n"
        "os.write(2, b'after\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    )
    assert proc.stderr == "a real error\npython warning\nafter\n"


def test_keras_command_prints_no_startup_noise(tmp_path) -> None:
    # export imports Keras (and TensorFlow) before it finds that there is no run
    # (cv-report, which did, no longer imports Keras: tests/test_architecture.py)
    args = [sys.executable, "-m", "orchestrator", "export", "--store", str(tmp_path / "s")]
    args += ["--format", "tflite", "--out", str(tmp_path / "out")]
    quiet = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=300)
    assert quiet.returncode == 2 and "no runs in" in quiet.stderr  # the real error shows
    assert not [line for line in (quiet.stdout + quiet.stderr).splitlines() if is_noise(line)]
    # the same command with TensorFlow's own level does print the notices (this build has some)
    loud = subprocess.run(
        args, capture_output=True, text=True, env=_env(TF_CPP_MIN_LOG_LEVEL="0"), timeout=300
    )
    assert [line for line in loud.stderr.splitlines() if is_noise(line)]


def test_workers_get_the_users_environment_back() -> None:
    assert "TF_CPP_MIN_LOG_LEVEL" not in worker_environment(
        {"TF_CPP_MIN_LOG_LEVEL": "2", "ESC_CONSOLE_SET_TF_LOG_LEVEL": "1", "A": "b"}
    )
    assert worker_environment({"TF_CPP_MIN_LOG_LEVEL": "0"}) == {"TF_CPP_MIN_LOG_LEVEL": "0"}
