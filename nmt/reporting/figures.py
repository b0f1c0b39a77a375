"""What the pictures and pages share: matplotlib without a display, PNG bytes, and
figures embedded in a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io


def pyplot():
    """matplotlib.pyplot on the Agg backend: no display needed; imported only when drawing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def embedded(image: bytes, caption: str, alt: str = "") -> str:
    """A <figure> holding a PNG inline, with its caption."""
    data = base64.b64encode(image).decode()
    return (
        f'<figure><img alt="{html.escape(alt or caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
