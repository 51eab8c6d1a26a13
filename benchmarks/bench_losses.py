"""Measure the step time each regularizer in ``losses`` adds to SmallCNN training.

Every configuration trains its own copy of ``mitigate.models.SmallCNN``
(10 classes, 64-dimensional embeddings, 1x28x28 inputs) with SGD on one fixed
random batch. The baseline step is forward, cross-entropy, backward and an
optimizer step. Each other configuration adds one regularizer on the
embeddings (or on the logits, for spectral decoupling). Configurations are
timed in turn inside each round, so slow drift of the machine affects them
alike, and the overhead is the median over rounds of the step-time ratio to
the baseline of the same round. A second measurement times each
regularizer's forward and backward alone on random (batch, 64) embeddings,
which is far less noisy than the difference of two full steps.

Two-view losses get a second view made by adding Gaussian noise to the
embeddings, so the timing covers the loss and not a second forward pass,
which a real two-view setup would add on top.

Usage::

    python benchmarks/bench_losses.py             # 30 timed steps after 5 warm-up steps
    python benchmarks/bench_losses.py --quick     # 5 timed steps after 2 warm-up steps
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from losses import (
    AlignmentLoss,
    BarlowTwinsLoss,
    CollapsePenalty,
    CovarianceLoss,
    EffectiveRankLoss,
    SpectralDecouplingLoss,
    SupConLoss,
    UniformityLoss,
    VarianceLoss,
    VICRegLoss,
)
from mitigate.models import SmallCNN

NUM_CLASSES = 10
EMBEDDING_DIM = 64
IMAGE_SHAPE = (1, 28, 28)
# Overhead targets, as a fraction of the baseline step time.
TARGETS = {"uniformity": 0.10, "vicreg_terms_one_view": 0.10, "vicreg_two_views": 0.10}

# A regularizer maps (embeddings, logits, labels, second_view) to a scalar loss.
Regularizer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def build_regularizers() -> dict[str, Regularizer | None]:
    """Return the configurations to time, keyed by name, with None for the baseline."""
    uniformity = UniformityLoss()
    alignment = AlignmentLoss()
    variance = VarianceLoss()
    covariance = CovarianceLoss()
    vicreg = VICRegLoss()
    barlow_twins = BarlowTwinsLoss()
    supcon = SupConLoss()
    spectral_decoupling = SpectralDecouplingLoss()
    effective_rank = EffectiveRankLoss()
    collapse_penalty = CollapsePenalty()
    return {
        "baseline": None,
        "uniformity": lambda emb, logits, labels, view: uniformity(emb),
        "alignment": lambda emb, logits, labels, view: alignment(emb, view),
        "vicreg_terms_one_view": lambda emb, logits, labels, view: variance(emb) + covariance(emb),
        "vicreg_two_views": lambda emb, logits, labels, view: vicreg(emb, view),
        "barlow_twins_one_view": lambda emb, logits, labels, view: barlow_twins(emb),
        "barlow_twins_two_views": lambda emb, logits, labels, view: barlow_twins(emb, view),
        "supcon": lambda emb, logits, labels, view: supcon(emb, labels),
        "spectral_decoupling": lambda emb, logits, labels, view: spectral_decoupling(logits),
        "effective_rank": lambda emb, logits, labels, view: effective_rank(emb),
        "collapse_penalty": lambda emb, logits, labels, view: collapse_penalty(emb, labels == 0),
    }


def make_step(
    regularizer: Regularizer | None, images: torch.Tensor, labels: torch.Tensor
) -> Callable[[], None]:
    """Return a function that runs one training step of a fresh SmallCNN."""
    torch.manual_seed(0)
    model = SmallCNN(num_classes=NUM_CLASSES, embedding_dim=EMBEDDING_DIM)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        embeddings = model.embed(images)
        logits = model.classifier(embeddings)
        loss = F.cross_entropy(logits, labels)
        if regularizer is not None:
            second_view = embeddings + 0.05 * torch.randn_like(embeddings)
            loss = loss + 0.1 * regularizer(embeddings, logits, labels, second_view)
        loss.backward()
        optimizer.step()

    return step


def time_steps(
    steps: dict[str, Callable[[], None]], *, n_warmup: int, n_timed: int
) -> dict[str, list[float]]:
    """Run every step function once per round and return the timed rounds' seconds by name."""
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_index in range(n_warmup + n_timed):
        # Rotate the order, so no configuration always runs first in its round.
        offset = round_index % len(names)
        for name in names[offset:] + names[:offset]:
            start = time.perf_counter()
            steps[name]()
            elapsed = time.perf_counter() - start
            if round_index >= n_warmup:
                seconds[name].append(elapsed)
    return seconds


def time_losses_alone(
    regularizers: dict[str, Regularizer | None], *, batch_size: int, n_warmup: int, n_timed: int
) -> dict[str, float]:
    """Return the median seconds of each regularizer's forward and backward on its own."""
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(batch_size, EMBEDDING_DIM, generator=generator).requires_grad_(True)
    logits = torch.randn(batch_size, NUM_CLASSES, generator=generator).requires_grad_(True)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    second_view = embeddings.detach() + 0.05 * torch.randn(embeddings.shape, generator=generator)

    medians = {}
    for name, regularizer in regularizers.items():
        if regularizer is None:
            continue
        times = []
        for index in range(n_warmup + n_timed):
            start = time.perf_counter()
            regularizer(embeddings, logits, labels, second_view).backward()
            if index >= n_warmup:
                times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    return medians


def summarize(
    seconds: dict[str, list[float]], alone_seconds: dict[str, float]
) -> list[dict[str, object]]:
    """Return one row per configuration: median step time, paired overhead and loss-only time."""
    baseline = seconds["baseline"]
    rows = []
    for name, times in seconds.items():
        ratios = [time_s / base_s for time_s, base_s in zip(times, baseline)]
        overhead = statistics.median(ratios) - 1
        target = TARGETS.get(name)
        if target is None:
            verdict = ""
        else:
            verdict = f"<= {target:.0%}: {'met' if overhead <= target else 'MISSED'}"
        rows.append(
            {
                "name": name,
                "median_ms": 1000 * statistics.median(times),
                "overhead": overhead,
                "alone_ms": 1000 * alone_seconds.get(name, 0.0),
                "alone_fraction": alone_seconds.get(name, 0.0) / statistics.median(baseline),
                "target": verdict,
            }
        )
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    """Render the summary rows as a Markdown table."""
    lines = [
        "| configuration | median step (ms) | step overhead | loss alone (ms) "
        "| loss alone / baseline step | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if row["name"] == "baseline":
            overhead = alone_ms = alone_fraction = "—"
        else:
            overhead = f"{row['overhead']:+.1%}"
            alone_ms = f"{row['alone_ms']:.2f}"
            alone_fraction = f"{row['alone_fraction']:.1%}"
        lines.append(
            f"| {row['name']} | {row['median_ms']:.1f} | {overhead} | {alone_ms} "
            f"| {alone_fraction} | {row['target']} |"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="time 5 steps after 2 warm-up steps")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step (default 256)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 5, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, *IMAGE_SHAPE, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator)

    regularizers = build_regularizers()
    steps = {name: make_step(regularizer, images, labels) for name, regularizer in regularizers.items()}
    seconds = time_steps(steps, n_warmup=args.warmup, n_timed=args.steps)
    alone_seconds = time_losses_alone(
        regularizers, batch_size=args.batch_size, n_warmup=args.warmup, n_timed=args.steps
    )

    print(f"command: python {' '.join(sys.argv)}")
    print(f"date: {datetime.date.today().isoformat()}")
    print(f"cpu: {cpu_model()}, torch threads: {torch.get_num_threads()}")
    print(f"torch: {torch.__version__}, python: {platform.python_version()}")
    print(f"batch size: {args.batch_size}, warm-up steps: {args.warmup}, timed steps: {args.steps}")
    print()
    print(format_table(summarize(seconds, alone_seconds)))


if __name__ == "__main__":
    main()
