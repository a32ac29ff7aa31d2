"""Image decoding for the disk cache's worker processes: numpy and Pillow only, so that a worker starts in
a fraction of a second (it never imports torch)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def decode_square(blob: bytes, size: int) -> Any:
    """Image bytes -> (size, size, 3) uint8 RGB: shorter side resized to `size`, central square kept."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when the image is much larger
        rgb = img.convert("RGB")  # grayscale, CMYK, palette and RGBA images all become RGB
    w, h = rgb.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        rgb = rgb.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) != (size, size):
        rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8)


def decode_job(items: Sequence[tuple[int, bytes | str, str]], size: int) -> list[tuple[int, Any, str]]:
    """Decode (row, bytes or file path, shown name) items: (row, CHW uint8 array or None, why it failed)."""
    out: list[tuple[int, Any, str]] = []
    for row, src, _shown in items:
        try:
            blob = src if isinstance(src, bytes) else Path(src).read_bytes()
            out.append((row, decode_square(blob, size).transpose(2, 0, 1).copy(), ""))
        except Exception as exc:  # Pillow raises many types for a bad file; the caller counts and reports them
            text = str(exc).strip().splitlines()
            out.append((row, None, text[0] if text else type(exc).__name__))
    return out
