"""Figures for the HTML report, each returned as a base64 PNG data URI.

matplotlib is imported inside the functions, after selecting the Agg backend,
so importing this module does not load it and the report renders without a
display.
"""

from __future__ import annotations

import base64
import io
import sys

import numpy as np

from mitigate.constants import NOISE_LABEL

# One colour marks attractor members in every figure, and no cluster or class
# palette below contains it.
ATTRACTOR_COLOUR = "#d62728"
NOISE_COLOUR = "#c7c7c7"
PROBE_BOX_COLOUR = "#17becf"

# tab20 without its two reds, so that only attractor members are red.
# Strong colours come first, so that neighbouring ids rarely look alike.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79",
)

DPI = 90
MAX_SCATTER_POINTS = 20_000
SUBSAMPLE_SEED = 0
MAX_GRID_IMAGES = 16
MAX_PROBE_EXAMPLES = 8
MAX_LEGEND_CLASSES = len(PALETTE)


def _pyplot():
    """Select the Agg backend, unless pyplot is already loaded, and return ``matplotlib.pyplot``."""
    import matplotlib

    # A caller who already uses pyplot (a notebook, say) keeps its backend:
    # savefig writes PNG under any backend, and every figure is closed after.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _to_data_uri(fig) -> str:
    """Encode a figure as a PNG data URI and close it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def plain_text(text: str) -> str:
    """Escape ``$`` so that matplotlib shows user text as typed, not as mathtext."""
    return str(text).replace("$", r"\$")


def subsample_by_cluster(clusters: np.ndarray, max_points: int = MAX_SCATTER_POINTS,
                         seed: int = SUBSAMPLE_SEED) -> np.ndarray:
    """Pick row indices for a scatter plot, stratified by cluster.

    Each cluster (noise included) keeps its share of ``max_points``, rounded,
    and at least one row, so small clusters stay visible. The total can
    therefore exceed ``max_points`` by up to the number of clusters.

    Parameters
    ----------
    clusters : ndarray of shape (n_samples,) of int
    max_points : int
        Target number of rows; with ``n_samples <= max_points`` every row is kept.
    seed : int
        Seed of the random generator, fixed so that reports are reproducible.

    Returns
    -------
    indices : ndarray of shape (n_kept,) of int, sorted
    """
    clusters = np.asarray(clusters)
    n_samples = clusters.shape[0]
    if n_samples <= max_points:
        return np.arange(n_samples)

    rng = np.random.default_rng(seed)
    fraction = max_points / n_samples
    sampled_rows = []
    for cluster_id in np.unique(clusters):
        rows = np.flatnonzero(clusters == cluster_id)
        n_keep = min(rows.size, max(1, round(rows.size * fraction)))
        sampled_rows.append(rng.choice(rows, size=n_keep, replace=False))
    return np.sort(np.concatenate(sampled_rows))


def _cluster_colours(clusters: np.ndarray) -> np.ndarray:
    """Map cluster ids to palette colours; noise is grey."""
    colours = np.empty(clusters.shape[0], dtype=object)
    for cluster_id in np.unique(clusters):
        rows = clusters == cluster_id
        colours[rows] = NOISE_COLOUR if cluster_id == NOISE_LABEL else PALETTE[cluster_id % len(PALETTE)]
    return colours


def scatter_by_cluster(panels: list[dict]) -> str:
    """Draw UMAP scatter panels side by side, coloured by cluster.

    Parameters
    ----------
    panels : list of dict
        One dict per panel with keys ``title`` (str), ``coords`` (ndarray of
        shape (n, 2)), ``clusters`` (ndarray of shape (n,) of int, -1 = noise),
        ``highlight`` (ndarray of shape (n,) of bool, attractor members, drawn
        last in ``ATTRACTOR_COLOUR``) and ``labels`` (list of (x, y, text)
        annotations drawn in ``ATTRACTOR_COLOUR``).

    Returns
    -------
    str
        A ``data:image/png;base64,...`` URI.
    """
    plt = _pyplot()
    from matplotlib import patheffects

    # A white outline keeps the red labels readable on top of the red members.
    outline = [patheffects.withStroke(linewidth=3, foreground="white")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.9), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        coords, highlight = panel["coords"], panel["highlight"]
        rest = ~highlight
        ax.scatter(coords[rest, 0], coords[rest, 1], s=3, c=list(_cluster_colours(panel["clusters"][rest])),
                   alpha=0.6, linewidths=0, rasterized=True)
        ax.scatter(coords[highlight, 0], coords[highlight, 1], s=5, c=ATTRACTOR_COLOUR,
                   linewidths=0, rasterized=True)
        for x, y, text in panel["labels"]:
            ax.annotate(plain_text(text), (x, y), color=ATTRACTOR_COLOUR, fontsize=9, fontweight="bold",
                        xytext=(4, 4), textcoords="offset points", path_effects=outline)
        _style_scatter_axes(ax, panel["title"])
    fig.tight_layout()
    return _to_data_uri(fig)


def scatter_by_class(panels: list[dict], class_names: list[str]) -> str:
    """Draw UMAP scatter panels side by side, coloured by class.

    Parameters
    ----------
    panels : list of dict
        One dict per panel with keys ``title``, ``coords`` (ndarray of shape
        (n, 2)) and ``labels`` (ndarray of shape (n,) of int class codes).
    class_names : list of str
        Names indexed by class code; codes outside the list show as "class N".

    Returns
    -------
    str
        A ``data:image/png;base64,...`` URI.
    """
    plt = _pyplot()
    # The extra width is room for the legend of class names.
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.6, 3.9), squeeze=False)
    codes = np.unique(np.concatenate([panel["labels"] for panel in panels]))
    for ax, panel in zip(axes[0], panels):
        for code in codes:
            rows = panel["labels"] == code
            name = class_names[code] if 0 <= code < len(class_names) else f"class {code}"
            ax.scatter(panel["coords"][rows, 0], panel["coords"][rows, 1], s=3,
                       c=PALETTE[code % len(PALETTE)], alpha=0.6, linewidths=0,
                       label=plain_text(name), rasterized=True)
        _style_scatter_axes(ax, panel["title"])
    if codes.size <= MAX_LEGEND_CLASSES:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                           markerscale=3, frameon=False)
    fig.tight_layout()
    return _to_data_uri(fig)


def _style_scatter_axes(ax, title: str) -> None:
    """Hide ticks (UMAP axes have no units) and set the panel title."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def _show_image(ax, image: np.ndarray) -> None:
    """Show one grayscale (H, W) or colour (H, W, 3) image in [0, 1] without axes."""
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(images: np.ndarray, n_columns: int = 8) -> str:
    """Draw up to ``MAX_GRID_IMAGES`` images in a grid.

    Parameters
    ----------
    images : ndarray of shape (k, H, W) or (k, H, W, 3)
        Pixel values in [0, 1].
    n_columns : int
        Images per row.

    Returns
    -------
    str
        A ``data:image/png;base64,...`` URI.
    """
    plt = _pyplot()
    images = np.asarray(images)[:MAX_GRID_IMAGES]
    n_columns = min(n_columns, images.shape[0])
    n_rows = -(-images.shape[0] // n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(0.9 * n_columns, 0.9 * n_rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index < images.shape[0]:
            _show_image(ax, images[index])
        else:
            ax.axis("off")
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return _to_data_uri(fig)


def attribution_overlay(attribution: np.ndarray, mean_image: np.ndarray | None = None,
                        box: list | None = None) -> str:
    """Draw an occlusion attribution grid, over the mean member image if given.

    Parameters
    ----------
    attribution : ndarray of shape (gh, gw)
        Attribution per occluded patch; higher means the patch pulls more
        strongly towards the attractor.
    mean_image : ndarray of shape (H, W) or (H, W, 3), optional
        Mean of the member images, in [0, 1]; the grid is stretched over it.
    box : sequence of 4 numbers, optional
        ``[top, left, height, width]`` of the probed feature, in pixels of
        ``mean_image``; drawn as a dashed rectangle.

    Returns
    -------
    str
        A ``data:image/png;base64,...`` URI.
    """
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    attribution = np.asarray(attribution, dtype=float)
    fig, ax = plt.subplots(figsize=(3.0, 2.7))
    if mean_image is None:
        height, width = attribution.shape
        heatmap = ax.imshow(attribution, cmap="inferno", interpolation="nearest")
    else:
        height, width = mean_image.shape[:2]
        _show_image(ax, mean_image)
        heatmap = ax.imshow(attribution, cmap="inferno", alpha=0.55, interpolation="nearest",
                          extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    if box is not None:
        top, left, box_height, box_width = box
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), box_width, box_height, fill=False,
                               edgecolor=PROBE_BOX_COLOUR, linestyle="--", linewidth=1.5))
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(heatmap, ax=ax, fraction=0.046, pad=0.04)
    return _to_data_uri(fig)


def probe_examples(original: np.ndarray, removed: np.ndarray, pasted: np.ndarray) -> str:
    """Draw probe examples in three rows: original, feature removed, feature pasted.

    Parameters
    ----------
    original, removed, pasted : ndarray of shape (m, H, W) or (m, H, W, 3)
        Pixel values in [0, 1]; the first ``MAX_PROBE_EXAMPLES`` columns are drawn.

    Returns
    -------
    str or None
        A ``data:image/png;base64,...`` URI. An empty row is left out (no
        non-members to paste onto when the attractor contains every input);
        None when every row is empty.
    """
    rows = [(name, images) for name, images in
            (("original", original), ("removed", removed), ("pasted", pasted)) if len(images)]
    if not rows:
        return None
    plt = _pyplot()
    n_columns = min(MAX_PROBE_EXAMPLES, *(np.asarray(images).shape[0] for _, images in rows))
    fig, axes = plt.subplots(len(rows), n_columns, figsize=(0.9 * n_columns + 0.6, 1.0 * len(rows) - 0.1),
                             squeeze=False)
    for row, (name, images) in enumerate(rows):
        for column in range(n_columns):
            _show_image(axes[row][column], np.asarray(images)[column])
        axes[row][0].set_ylabel(name, fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return _to_data_uri(fig)


def loss_curves(histories: dict[str, list[dict]]) -> str:
    """Plot training loss per epoch, one line per training run.

    Parameters
    ----------
    histories : dict of str to list of dict
        Run name to its history entries ``{"epoch": int, "loss": float | None}``;
        entries whose loss is None are skipped.

    Returns
    -------
    str
        A ``data:image/png;base64,...`` URI.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    for index, (name, history) in enumerate(histories.items()):
        points = [(entry["epoch"], entry["loss"]) for entry in history if entry["loss"] is not None]
        if points:
            epochs, losses = zip(*points)
            ax.plot(epochs, losses, marker="o", markersize=3, color=PALETTE[2 * index], label=plain_text(name))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _to_data_uri(fig)
