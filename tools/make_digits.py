"""Write prunenas/_data/digits.npz, the embedded 8x8 handwritten digits set, from scikit-learn's copy.

Run from the repository root: ``python tools/make_digits.py``. Needs scikit-learn (only here, never at
run time). The file holds ``images`` (1797, 8, 8) uint8 with the original 0..16 grey levels scaled to
0..255 and ``labels`` (1797,) uint8 in 0..9, in scikit-learn's order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "prunenas" / "_data" / "digits.npz"


def build() -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, 8, 8) in 0..255, labels uint8 (N,))."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = np.asarray(bunch.images, dtype=np.float64)
    if raw.shape != (1797, 8, 8) or raw.min() < 0 or raw.max() > 16:
        raise SystemExit(f"unexpected digits data from scikit-learn: shape {raw.shape}, range {raw.min()}..{raw.max()}")
    images = np.rint(raw * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.uint8)
    return images, labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output file (default: {OUT})")
    args = parser.parse_args(argv)
    images, labels = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images, labels=labels)
    print(f"wrote {args.out}: {images.shape[0]} images, {int(labels.max()) + 1} classes")


if __name__ == "__main__":
    main()
