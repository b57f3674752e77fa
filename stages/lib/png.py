"""Figures to PNG files with matplotlib, without a display (the Agg backend), the same bytes for
the same figure (no software-version stamp in the file), each file written whole (files.py's
atomic write: a kill or a full disk leaves the previous file, or none)."""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the figures' modules draw through it)

from .core.files import write_atomic  # noqa: E402


def save(fig, path):
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight",
                    metadata={"Software": None})
    finally:
        plt.close(fig)
    write_atomic(path, buffer.getbuffer())
