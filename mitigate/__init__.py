"""Find hypnotic attractors in a model's latent space, remove them by root cause, verify the fix.

Importing this package is cheap: torch, umap and hdbscan load only in the
submodules that use them, so the command line starts quickly.
"""

__version__ = "0.1.0"
