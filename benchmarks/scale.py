"""Time attractor detection at 10k, 100k and 1M embeddings, and the extraction hook.

Detection runs on planted 384-dimensional embeddings. There are 10 Gaussian
class blobs, with centres drawn with standard deviation ``CENTRE_SCALE`` per
dimension and unit noise. Their predictions are correct except for
``FLIP_SHARE`` random flips. The planted attractor is ``ATTRACTOR_SHARE`` of
the rows of every class, moved into one tight blob (noise 0.3) that the model
predicts as class 0. Detection F1 compares the rows flagged as attractor
members with the planted rows.

Two pipelines are timed, each in its own process so that its peak resident
memory (``ru_maxrss``) is its own:

- ``toolkit``: ``AttractorDetector(random_state=0)`` with its defaults (PCA
  to 50 dimensions; above 50,000 rows the stratified-sample path of
  ``mitigate.scale``).
- ``naive``: UMAP and HDBSCAN on every row of the raw embeddings
  (``pca_dims=None, large_n_threshold=None``), then the ACS of every cluster
  from exact pairwise squared distances (blocks of the distance matrix)
  instead of the closed form. The flags use the closed-form ACS; the largest
  relative difference between the two is recorded as a check.

Numba compiles umap-learn and pynndescent functions on first use in each
process (over a minute on a loaded 2-core machine). Each process therefore
first fits the same pipeline on 6,000 planted rows, untimed, and reports that
warm-up separately. The embeddings are read from a ``.npy`` memory map.

Usage::

    python benchmarks/scale.py detect --sizes 10000 100000 1000000 \\
        --naive-sizes 10000 100000 --limit-min 30 --work /tmp/scale_bench
    python benchmarks/scale.py hook --repeats 7

Results go to ``--results`` (JSON lines) and to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_DIMS = 384
N_CLASSES = 10
CENTRE_SCALE = 1.5
ATTRACTOR_SHARE = 0.05
ATTRACTOR_NOISE = 0.3
FLIP_SHARE = 0.03
GENERATE_BLOCK_ROWS = 100_000
WARM_UP_ROWS = 6_000
# 256 rows x 100,000 columns of float64 distances is 200 MB per block.
PAIRWISE_BLOCK_ROWS = 256


# -- planted data --------------------------------------------------------------

def generate(path: Path, n_rows: int, *, seed: int = 0) -> None:
    """Write planted embeddings to ``path`` (.npy) and targets to ``path.targets.npz``."""
    rng = np.random.default_rng(seed)
    centres = (CENTRE_SCALE * rng.standard_normal((N_CLASSES + 1, N_DIMS))).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, n_rows)
    planted = rng.random(n_rows) < ATTRACTOR_SHARE
    predictions = labels.copy()
    flipped = ~planted & (rng.random(n_rows) < FLIP_SHARE)
    predictions[flipped] = (labels[flipped] + rng.integers(1, N_CLASSES, flipped.sum())) % N_CLASSES
    predictions[planted] = 0

    embeddings = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, N_DIMS))
    for start in range(0, n_rows, GENERATE_BLOCK_ROWS):
        stop = min(n_rows, start + GENERATE_BLOCK_ROWS)
        block = centres[labels[start:stop]] + rng.standard_normal((stop - start, N_DIMS), dtype=np.float32)
        moved = planted[start:stop]
        block[moved] = centres[-1] + ATTRACTOR_NOISE * rng.standard_normal(
            (int(moved.sum()), N_DIMS), dtype=np.float32)
        embeddings[start:stop] = block
    embeddings.flush()
    np.savez(_targets_path(path), labels=labels, predictions=predictions, planted=planted)


def _targets_path(path: Path) -> Path:
    return path.with_name(path.name + ".targets.npz")


def load(path: Path):
    """Return the memory-mapped embeddings, labels, predictions and planted mask."""
    targets = np.load(_targets_path(path))
    return np.load(path, mmap_mode="r"), targets["labels"], targets["predictions"], targets["planted"]


# -- one pipeline in one process -----------------------------------------------

def make_detector(method: str):
    from mitigate.detect import AttractorDetector

    if method == "naive":
        return AttractorDetector(random_state=0, pca_dims=None, large_n_threshold=None)
    return AttractorDetector(random_state=0)


def warm_up_detectors(method: str) -> list:
    """Return detectors that compile every numba function ``method`` uses, on few rows."""
    from mitigate.detect import AttractorDetector

    if method == "naive":
        return [make_detector("naive")]
    # The default path (all rows) and, with a low threshold, the sampled path.
    return [make_detector("toolkit"),
            AttractorDetector(random_state=0, large_n_threshold=WARM_UP_ROWS // 2, sample_size=2_000)]


def pairwise_acs(x: np.ndarray, members: np.ndarray, labels: np.ndarray) -> float:
    """Class-matched ACS from exact pairwise squared distances, by blocks of rows.

    The reference is the mixture of the member set's classes in its
    proportions: its mean pairwise squared distance is ``sum_{k,l} w_k w_l
    D_kl``, with ``D_kl`` the mean squared distance between rows of classes k
    and l. ACS is the ratio of that mean to the members' mean pairwise
    squared distance (the factor one half of the variance cancels).
    """
    from sklearn.metrics.pairwise import euclidean_distances

    member_rows = np.flatnonzero(members)
    classes, counts = np.unique(labels[member_rows], return_counts=True)
    weights = counts / counts.sum()
    reference_rows = np.flatnonzero(np.isin(labels, classes))
    codes = np.searchsorted(classes, labels[reference_rows])
    sizes = np.bincount(codes, minlength=classes.size).astype(np.float64)

    def pair_sums(rows, row_codes, n_codes):
        sums = np.zeros((n_codes, n_codes))
        one_hot = np.eye(n_codes)[row_codes]
        points = np.asarray(x[rows], dtype=np.float64)
        for start in range(0, rows.size, PAIRWISE_BLOCK_ROWS):
            block = euclidean_distances(points[start:start + PAIRWISE_BLOCK_ROWS], points, squared=True)
            sums += one_hot[start:start + PAIRWISE_BLOCK_ROWS].T @ block @ one_hot
        return sums

    between = pair_sums(reference_rows, codes, classes.size) / np.outer(sizes, sizes)
    reference = float(weights @ between @ weights)
    inside = pair_sums(member_rows, np.zeros(member_rows.size, dtype=np.int64), 1)[0, 0]
    spread = inside / member_rows.size**2
    return reference / spread


def detect_once(method: str, data: Path, result_path: Path) -> None:
    """Warm up, fit, score F1 and write the result; the naive method adds pairwise ACS."""
    from mitigate import scores

    record = {"method": method, "load_start": os.getloadavg()[0]}

    def save(**values):
        record.update(values)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        record["peak_rss_gb"] = usage.ru_maxrss / 1e6
        record["cpu_s"] = usage.ru_utime + usage.ru_stime
        result_path.write_text(json.dumps(record) + "\n")

    started = time.perf_counter()
    warm_path = data.with_name(f"warm_up_{WARM_UP_ROWS}.npy")
    if not warm_path.exists():
        generate(warm_path, WARM_UP_ROWS, seed=1)
    warm_x, warm_labels, warm_predictions, _ = load(warm_path)
    for detector in warm_up_detectors(method):
        detector.fit(warm_x, warm_labels, warm_predictions)
    save(warm_up_s=time.perf_counter() - started, stage="warm-up done")
    record["warm_up_cpu_s"] = record["cpu_s"]

    x, labels, predictions, planted = load(data)
    cpu_before = record["cpu_s"]
    started = time.perf_counter()
    detector = make_detector(method).fit(x, labels, predictions)
    detect_s = time.perf_counter() - started
    found = np.zeros(len(labels), dtype=bool)
    for attractor in detector.attractors_:
        found[attractor.members] = True
    save(n_rows=int(x.shape[0]), detect_s=detect_s, f1=scores.precision_recall_f1(found, planted),
         n_clusters=len(detector.clusters_), n_attractors=len(detector.attractors_),
         path="sampled" if "sample" in detector.settings_ else "all rows", stage="detection done")
    record["detect_cpu_s"] = record["cpu_s"] - cpu_before

    if method == "naive":
        started = time.perf_counter()
        worst = 0.0
        label_codes = np.unique(labels, return_inverse=True)[1]
        for cluster in detector.clusters_ + detector.attractors_:
            mask = np.zeros(len(labels), dtype=bool)
            mask[cluster.members] = True
            exact = pairwise_acs(x, mask, label_codes)
            worst = max(worst, abs(exact - cluster.acs) / cluster.acs)
        pairwise_s = time.perf_counter() - started
        save(pairwise_acs_s=pairwise_s, pairwise_vs_closed_form_max_rel_diff=worst,
             total_s=record["detect_s"] + pairwise_s, stage="pairwise ACS done")
    else:
        save(total_s=record["detect_s"], stage="done")
    save(load_end=os.getloadavg()[0])


# -- driver ------------------------------------------------------------------------

def run_detection(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = Path(args.results)
    plan = [(n, "toolkit") for n in args.sizes] + [(n, "naive") for n in args.naive_sizes]
    for n_rows, method in sorted(plan, key=lambda item: (item[0], item[1] != "naive")):
        data = work / f"planted_{n_rows}.npy"
        if not data.exists():
            subprocess.run([sys.executable, __file__, "_generate", str(data), str(n_rows)], check=True)
        result_path = work / f"result_{method}_{n_rows}.json"
        result_path.unlink(missing_ok=True)
        command = [sys.executable, __file__, "_detect", method, str(data), str(result_path)]
        limit_s = args.limit_min * 60
        started = time.perf_counter()
        try:
            subprocess.run(command, check=True, timeout=limit_s)
            finished = True
        except subprocess.TimeoutExpired:
            finished = False
        record = json.loads(result_path.read_text()) if result_path.exists() else {"method": method}
        record.update(n_rows=n_rows, finished=finished, wall_s=time.perf_counter() - started,
                      limit_min=args.limit_min, date=str(datetime.date.today()))
        with results.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def run_hook(args) -> None:
    """Compare extract_images (forward hook) with the bare forward pass on Fashion-MNIST."""
    import torch

    from mitigate.data import load_fashion_mnist
    from mitigate.extract import extract_images
    from mitigate.models import SmallCNN

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = load_fashion_mnist().audit_images
    model = SmallCNN(num_classes=10, embedding_dim=64, image_size=images.shape[-1]).eval()

    @torch.no_grad()
    def bare():
        outputs = []
        for start in range(0, images.shape[0], args.batch_size):
            logits = model(torch.from_numpy(images[start:start + args.batch_size]))
            outputs.append(torch.softmax(logits.float(), dim=1).max(dim=1))
        return outputs

    def hooked():
        return extract_images(model, images, layer="penultimate", batch_size=args.batch_size)

    def streamed():
        return extract_images(model, images, layer="penultimate", batch_size=args.batch_size,
                              out=Path(args.work) / "hook_bench.npy")

    Path(args.work).mkdir(parents=True, exist_ok=True)
    timings = {"bare": [], "hook": [], "hook, streamed to .npy": []}
    runs = {"bare": bare, "hook": hooked, "hook, streamed to .npy": streamed}
    for round_index in range(args.repeats + 1):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            if round_index:  # the first round warms up
                timings[name].append(time.perf_counter() - started)
    base = statistics.median(timings["bare"])
    print(f"{images.shape[0]} images, batch {args.batch_size}, {args.repeats} rounds, "
          f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    print("| run | median (s) | min (s) | overhead vs bare (median) |")
    print("|---|---:|---:|---:|")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {min(values):.3f} | {median / base - 1:+.1%} |")


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo (as lscpu shows it), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    detect = commands.add_parser("detect", help="time detection at several sizes")
    detect.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    detect.add_argument("--naive-sizes", type=int, nargs="*", default=[10_000, 100_000])
    detect.add_argument("--limit-min", type=float, default=30.0, help="time limit per run, minutes")
    detect.add_argument("--work", default="/tmp/scale_bench", help="folder for the generated data")
    detect.add_argument("--results", default="/tmp/scale_bench/results.jsonl")
    hook = commands.add_parser("hook", help="time the extraction hook against the bare forward pass")
    hook.add_argument("--repeats", type=int, default=7)
    hook.add_argument("--batch-size", type=int, default=512)
    hook.add_argument("--threads", type=int, default=1,
                      help="torch threads; one thread is the least noisy on a shared machine")
    hook.add_argument("--work", default="/tmp/scale_bench")
    generate_command = commands.add_parser("_generate")
    generate_command.add_argument("path", type=Path)
    generate_command.add_argument("n_rows", type=int)
    detect_command = commands.add_parser("_detect")
    detect_command.add_argument("method", choices=["toolkit", "naive"])
    detect_command.add_argument("data", type=Path)
    detect_command.add_argument("result", type=Path)
    args = parser.parse_args()

    if args.command == "detect":
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores", flush=True)
        run_detection(args)
    elif args.command == "hook":
        run_hook(args)
    elif args.command == "_generate":
        generate(args.path, args.n_rows)
    else:
        detect_once(args.method, args.data, args.result)


if __name__ == "__main__":
    main()
