"""The losses package imports on its own, without the mitigate toolkit."""

import subprocess
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

PUBLIC_MODULES = [
    "UniformityLoss",
    "AlignmentLoss",
    "VarianceLoss",
    "CovarianceLoss",
    "VICRegLoss",
    "BarlowTwinsLoss",
    "SupConLoss",
    "SpectralDecouplingLoss",
    "EffectiveRankLoss",
    "CollapsePenalty",
]

FUNCTIONAL_NAMES = [
    "uniformity",
    "alignment",
    "variance",
    "covariance",
    "vicreg",
    "barlow_twins",
    "supcon",
    "spectral_decoupling",
    "effective_rank",
    "effective_rank_loss",
    "attractor_collapse_score",
    "collapse_penalty",
]


def test_import_never_loads_mitigate():
    script = "\n".join(
        [
            "import sys",
            f"from losses import {', '.join(PUBLIC_MODULES)}",
            "import losses.functional, losses.distributed",
            "import torch",
            "x = torch.randn(8, 4)",
            "UniformityLoss()(x); losses.functional.uniformity(x)",
            "loaded = sorted(name for name in sys.modules if name.split('.')[0] == 'mitigate')",
            "print(','.join(loaded))",
        ]
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPOSITORY_ROOT,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"losses imported mitigate modules: {result.stdout}"


def test_functional_exports_every_loss():
    import losses.functional

    missing = [name for name in FUNCTIONAL_NAMES if not callable(getattr(losses.functional, name, None))]

    assert missing == []
    assert sorted(losses.functional.__all__) == sorted(FUNCTIONAL_NAMES)


def test_package_exports_every_module():
    import torch

    import losses

    for name in PUBLIC_MODULES:
        assert issubclass(getattr(losses, name), torch.nn.Module), name
