"""Measure how fast the report of a 100,000-point detection opens in headless Chromium.

The embeddings are synthetic and carry a planted attractor: ten classes, each
a Gaussian blob in 32 dimensions, and 5% of every class moved into one tight
blob that the model "predicts" as class 0. ``AttractorDetector`` runs on all
rows with its defaults (above 50,000 rows it clusters a stratified sample and
places the other rows), and ``mitigate.detect_command`` writes the detect-kind
report exactly as ``mitigate detect`` does. The scatter plots of the page show
at most 20,000 points, a sample stratified by cluster.

Two load times are measured, each in a fresh browser with a new profile:

- **page load**: from the ``Page.navigate`` command to the page's ``load``
  event, over the DevTools pipe (``mitigate.report.browser.check_page``), with
  the console errors, failed requests and missing images of the same load;
- **cold start**: the wall time of a whole ``chromium --headless ...
  --screenshot`` process (start, load, screenshot, exit), the figure a person
  opening the file in a new browser would see at most.

Usage::

    python benchmarks/bench_report.py                   # 100,000 points, 5 loads of each kind
    python benchmarks/bench_report.py --n-samples 20000 --repeats 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mitigate.report.browser import CHROMIUM_FLAGS, WINDOW_SIZE, check_page, find_chromium

TARGET_SECONDS = 5.0
N_CLASSES = 10
N_DIMS = 32
ATTRACTOR_SHARE = 0.05


def planted_embeddings(n_samples: int, seed: int = 0):
    """Return embeddings, labels and predictions with one planted attractor (5% of every class)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(N_CLASSES + 1, N_DIMS))
    labels = rng.integers(0, N_CLASSES, size=n_samples)
    embeddings = centres[labels] + rng.normal(size=(n_samples, N_DIMS))
    predictions = labels.copy()
    planted = rng.random(n_samples) < ATTRACTOR_SHARE
    embeddings[planted] = centres[-1] + 0.3 * rng.normal(size=(int(planted.sum()), N_DIMS))
    predictions[planted] = 0
    return embeddings.astype(np.float32), labels, predictions


def write_report(out_dir: Path, n_samples: int) -> dict:
    """Detect attractors in planted embeddings and write the detect-kind report into ``out_dir``."""
    from mitigate.audit import environment_info
    from mitigate.detect import AttractorDetector
    from mitigate.detect_command import detect_report, write_detect_report

    embeddings, labels, predictions = planted_embeddings(n_samples)
    started = time.perf_counter()
    detector = AttractorDetector(random_state=0).fit(embeddings, labels, predictions)
    detect_seconds = time.perf_counter() - started

    started = time.perf_counter()
    class_names = [f"class {k}" for k in range(N_CLASSES)]
    audit = detect_report(detector, labels=labels, predictions=predictions, class_names=class_names,
                          source=f"benchmarks/bench_report.py: {n_samples:,} planted embeddings",
                          environment=environment_info())
    write_detect_report(out_dir, audit, detector, label_codes=labels)
    render_seconds = time.perf_counter() - started
    return {
        "detect_seconds": round(detect_seconds, 1),
        "render_seconds": round(render_seconds, 1),
        "n_attractors": len(audit["attractors"]),
        "verdict": audit["verdict"],
        "page_bytes": (out_dir / "report.html").stat().st_size,
    }


def cold_start_seconds(page: Path, chromium: str) -> float:
    """Time one ``chromium --headless --screenshot`` process from start to exit."""
    with tempfile.TemporaryDirectory(prefix="bench-report-") as profile:
        width, height = WINDOW_SIZE
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   f"--screenshot={Path(profile) / 'shot.png'}", page.resolve().as_uri()]
        started = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
        return time.perf_counter() - started


def machine() -> dict:
    """Describe the machine: CPU model and count, load average, Python and chromium versions."""
    model = "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    chromium = find_chromium()
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "chromium": version,
        "date": datetime.date.today().isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000, help="rows of the detection (default 100000)")
    parser.add_argument("--repeats", type=int, default=5, help="loads of each kind (default 5)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the report and results.json (default: a temporary folder)")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("bench_report: chromium not found; install Debian's chromium package", file=sys.stderr)
        return 2

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-report-"))
    results = {"machine": machine(), "n_samples": args.n_samples}
    print(f"writing the report of a {args.n_samples:,}-point detection into {out} ...", flush=True)
    results["report"] = write_report(out, args.n_samples)
    print(json.dumps(results["report"]), flush=True)

    page = out / "report.html"
    loads, cold, problems = [], [], []
    for _ in range(args.repeats):
        check = check_page(page)
        loads.append(check.load_seconds)
        problems += check.problems
        cold.append(cold_start_seconds(page, chromium))
    results["page_load_seconds"] = [round(value, 3) for value in loads]
    results["cold_start_seconds"] = [round(value, 3) for value in cold]
    results["problems"] = sorted(set(problems))
    results["images"] = len(check.images)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print(json.dumps(results, indent=2))
    print(f"page load: median {statistics.median(loads):.2f} s, max {max(loads):.2f} s; "
          f"cold start: median {statistics.median(cold):.2f} s, max {max(cold):.2f} s; "
          f"target {TARGET_SECONDS:.0f} s: {'met' if max(cold) < TARGET_SECONDS else 'missed'}; "
          f"problems: {len(results['problems'])}")
    return 0 if max(cold) < TARGET_SECONDS and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
