"""Relative ACS of every cluster, without labels, on the models of a finished ``mitigate run``.

The unlabelled flagging rule of ``AttractorDetector`` (a cluster must have a
relative ACS of at least ``DEFAULT_RELATIVE_ACS_THRESHOLD``) was set from
this table and from the planted blobs of ``tests/conftest.py``. For each
model in RUN_DIR/baseline and RUN_DIR/retrained, the script extracts the audit
embeddings of the recipe's layer and fits the detector without labels. It
prints one line per cluster: size, plain ACS, relative ACS, label entropy
(from the labels the detector did not see) and the share of members that
carry the planted feature. Then one line per flagged attractor, with its
precision and recall against the planted rows and its first flag reason.

Usage::

    .venv/bin/python benchmarks/relative_acs_calibration.py RECIPE RUN_DIR

where RUN_DIR is the ``--out`` folder of ``mitigate run RECIPE``. Takes about
two minutes per model on 2 CPU cores for the 10,000-image audit split.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="the recipe TOML the run used")
    parser.add_argument("run_dir", type=Path, help="the --out folder of that run")
    args = parser.parse_args()

    from mitigate import scores
    from mitigate.detect import AttractorDetector
    from mitigate.extract import extract_images
    from mitigate.files import load_weights
    from mitigate.pipeline import _build, load_audit_data
    from mitigate.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    data = load_audit_data(recipe, None)
    labels = data.splits.audit_labels
    planted = data.planted_audit if data.planted_audit is not None else np.zeros(labels.size, bool)
    n_classes = len(data.splits.class_names)

    print("model      size   ACS  relative  entropy  planted share")
    for which in ("baseline", "retrained"):
        weights = args.run_dir / which / "model.safetensors"
        if not weights.is_file():
            print(f"{which}: no weights at {weights}")
            continue
        model = _build(recipe, n_classes, data.audit_images.shape[-1])
        model.load_state_dict(load_weights(weights))
        embeddings, _, _ = extract_images(model, data.audit_images, layer=recipe["model"]["layer"],
                                          pooling=recipe["model"]["pooling"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            detector = AttractorDetector(random_state=recipe["detect"]["seed"]).fit(embeddings)
        for cluster in sorted(detector.clusters_, key=lambda c: -(c.relative_acs or 0.0)):
            entropy = scores.label_entropy(labels[cluster.members], n_classes)
            print(f"{which:9} {cluster.size:5d} {cluster.acs:5.1f} {cluster.relative_acs or 0.0:9.2f} "
                  f"{entropy:8.2f} {planted[cluster.members].mean():14.2f}")
        for attractor in detector.attractors_:
            found = np.zeros(labels.size, dtype=bool)
            found[attractor.members] = True
            match = scores.precision_recall_f1(found, planted) if planted.any() else None
            figures = "" if match is None else (f", against the planted rows: precision "
                                                f"{match['precision']:.2f}, recall {match['recall']:.2f}")
            print(f"{which}: attractor of {attractor.size} rows (clusters {attractor.cluster_ids})"
                  f"{figures}; {attractor.flag_reasons[0]}")


if __name__ == "__main__":
    main()
