"""Extract embeddings under ``accelerate launch``; the main process saves them.

Usage: accelerate launch --cpu --num_processes 2 extract_two_processes.py OUT_DIR

Writes ``OUT_DIR/in_memory.npz`` (the arrays every process returned, from
the main process), ``OUT_DIR/streamed.npy`` (the ``out`` file) and
``OUT_DIR/rank<r>.npz`` (what process r returned).
"""

import sys
from pathlib import Path

import numpy as np
import torch

from mitigate.extract import extract_images
from mitigate.models import SmallCNN

N_IMAGES = 203  # not a multiple of the batch size or of the process count


def make_inputs():
    torch.manual_seed(0)
    model = SmallCNN(embedding_dim=16)
    images = np.random.default_rng(0).random((N_IMAGES, 1, 28, 28), dtype=np.float32)
    return model, images


def main(out_dir: Path) -> None:
    from accelerate import PartialState

    model, images = make_inputs()
    embeddings, predictions, confidence = extract_images(
        model, images, layer="penultimate", batch_size=16, distributed=True
    )
    # The state extract_images set up (gloo on the CPU under ACCELERATE_USE_CPU).
    state = PartialState()
    np.savez(out_dir / f"rank{state.process_index}.npz", embeddings=embeddings,
             predictions=predictions, confidence=confidence, num_processes=state.num_processes)
    streamed, _, _ = extract_images(
        model, images, layer="penultimate", batch_size=16, distributed=True,
        out=out_dir / "streamed.npy",
    )
    np.testing.assert_array_equal(streamed, embeddings)
    state.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
