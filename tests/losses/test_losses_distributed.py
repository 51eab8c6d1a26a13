"""gather_distributed across two CPU processes (gloo on 127.0.0.1) against one process.

The statement under test comes from losses.distributed. Every process computes
the loss of the concatenated batch. Before DDP's averaging, the gradient on a
process's local embeddings is world_size times the matching slice of the
single-process gradient. After DDP's averaging, parameter gradients equal the
single-process ones.
"""

import datetime
import gc
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from losses import CollapsePenalty, SupConLoss, UniformityLoss, VICRegLoss

WORLD_SIZE = 2
N_DIMS = 6
# Rows per process. The first split is uneven, like the last batch of an epoch.
SPLITS = {"uneven": (5, 7), "even": (6, 6)}
JOIN_TIMEOUT_S = 120


def _global_batch(n_samples):
    generator = torch.Generator().manual_seed(n_samples)
    embeddings = torch.randn(n_samples, N_DIMS, generator=generator, dtype=torch.float64)
    labels = torch.arange(n_samples) % 3
    members = torch.arange(n_samples) % 2 == 0
    # Pull the members together, so the collapse penalty is active.
    embeddings[members] = 0.2 * embeddings[members]
    return embeddings, labels, members


# Each entry computes a loss from (embeddings, labels, members, gather_distributed).
LOSSES = {
    "uniformity": lambda x, y, m, gather: UniformityLoss(gather_distributed=gather)(x),
    "supcon": lambda x, y, m, gather: SupConLoss(gather_distributed=gather)(x, y),
    "vicreg": lambda x, y, m, gather: VICRegLoss(gather_distributed=gather)(x, x.flip(1) * 0.5),
    "collapse_penalty": lambda x, y, m, gather: CollapsePenalty(gather_distributed=gather)(x, m),
}


def _local_rows(split, rank):
    start = sum(split[:rank])
    return slice(start, start + split[rank])


def _run_losses(rank, results):
    for split_name, split in SPLITS.items():
        embeddings, labels, members = _global_batch(sum(split))
        rows = _local_rows(split, rank)
        for loss_name, compute in LOSSES.items():
            local = embeddings[rows].clone().requires_grad_(True)
            loss = compute(local, labels[rows], members[rows], True)
            loss.backward()
            results[(split_name, loss_name)] = {"loss": loss.detach(), "grad": local.grad}


def _run_ddp(rank, results):
    split = SPLITS["uneven"]
    embeddings, _, _ = _global_batch(sum(split))
    torch.manual_seed(0)
    encoder = torch.nn.Linear(N_DIMS, 4, dtype=torch.float64)
    model = torch.nn.parallel.DistributedDataParallel(encoder)

    loss = UniformityLoss(gather_distributed=True)(model(embeddings[_local_rows(split, rank)]))
    loss.backward()
    results["ddp"] = {name: param.grad for name, param in encoder.named_parameters()}


def _run_mismatched_dims(rank, results):
    local = torch.randn(4, 3 + rank)
    try:
        UniformityLoss(gather_distributed=True)(local)
    except ValueError as error:
        results["mismatch_error"] = str(error)


def _worker(rank, port, output_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD_SIZE, timeout=datetime.timedelta(seconds=60)
    )
    results = {}
    try:
        _run_losses(rank, results)
        _run_ddp(rank, results)
        _run_mismatched_dims(rank, results)
        # The DDP wrapper sits in a reference cycle. Left to the interpreter's exit, it
        # was destroyed after the process group, and the worker aborted ("terminate
        # called without an active exception") in about 1 run in 4.
        gc.collect()
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(output_dir, f"rank{rank}.pt"))


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("distributed")
    context = mp.spawn(
        _worker, args=(_free_port(), str(output_dir)), nprocs=WORLD_SIZE, join=False
    )
    # join() returns after any one process exits, so wait until all have, up to a deadline.
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f"distributed workers did not finish within {JOIN_TIMEOUT_S} s")
    return [torch.load(output_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def _single_process(split_name, loss_name):
    embeddings, labels, members = _global_batch(sum(SPLITS[split_name]))
    embeddings.requires_grad_(True)
    loss = LOSSES[loss_name](embeddings, labels, members, False)
    loss.backward()
    return loss.detach(), embeddings.grad


@pytest.mark.parametrize("split_name", sorted(SPLITS))
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_gathered_loss_equals_single_process(rank_results, split_name, loss_name):
    expected, _ = _single_process(split_name, loss_name)

    for rank, results in enumerate(rank_results):
        loss = results[(split_name, loss_name)]["loss"]
        assert torch.allclose(loss, expected, rtol=1e-12, atol=1e-12), f"rank {rank}"


@pytest.mark.parametrize("split_name", sorted(SPLITS))
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_local_gradient_is_world_size_times_slice(rank_results, split_name, loss_name):
    _, expected_grad = _single_process(split_name, loss_name)

    for rank, results in enumerate(rank_results):
        grad = results[(split_name, loss_name)]["grad"]
        expected_slice = expected_grad[_local_rows(SPLITS[split_name], rank)]
        assert grad is not None, f"no gradient reached rank {rank}"
        assert grad.abs().sum() > 0, f"zero gradient on rank {rank}"
        assert torch.allclose(grad, WORLD_SIZE * expected_slice, rtol=1e-10, atol=1e-12), (
            f"rank {rank}"
        )


def test_ddp_parameter_gradients_equal_single_process(rank_results):
    embeddings, _, _ = _global_batch(sum(SPLITS["uneven"]))
    torch.manual_seed(0)
    encoder = torch.nn.Linear(N_DIMS, 4, dtype=torch.float64)
    UniformityLoss()(encoder(embeddings)).backward()

    for rank, results in enumerate(rank_results):
        for name, param in encoder.named_parameters():
            assert torch.allclose(results["ddp"][name], param.grad, rtol=1e-10, atol=1e-12), (
                f"{name} on rank {rank}"
            )


def test_mismatched_dims_raise_on_every_rank(rank_results):
    for rank, results in enumerate(rank_results):
        assert "same trailing dimensions on every process" in results.get("mismatch_error", ""), (
            f"rank {rank}"
        )
        assert "[(4, 3), (4, 4)]" in results["mismatch_error"]
