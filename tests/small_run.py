"""A reduced Fashion-MNIST run, made once per test session and shared by the tests that read its output.

The run uses 20,000 training and 2,000 audit images, logs to TensorBoard and
is started as a subprocess with ``--quiet``, so its stderr is what a pipeline
would see (no terminal). It takes about 3 minutes of CPU time. Without
Debian's dataset-fashion-mnist it falls back to the digits data and finds
no attractor, so the tests that need one skip with that reason.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL_RUN_SETTINGS = ["data.train_limit=20000", "data.audit_limit=2000", "train.log_with='tensorboard'"]


def small_run(tmp_path_factory) -> Path:
    """Return the output folder of the shared run, running it first if no test has yet."""
    out = tmp_path_factory.getbasetemp() / "small_run"
    stderr_file = tmp_path_factory.getbasetemp() / "small_run.stderr"
    if not (out / "report.json").is_file():
        command = [sys.executable, "-m", "mitigate", "run", str(ROOT / "recipes/fashion_patch.toml"),
                   "--out", str(out), "--quiet"]
        for setting in SMALL_RUN_SETTINGS:
            command += ["--set", setting]
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)
        stderr_file.write_text(result.stderr, encoding="utf-8")
        assert result.returncode == 0, result.stderr[-3000:]
    return out


def small_run_stderr(tmp_path_factory) -> str:
    """Return what the shared run wrote to stderr."""
    small_run(tmp_path_factory)
    return (tmp_path_factory.getbasetemp() / "small_run.stderr").read_text(encoding="utf-8")
