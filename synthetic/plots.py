"""PNG plots of a report: marginals (real vs synthetic) and correlation matrices side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["write_plots"]


def write_plots(real: Mapping[str, np.ndarray], synth: Mapping[str, np.ndarray], directory: Path,
                title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = list(real)
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        r = np.asarray(real[name], np.float64)
        s = np.asarray(synth[name], np.float64)
        r, s = r[~np.isnan(r)], s[~np.isnan(s)]
        lo, hi = np.percentile(r, [0.5, 99.5])
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 41)
        ax.hist(np.clip(r, lo, hi), bins=bins, density=True, alpha=0.55, label="real")
        ax.hist(np.clip(s, lo, hi), bins=bins, density=True, alpha=0.55, label="synthetic")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"{title}: marginals (holdout vs synthetic)", fontsize=10)
    fig.tight_layout()
    marg = directory / "marginals.png"
    fig.savefig(marg, dpi=80)
    plt.close(fig)

    def corr(cols: Mapping[str, np.ndarray]) -> np.ndarray:
        import pandas as pd

        return pd.DataFrame({k: np.asarray(v, np.float64) for k, v in cols.items()}).corr(method="spearman").to_numpy()

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.4))
    cr, cs = corr(real), corr(synth)
    for ax, m, label, cmap, lim in ((axes[0], cr, "real (holdout)", "coolwarm", 1),
                                    (axes[1], cs, "synthetic", "coolwarm", 1),
                                    (axes[2], cs - cr, "synthetic - real", "PiYG", 0.3)):
        im = ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim)
        ax.set_title(f"Spearman: {label}", fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{title}: correlation matrices", fontsize=10)
    fig.tight_layout()
    cor = directory / "correlations.png"
    fig.savefig(cor, dpi=80)
    plt.close(fig)
    return [marg, cor]
