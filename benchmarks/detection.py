"""Detector validity on planted attractors of every root cause, and on a clean control.

For each mechanism in :data:`mitigate.plants.MECHANISMS` and each seed, the
script plants the mechanism into a seeded subset of Fashion-MNIST, trains a
``SmallCNN`` the way ``mitigate run`` does, extracts the penultimate
embeddings of the audit images and runs three detectors on them:

- ours: :class:`mitigate.detect.AttractorDetector` with its default settings,
  given labels and predictions;
- the literal baseline: the same UMAP and HDBSCAN clusters, flagged when the
  plain ACS (against all rows, no labels) exceeds 2.0, the rule the source
  description states;
- ours without labels or predictions, for the spurious-correlation and
  collapse mechanisms and the clean control.

Each flagged attractor is compared with the planted member set; the table
reports precision, recall and F1 of the best-matching one. The best-matching
attractor of our detector is then probed and diagnosed, and the named root
cause is compared with the planted mechanism. Ground truth is used only for
this scoring and for picking which attractor to probe, never by detection,
probes or diagnosis. On the clean control the table counts the attractors
flagged.

Trained models and embeddings are cached under ``--cache``, keyed by the
planted images and the training settings. The UMAP and HDBSCAN clusters are
cached too, keyed by the embeddings, the clustering parameters and the
source of the clustering code, together with the time and peak memory
measured when they were computed. A rerun with unchanged inputs retrains nothing and
reuses the clusters; flagging, scoring and probes always run again.

Usage::

    python benchmarks/detection.py --cache runs/detection-cache --out benchmarks/detection_table.md
    python benchmarks/detection.py --cache /tmp/c --seeds 0 --n-train 8000 --n-audit 2000   # fast
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger("benchmarks.detection")

ROOT = Path(__file__).resolve().parents[1]
BASELINE_ACS = 2.0
# Mechanisms whose no-label detection has a target, a median F1 like the
# others. The clean control is its null control. Every mechanism is also run
# without labels and reported.
UNLABELLED_TARGETS = ("spurious_correlation", "representational_collapse")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
# Targets: median F1 per planted mechanism, seeds with the right root cause,
# and attractors flagged on the clean control.
TARGET_F1 = 0.8
TARGET_CAUSE_SHARE = 0.8


def main(argv=None) -> int:
    """Run the benchmark from the command line and print the table."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    import torch

    # One thread: on a shared machine, more threads than free cores make every
    # training step several times slower (measured: 0.07 s vs 0.43 s per step).
    torch.set_num_threads(args.threads)
    results = run_benchmark(
        mechanisms=args.mechanisms, seeds=args.seeds, cache_dir=Path(args.cache),
        n_train=args.n_train, n_audit=args.n_audit, epochs=args.epochs,
    )
    summary = summarise(results)
    table = markdown_tables(summary, results)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    (Path(args.cache) / "results.json").write_text(json.dumps(
        {"settings": vars(args), "results": results, "summary": summary}, indent=1, default=_json_default))
    if args.out:
        Path(args.out).write_text(table)
    sys.stdout.write(table)
    failures = check_targets(summary)
    for failure in failures:
        sys.stdout.write(f"target missed: {failure}\n")
    if args.sweep:
        rows = sweep_thresholds(mechanisms=args.mechanisms, seeds=args.seeds, cache_dir=Path(args.cache),
                                n_train=args.n_train, n_audit=args.n_audit, epochs=args.epochs)
        sweep_table = markdown_sweep(rows)
        (Path(args.cache) / "sweep.json").write_text(json.dumps(rows, indent=1, default=_json_default))
        if args.out:
            with open(args.out, "a") as handle:
                handle.write("\n" + sweep_table)
        sys.stdout.write("\n" + sweep_table)
    return 0


def _parse_args(argv):
    from mitigate.plants import MECHANISMS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", required=True,
                        help="folder for trained models, embeddings, clusters and results.json")
    parser.add_argument("--out", help="write the markdown tables to this file as well")
    parser.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS), choices=MECHANISMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--n-train", type=int, default=20_000, help="training images per run")
    parser.add_argument("--n-audit", type=int, default=5_000, help="audit images per run")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs, unless a mechanism sets them")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--sweep", action="store_true",
                        help="also vary each flagging threshold in turn (on the cached clusters)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser.parse_args(argv)


# -- one run -------------------------------------------------------------------


def run_benchmark(*, mechanisms, seeds, cache_dir: Path, n_train: int, n_audit: int,
                  epochs: int = 2, splits=None) -> list:
    """Run every mechanism for every seed and return one result dict per run."""
    from mitigate.data import load_fashion_mnist

    if splits is None:
        splits = load_fashion_mnist(fallback=False)
    results = []
    for mechanism in mechanisms:
        for seed in seeds:
            started = time.perf_counter()
            result = run_one(mechanism, seed, splits, cache_dir=cache_dir, n_train=n_train,
                             n_audit=n_audit, epochs=epochs)
            result["wall_seconds"] = round(time.perf_counter() - started, 1)
            logger.info("%s seed %d: %s", mechanism, seed, json.dumps(result["ours"], default=_json_default))
            results.append(result)
    return results


def run_one(mechanism: str, seed: int, splits, *, cache_dir: Path, n_train: int, n_audit: int,
            epochs: int = 2) -> dict:
    """Plant, train (or load), detect, score and diagnose one mechanism for one seed."""
    from mitigate.plants import make_benchmark, subsample_splits

    subset = subsample_splits(splits, n_train=n_train, n_audit=n_audit, seed=seed)
    benchmark = make_benchmark(mechanism, subset, seed=seed)
    model, outputs, train_seconds = _trained_model(benchmark, seed=seed, epochs=epochs, cache_dir=cache_dir)
    embeddings, predictions = outputs["embeddings"], outputs["predictions"]
    truth = benchmark.resolve_truth(embeddings)
    labels = benchmark.audit_labels

    detector, timing = _detect(embeddings, labels, predictions, seed=seed, cache_dir=cache_dir)
    result = {
        "mechanism": mechanism,
        "seed": seed,
        "n_train": int(benchmark.train_labels.shape[0]),
        "n_audit": int(labels.shape[0]),
        "n_truth": None if truth is None else int(truth.sum()),
        "model_accuracy": float(np.mean(predictions == labels)),
        "train_seconds": train_seconds,
        "detect_seconds": timing["seconds"],
        "detect_peak_mib": timing["peak_mib"],
        "detect_cached": timing["cached"],
        "n_clusters": len(detector.clusters_),
        "ours": score_attractors(detector.attractors_, truth),
        "baseline": score_attractors(baseline_flags(detector, embeddings), truth),
    }

    unlabelled, _ = _detect(embeddings, None, None, seed=seed, cache_dir=cache_dir)
    result["unlabelled"] = score_attractors(unlabelled.attractors_, truth)
    result["unlabelled"]["unavailable_scores"] = sorted(unlabelled.unavailable_scores_)

    best = result["ours"]["best_index"]
    result["extended"] = dict(result["ours"])
    if truth is not None and best is not None:
        result["diagnosis"], extended = _diagnose(detector.attractors_[best], detector, benchmark, model,
                                                  embeddings, seed=seed)
        result["diagnosis"]["right"] = result["diagnosis"]["cause"] == mechanism
        result["extended"] = score_attractors([_Flagged(np.flatnonzero(extended), None)], truth)
    return result


def score_attractors(attractors: list, truth) -> dict:
    """Count flagged attractors and score the best match against ``truth`` (None: count only).

    Parameters
    ----------
    attractors : list of objects with a ``members`` array of row indices
    truth : ndarray of shape (n_audit,) of bool, or None
    """
    from mitigate.scores import precision_recall_f1

    summary = {"n_flagged": len(attractors), "best_index": None, "precision": None,
               "recall": None, "f1": None, "size": None}
    if truth is None:
        return summary
    summary.update(precision=0.0, recall=0.0, f1=0.0)
    for index, attractor in enumerate(attractors):
        found = np.zeros(truth.shape[0], dtype=bool)
        found[np.asarray(attractor.members)] = True
        figures = precision_recall_f1(found, truth)
        if summary["best_index"] is None or figures["f1"] > summary["f1"]:
            summary.update(figures, best_index=index, size=int(found.sum()))
    return summary


class _Flagged:
    """A member set flagged by the literal baseline."""

    def __init__(self, members, acs):
        self.members = members
        self.acs = acs


def baseline_flags(detector, embeddings: np.ndarray, threshold: float = BASELINE_ACS) -> list:
    """Return the clusters of ``detector`` whose plain ACS (against all rows) exceeds ``threshold``."""
    from mitigate.scores import acs_or_reason

    flagged = []
    for cluster in detector.clusters_:
        if cluster.size < 2:
            continue
        # Not defined when every embedding is identical (a fully collapsed model).
        acs, _ = acs_or_reason(embeddings, cluster.members)
        if acs is not None and acs > threshold:
            flagged.append(_Flagged(cluster.members, acs))
    return flagged


# -- training, with the cache -------------------------------------------------------


def _trained_model(benchmark, *, seed: int, epochs: int, cache_dir: Path):
    import torch

    from mitigate.extract import extract_images
    from mitigate.files import load_weights, save_weights
    from mitigate.models import SmallCNN
    from mitigate.train import TrainConfig, train_classifier

    config = {"epochs": epochs, "batch_size": 128, "lr": 1e-3, "seed": seed, **benchmark.train_overrides}
    key = _digest(benchmark.train_images, benchmark.train_labels, benchmark.audit_images,
                  json.dumps({"config": config, "model": benchmark.model_kwargs}, sort_keys=True))
    folder = cache_dir / f"{benchmark.mechanism}-seed{seed}-{key}"
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=len(np.unique(benchmark.train_labels)), **benchmark.model_kwargs)

    weights, outputs_path = folder / "model.safetensors", folder / "outputs.npz"
    if weights.is_file() and outputs_path.is_file():
        model.load_state_dict(load_weights(weights))
        model.eval()
        stored = np.load(outputs_path)
        return model, {name: stored[name] for name in stored.files}, float(stored["train_seconds"])

    started = time.perf_counter()
    train_classifier(model, benchmark.train_images, benchmark.train_labels, TrainConfig(**config),
                     progress=False)
    train_seconds = round(time.perf_counter() - started, 1)
    model.eval()
    embeddings, predictions, confidence = extract_images(model, benchmark.audit_images, layer="penultimate")
    outputs = {"embeddings": embeddings, "predictions": predictions, "confidence": confidence,
               "train_seconds": np.float64(train_seconds)}
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(weights, model.state_dict())
    np.savez(outputs_path, **outputs)
    return model, outputs, train_seconds


# -- detection, with cached clusters ------------------------------------------------


def _detect(embeddings, labels, predictions, *, seed: int, cache_dir: Path, params=None):
    """Fit the detector (default settings unless ``params``), reusing cached clusters when they match."""
    from mitigate.detect import AttractorDetector

    detector = AttractorDetector(random_state=seed, **(params or {}))
    key = _digest(embeddings, json.dumps(_clustering_params(detector), sort_keys=True), _clustering_source())
    path = cache_dir / "clusters" / f"{key}.npz"
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        settings = json.loads(str(stored["settings"]))

        def cached(space):
            # NOTE: replaces a private step of AttractorDetector.fit with its
            # cached output; the cache key includes that step's source code.
            detector.settings_ = dict(settings)
            return stored["coords"], stored["cluster_ids"].copy()

        detector._reduce_and_cluster = cached
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            detector.fit(embeddings, labels, predictions)
        del detector._reduce_and_cluster
        return detector, {"seconds": float(stored["seconds"]), "peak_mib": float(stored["peak_mib"]),
                          "cached": True}

    original = detector._reduce_and_cluster
    captured = {}

    def capture(space):
        coords, cluster_ids = original(space)
        captured.update(coords=coords, cluster_ids=cluster_ids.copy(), settings=dict(detector.settings_))
        return coords, cluster_ids

    _warm_up()
    detector._reduce_and_cluster = capture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            detector.fit(embeddings, labels, predictions)
        finally:
            seconds = time.perf_counter() - started
            peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    del detector._reduce_and_cluster
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, coords=captured["coords"], cluster_ids=captured["cluster_ids"],
             settings=json.dumps(captured["settings"], default=_json_default),
             seconds=seconds, peak_mib=peak_mib)
    return detector, {"seconds": round(seconds, 2), "peak_mib": round(peak_mib, 1), "cached": False}


_WARMED_UP = []


def _warm_up() -> None:
    """Fit once on random data, so that numba's compilation of UMAP is not timed."""
    if _WARMED_UP:
        return
    from mitigate.detect import AttractorDetector

    rows = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        AttractorDetector(random_state=0).fit(rows)
    _WARMED_UP.append(True)


def _clustering_params(detector) -> dict:
    names = ("n_neighbors", "n_components", "min_dist", "metric", "pca_dims", "min_cluster_size",
             "min_samples", "random_state", "large_n_threshold", "sample_size")
    return {name: getattr(detector, name, None) for name in names}


# The methods of AttractorDetector that decide the clusters. Every module-level
# function of mitigate.detect counts too, except these scoring and formatting
# helpers, so that changing how clusters are flagged keeps the cached clusters.
CLUSTERING_METHODS = ("_prepare_space", "_transform_space", "_reduce_and_cluster", "_umap",
                      "_small_sample_coords", "_hdbscan")
FLAGGING_FUNCTIONS = ("_fails_only", "_damage", "_fmt", "_plain")


def _clustering_source() -> str:
    """Return the source of every step that decides the clusters, for the cache key."""
    import mitigate.detect as detect

    parts = []
    for name in CLUSTERING_METHODS:
        method = getattr(detect.AttractorDetector, name, None)
        parts.append(inspect.getsource(method) if method is not None else name)
    for name, function in inspect.getmembers(detect, inspect.isfunction):
        if function.__module__ == detect.__name__ and name not in FLAGGING_FUNCTIONS:
            parts.append(inspect.getsource(function))
    scale = ROOT / "mitigate" / "scale.py"
    if scale.is_file():
        parts.append(scale.read_text())
    return "\n".join(parts)


# -- diagnosis ---------------------------------------------------------------------


def _diagnose(attractor, detector, benchmark, model, embeddings, *, seed: int):
    """Probe and diagnose ``attractor``; return the record and the probe-extended member mask.

    When the occlusion probe locates a causal region, the other clusters
    that filling the region empties (:func:`mitigate.probes.find_feature_clusters`)
    join the member set, as in the "extended" figure of ``mitigate run``.
    """
    from mitigate.diagnose import investigate_image_attractor
    from mitigate.pipeline import make_embedder
    from mitigate.probes import find_feature_clusters

    embed = make_embedder(model, "penultimate", "mean")
    diagnosis, evidence = investigate_image_attractor(
        attractor, detector=detector, audit_images=benchmark.audit_images,
        audit_labels=benchmark.audit_labels, audit_embeddings=embeddings,
        train_images=benchmark.train_images, train_labels=benchmark.train_labels,
        embed=embed, class_names=None, seed=seed,
    )
    extended = np.isin(detector.labels_, attractor.cluster_ids)
    if evidence.probe.causal:
        find_feature_clusters(benchmark.audit_images, detector.labels_, evidence.probe, attractor.cluster_ids,
                              embed=embed, assign=detector.assign, seed=seed)
        extended |= np.isin(detector.labels_, evidence.probe.feature_clusters)
    region = evidence.region_evidence
    return {
        "cause": diagnosis.cause,
        "evidence": diagnosis.evidence,
        "probe": evidence.probe.to_dict(),
        "pattern_probe": evidence.pattern_probe.to_dict(),
        "region_accuracy": None if region is None else region.accuracy,
        "region_member_agreement": None if region is None else region.member_agreement,
        "effective_rank": evidence.effective_rank,
        "feature_clusters": list(evidence.probe.feature_clusters),
    }, extended


# -- threshold sensitivity ----------------------------------------------------------

# Each flagging threshold is varied in turn around its default, the others kept
# at their defaults. SWEEP runs with labels and predictions, SWEEP_UNLABELLED
# with neither. Names in capitals are module constants (MODULE_CONSTANTS), and
# the others are AttractorDetector parameters.
SWEEP = {
    "acs_threshold": (1.0, 1.1, 1.25, 1.5, 2.0),
    "entropy_threshold": (0.2, 0.3, 0.4, 0.5),
    "concentration_threshold": (0.5, 0.6, 0.65, 0.7, 0.8, 0.9),
    "accuracy_gap": (0.1, 0.2, 0.3, 0.4),
    "MIN_PULLED_SHARE": (0.0, 0.02, 0.05, 0.1, 0.15),
}
SWEEP_UNLABELLED = {
    "copy_fit_threshold": (1.5, 1.75, 2.0, 2.25, 2.5),
    "MIN_COSINE": (0.6, 0.7, 0.8, 0.9, 0.95),
    "MAX_LENGTH_RATIO": (1.25, 1.5, 2.0, 3.0),
}
MODULE_CONSTANTS = {"MIN_PULLED_SHARE": "mitigate.detect", "MIN_COSINE": "mitigate.shifts",
                    "MAX_LENGTH_RATIO": "mitigate.shifts"}


def sweep_thresholds(*, mechanisms, seeds, cache_dir: Path, n_train: int, n_audit: int,
                     epochs: int = 2, splits=None) -> list:
    """Rescore every cached run with each threshold varied in turn; return one row per value.

    Each row contains the parameter, its value, whether labels were given, the
    F1 per seed of each planted mechanism and the attractors flagged per seed
    on the clean control. Clusters come from the cache, so only scoring and
    flagging run again.
    """
    from mitigate.data import load_fashion_mnist
    from mitigate.plants import make_benchmark, subsample_splits

    if splits is None:
        splits = load_fashion_mnist(fallback=False)
    runs = []
    for mechanism in mechanisms:
        for seed in seeds:
            subset = subsample_splits(splits, n_train=n_train, n_audit=n_audit, seed=seed)
            benchmark = make_benchmark(mechanism, subset, seed=seed)
            _, outputs, _ = _trained_model(benchmark, seed=seed, epochs=epochs, cache_dir=cache_dir)
            truth = benchmark.resolve_truth(outputs["embeddings"])
            runs.append((mechanism, seed, outputs, benchmark.audit_labels, truth))

    rows = []
    for with_labels, sweep in ((True, SWEEP), (False, SWEEP_UNLABELLED)):
        for parameter, values in sweep.items():
            for value in values:
                with _varied(parameter, value) as params:
                    figures = {}
                    for mechanism, seed, outputs, labels, truth in runs:
                        detector, _ = _detect(
                            outputs["embeddings"], labels if with_labels else None,
                            outputs["predictions"] if with_labels else None,
                            seed=seed, cache_dir=cache_dir, params=params,
                        )
                        scored = score_attractors(detector.attractors_, truth)
                        figures.setdefault(mechanism, []).append(
                            scored["n_flagged"] if truth is None else scored["f1"])
                rows.append({"parameter": parameter, "value": value, "labels": with_labels,
                             "figures": figures})
    return rows


@contextlib.contextmanager
def _varied(parameter: str, value):
    """Yield detector parameters with ``parameter`` set to ``value``.

    A module constant is set in place instead, and restored on exit.
    """
    if parameter not in MODULE_CONSTANTS:
        yield {parameter: value}
        return
    module = importlib.import_module(MODULE_CONSTANTS[parameter])
    default = getattr(module, parameter)
    setattr(module, parameter, value)
    try:
        yield {}
    finally:
        setattr(module, parameter, default)


def markdown_sweep(rows: list) -> str:
    """Return the sensitivity table: median F1 per planted mechanism, clean flags per seed."""
    mechanisms = list(rows[0]["figures"]) if rows else []
    header = " | ".join(f"{m}: {'flagged per seed' if m == 'clean' else 'median F1'}" for m in mechanisms)
    lines = [f"| labels | threshold | value | {header} |", "|---|---|---|" + "---|" * len(mechanisms)]
    for row in rows:
        cells = []
        for mechanism in mechanisms:
            values = row["figures"][mechanism]
            cells.append(", ".join(str(v) for v in values) if mechanism == "clean"
                         else f"{statistics.median(values):.2f}")
        labels_cell = "with" if row["labels"] else "without"
        lines.append(f"| {labels_cell} | {row['parameter']} | {row['value']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- summary and tables -------------------------------------------------------------


def summarise(results: list) -> dict:
    """Aggregate the runs per mechanism: medians over seeds, counts, and per-seed lists."""
    summary = {}
    for mechanism in dict.fromkeys(r["mechanism"] for r in results):
        runs = [r for r in results if r["mechanism"] == mechanism]
        entry = {
            "seeds": [r["seed"] for r in runs],
            "ours": _side(runs, "ours"),
            "extended": _side(runs, "extended"),
            "baseline": _side(runs, "baseline"),
            "detect_seconds": statistics.median(r["detect_seconds"] for r in runs),
            "detect_peak_mib": statistics.median(r["detect_peak_mib"] for r in runs),
            "model_accuracy": statistics.median(r["model_accuracy"] for r in runs),
        }
        diagnosed = [r["diagnosis"]["right"] for r in runs if "diagnosis" in r]
        entry["causes"] = [r["diagnosis"]["cause"] if "diagnosis" in r else None for r in runs]
        entry["cause_right"] = sum(diagnosed)
        if all("unlabelled" in r for r in runs):
            entry["unlabelled"] = _side(runs, "unlabelled")
        summary[mechanism] = entry
    return summary


def _side(runs, side: str) -> dict:
    figures = {"flagged": [r[side]["n_flagged"] for r in runs]}
    for name in ("precision", "recall", "f1"):
        values = [r[side][name] for r in runs if r[side][name] is not None]
        figures[name] = values
        figures[f"median_{name}"] = statistics.median(values) if values else None
    return figures


def check_targets(summary: dict) -> list:
    """Return one sentence per missed target (empty when every target is met)."""
    failures = []
    for mechanism, entry in summary.items():
        n_seeds = len(entry["seeds"])
        if mechanism == "clean":
            for side, name in (("ours", "clean control"), ("unlabelled", "clean control without labels")):
                flagged = entry[side]["flagged"] if side in entry else []
                if any(flagged):
                    failures.append(f"{name}: attractors flagged per seed {flagged}, expected none")
            continue
        if "unlabelled" in entry and mechanism in UNLABELLED_TARGETS:
            f1 = entry["unlabelled"]["median_f1"]
            if f1 is None or f1 < TARGET_F1:
                failures.append(f"{mechanism} without labels: median F1 {_num(f1)} below {TARGET_F1}")
        f1 = entry["ours"]["median_f1"]
        if f1 is None or f1 < TARGET_F1:
            failures.append(f"{mechanism}: median F1 {_num(f1)} below {TARGET_F1}")
        needed = int(np.ceil(TARGET_CAUSE_SHARE * n_seeds))
        if entry["cause_right"] < needed:
            failures.append(f"{mechanism}: root cause right in {entry['cause_right']} of {n_seeds} "
                            f"seeds, expected at least {needed} (named: {entry['causes']})")
    return failures


def markdown_tables(summary: dict, results: list) -> str:
    """Return the summary table and the per-seed table as markdown."""
    lines = [
        "| mechanism | ours: median F1 (P / R) | ours + probe extension: median F1 (P / R) "
        "| ours: root cause right | ours: flagged per seed "
        "| baseline: median F1 (P / R) | baseline: flagged per seed | no labels: median F1 "
        "| detection s (median) | detection peak traced MiB (median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mechanism, entry in summary.items():
        cause = "n/a" if mechanism == "clean" else f"{entry['cause_right']} of {len(entry['seeds'])}"
        unlabelled = entry.get("unlabelled")
        lines.append(
            f"| {mechanism} | {_figures(entry['ours'])} | {_figures(entry['extended'])} | {cause} "
            f"| {_counts(entry['ours'])} "
            f"| {_figures(entry['baseline'])} | {_counts(entry['baseline'])} "
            f"| {_unlabelled_cell(mechanism, unlabelled)} "
            f"| {entry['detect_seconds']:.0f} | {entry['detect_peak_mib']:.0f} |"
        )
    lines += [
        "",
        "| mechanism | seed | planted members | model accuracy | ours: flagged | ours: F1 (P / R) "
        "| ours + probe extension: F1 | root cause named | baseline: flagged | baseline: F1 "
        "| no labels: F1 | detection s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ours, baseline = r["ours"], r["baseline"]
        cause = r["diagnosis"]["cause"] if "diagnosis" in r else "n/a"
        unlabelled = "not run"
        if "unlabelled" in r:
            unlabelled = (f"{r['unlabelled']['n_flagged']} flagged" if r["mechanism"] == "clean"
                          else _num(r["unlabelled"]["f1"]))
        lines.append(
            f"| {r['mechanism']} | {r['seed']} | {r['n_truth'] if r['n_truth'] is not None else 'n/a'} "
            f"| {r['model_accuracy']:.3f} | {ours['n_flagged']} "
            f"| {_num(ours['f1'])} ({_num(ours['precision'])} / {_num(ours['recall'])}) "
            f"| {_num(r['extended']['f1'])} | {cause} "
            f"| {baseline['n_flagged']} | {_num(baseline['f1'])} | {unlabelled} "
            f"| {r['detect_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _unlabelled_cell(mechanism: str, unlabelled) -> str:
    if not unlabelled:
        return "not run"
    if mechanism == "clean":
        return "flagged " + _counts(unlabelled)
    return _num(unlabelled["median_f1"])


def _figures(side: dict) -> str:
    if side["median_f1"] is None:
        return "n/a"
    return f"{side['median_f1']:.2f} ({side['median_precision']:.2f} / {side['median_recall']:.2f})"


def _counts(side: dict) -> str:
    return ", ".join(str(n) for n in side["flagged"])


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _digest(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.shape, part.dtype)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(str(part).encode())
    return digest.hexdigest()[:16]


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    sys.exit(main())
