"""Files as users have them, built from scikit-learn's bundled digits (8x8 grey, 0..16): PNG class
folders zipped, Parquet tables, and the snapshot that says nothing was stored."""

from __future__ import annotations

import io
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

TABLES = ("models", "datasets", "tasks", "jobs", "model_versions", "accuracy")
FORM = {"epochs": "8", "ewc_lambda": "100", "architecture": "mlp", "architecture_options": '{"hidden": [32]}'}
"""POST /tasks fields that learn two digit classes in well under a second."""


@lru_cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images * (255 / 16)).round().astype(np.uint8), digits.target.astype(np.int64)


def digits(classes=(0, 1), per_class: int = 30, offset: int = 0) -> list[tuple[int, np.ndarray]]:
    """``per_class`` (label, 8x8 uint8 image) pairs of each class, the ``offset``-th onwards."""
    images, labels = _digits()
    return [
        (int(label), images[i])
        for label in classes
        for i in np.flatnonzero(labels == label)[offset : offset + per_class]
    ]


def encode(image: np.ndarray, format: str = "PNG", mode: str = "L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, "L").convert(mode).save(buffer, format=format)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def image_folder_zip(samples, prefix: str = "", mode: str = "L", format: str = "PNG") -> dict[str, bytes]:
    """Members ``{prefix}{label}/{i}.png`` for (label, image) pairs."""
    suffix = ".jpg" if format == "JPEG" else ".png"
    return {f"{prefix}{label}/{i:03d}{suffix}": encode(image, format, mode) for i, (label, image) in enumerate(samples)}


def parquet_bytes(columns: dict, metadata: dict | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def stored(database_url: str, artifact_root: str) -> tuple[dict, list]:
    """Row counts and artifact files: equal before and after a refused request."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        counts = {t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}
    engine.dispose()
    root = Path(artifact_root)
    return counts, sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def flat(samples) -> np.ndarray:
    return np.stack([image for _, image in samples])
