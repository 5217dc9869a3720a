"""Histogram of CleanNet scores, split by verified clean / verified noisy / unverified."""
from __future__ import annotations

import numpy as np

from labelwise.utils.fileio import write_figure


def plot_score_histogram(path, scores, verification=None, *, threshold: float | None = None, bins: int = 40,
                         title: str = "CleanNet relevance scores", overwrite: bool = False) -> None:
    """Write a PNG histogram of ``scores`` atomically.

    Args:
        path: the PNG file.
        scores: ``(N,)`` relevance scores.
        verification: ``(N,)`` 1 (verified clean) / 0 (verified noisy) / -1 (unverified), or
            ``None`` (all unverified). Each group is a separate histogram, normalised to its
            own size, so the small verified groups stay visible.
        threshold: drawn as a vertical line.
        bins: bins over [-1, 1].
        title: the plot title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.asarray(scores, dtype=np.float64)
    verification = np.full(len(scores), -1) if verification is None else np.asarray(verification)
    edges = np.linspace(-1, 1, bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    groups = [(-1, "unverified", "0.6"), (1, "verified clean", "tab:green"), (0, "verified noisy", "tab:red")]
    for flag, name, colour in groups:
        s = scores[verification == flag]
        if len(s):
            ax.hist(s, bins=edges, density=True, histtype="step" if flag == -1 else "stepfilled",
                    alpha=1.0 if flag == -1 else 0.45, color=colour, label=f"{name} (n={len(s)})")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("score s = cos(phi_q, phi_s(label))")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    write_figure(path, fig, overwrite=overwrite)
    plt.close(fig)
