"""The text path: WordNet glosses or any labelled ``datasets`` folder, transformer
classifiers loaded offline, word attribution and template probes, and
counterfactual text augmentation.

Heavy libraries (torch, transformers, datasets) are imported by the
submodules that need them, not here.
"""
