"""Uploads -> checked splits -> stored artifact (app/datasets/parsing.py, app/datasets/storage.py).

The split is what keeps validation data out of the accuracy table: these tests check it is
disjoint, stratified, seeded, and that a file's own x_test is kept as the test split untouched.
"""

import io

import numpy as np
import pytest

from app.datasets.parsing import parse_dataset
from app.datasets.storage import load_dataset_splits, store_dataset
from app.errors import InvalidInput, PayloadTooLarge, UnsupportedFormat
from app.storage.artifacts import ArtifactStore

LIMITS = {"max_bytes": 5_000_000, "max_samples": 20_000}


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def parse(
    content: bytes,
    filename: str = "d.npz",
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
    **limits,
):
    return parse_dataset(
        filename,
        content,
        **{**LIMITS, **limits},
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
    )


def rows(x: np.ndarray) -> set[bytes]:
    return {sample.tobytes() for sample in x}


def distinct_samples(n: int, width: int = 5) -> np.ndarray:
    """Every row unique (its index is its first feature), so splits can be compared as sets."""
    x = np.random.default_rng(1).random((n, width)).astype(np.float32)
    x[:, 0] = np.arange(n)
    return x


def test_three_way_split_is_disjoint_stratified_and_complete():
    x, y = distinct_samples(200), np.arange(200) % 4
    dataset = parse(npz(x=x, y=y))
    splits = dataset.splits
    assert (dataset.n_train, dataset.n_validation, dataset.n_test) == (140, 20, 40)
    parts = [rows(splits[name].x) for name in ("train", "validation", "test")]
    assert sum(len(p) for p in parts) == 200 and set.union(*parts) == rows(x)  # every sample exactly once
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for name in ("validation", "test"):  # each class in proportion
        assert np.bincount(splits[name].label_index).tolist() == [len(splits[name]) // 4] * 4
    for name, split in splits.items():  # labels travel with their samples
        assert (y[split.x[:, 0].astype(int)] == np.asarray(dataset.labels)[split.label_index]).all(), name


def test_split_is_seeded():
    content = npz(x=distinct_samples(100), y=np.arange(100) % 2)
    same = [parse(content, seed=3).splits["test"].x for _ in range(2)]
    assert np.array_equal(*same)
    assert not np.array_equal(same[0], parse(content, seed=4).splits["test"].x)


def test_own_test_split_is_kept_and_validation_comes_from_x_only():
    x, y = distinct_samples(100), np.arange(100) % 2
    x_test = distinct_samples(30) + 1000.0  # disjoint from x
    y_test = np.arange(30) % 2
    dataset = parse(npz(x=x, y=y, x_test=x_test, y_test=y_test), test_fraction=0.5)
    assert dataset.n_test == 30 and np.array_equal(dataset.splits["test"].x, x_test)
    assert dataset.labels_of("test") == y_test.tolist()
    assert dataset.n_train + dataset.n_validation == 100  # test_fraction does not apply
    assert rows(dataset.splits["validation"].x) <= rows(x)


def test_image_npz_keeps_its_shape_and_grey_images_get_a_channel():
    x = np.random.default_rng(0).integers(0, 255, (20, 8, 8), dtype=np.uint8)
    dataset = parse(npz(x=x, y=np.arange(20) % 2))
    assert dataset.input_shape == (1, 8, 8)
    assert dataset.splits["train"].x.dtype == np.uint8  # samples stored as uploaded; the learner scales them


def test_csv_with_string_labels():
    lines = ["f1,label,f2"] + [f"{i}.5,{'cat' if i % 2 else 'dog'},{-i}" for i in range(30)]
    dataset = parse("\n".join(lines).encode(), filename="d.csv")
    assert dataset.format == "csv" and dataset.input_shape == (2,)
    assert dataset.labels == ["cat", "dog"]
    assert dataset.n_train + dataset.n_validation + dataset.n_test == 30


@pytest.mark.parametrize(
    "content, filename, error, words",
    [
        (b"a,b\n1,2\n", "d.csv", InvalidInput, "label"),
        (b"x,label\n1,a\nnope,b\n", "d.csv", InvalidInput, "line 3"),
        (npz(x=np.zeros((5, 2)), y=np.arange(4)), "d.npz", InvalidInput, "5 samples"),
        (npz(x=np.zeros((5, 2))), "d.npz", InvalidInput, "'y'"),
        (npz(x=np.zeros((5, 2)), y=np.array([0.5, 1, 0, 1, 0])), "d.npz", InvalidInput, "non-integer"),
        (b"PK\x03\x04 not really a zip", "d.npz", InvalidInput, "damaged"),
        (b"\x80\x04\x95pickle", "d.pkl", UnsupportedFormat, "pickle"),
        (npz(x=np.zeros((3, 2)), y=np.arange(3)), "d.npz", InvalidInput, "too few"),
    ],
)
def test_bad_uploads_say_what_is_wrong(content, filename, error, words):
    with pytest.raises(error) as raised:
        parse(content, filename=filename)
    assert words in raised.value.message


def test_oversize_arrays_are_refused_from_their_headers():
    """A compressed .npz declaring huge arrays is refused before its data is decompressed."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((4000, 1000), dtype=np.float32), y=np.arange(4000) % 2)
    content = buffer.getvalue()
    assert len(content) < 100_000  # zeros compress to almost nothing
    with pytest.raises(PayloadTooLarge, match="decompress"):
        parse(content, max_bytes=200_000)


def test_fractions_must_be_inside_zero_one():
    with pytest.raises(InvalidInput, match="validation_fraction"):
        parse(npz(x=np.zeros((10, 2)), y=np.arange(10) % 2), validation_fraction=1.0)


def test_stored_splits_round_trip_with_the_users_labels(tmp_path):
    x = distinct_samples(60)
    y = np.array(["even", "odd"])[np.arange(60) % 2]
    dataset = parse(npz(x=x, y=y))
    store = ArtifactStore(str(tmp_path / "artifacts"))
    reference = store_dataset(store, dataset)
    assert store_dataset(store, dataset) == reference  # content-addressed: stored once
    loaded = load_dataset_splits(store, reference.uri, reference.sha256)
    for name in ("train", "validation", "test"):
        assert np.array_equal(loaded[name].x, dataset.splits[name].x)
        assert list(loaded[name].y) == dataset.labels_of(name)
