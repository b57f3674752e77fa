"""Figures to PNG files with matplotlib, without a display (the Agg backend), the same bytes for
the same figure (no software-version stamp in the file)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402, F401 (the figures' modules draw through it)


def save(fig, path):
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
