"""Image folders zipped in torchvision's ImageFolder layout: taught through the API and a real worker,
predicted; every bad archive or image is a 4xx naming what is wrong, and nothing is stored."""

import io
import zipfile

import numpy as np
import pytest
from data_files import FORM, digits, encode, image_folder_zip, stored, zip_bytes


def post(client, data: bytes, model="pics", filename="pics.zip", **fields):
    return client.post("/tasks", data={"model": model, **FORM, **fields}, files={"file": (filename, data)})


def test_image_folders_are_taught_predicted_and_a_later_rgb_task_is_converted(client, settings, run_worker_once):
    first = digits((0, 1), per_class=40)
    answer = post(client, zip_bytes(image_folder_zip(first, prefix="digits/")))  # a wrapping folder is looked through
    assert answer.status_code == 202, answer.text
    dataset = answer.json()["dataset"]
    assert (dataset["format"], dataset["input_shape"], dataset["labels"]) == ("images", [1, 8, 8], [0, 1])
    assert dataset["n_train"] + dataset["n_validation"] + dataset["n_test"] == 80
    assert run_worker_once() == 1
    assert client.get(f"/jobs/{answer.json()['job_id']}").json()["status"] == "succeeded"

    unseen = digits((0, 1), per_class=10, offset=60)
    predicted = client.post("/predict", json={"model": "pics", "inputs": [image[None].tolist() for _, image in unseen]})
    assert predicted.status_code == 200, predicted.text
    hits = [p["label"] == label for p, (label, _) in zip(predicted.json()["predictions"], unseen, strict=True)]
    assert sum(hits) >= 16, hits

    # train/ and test/ top folders; RGB JPEGs become the model's one grey channel
    second = {
        **image_folder_zip(digits((2, 3), per_class=30), "train/", mode="RGB", format="JPEG"),
        **image_folder_zip(digits((2, 3), per_class=8, offset=40), "test/", mode="RGB", format="JPEG"),
        "README.txt": b"not an image: skipped",
        "__MACOSX/train/2/._000.jpg": b"resource fork: skipped",
    }
    answer = post(client, zip_bytes(second), name="rgb")
    assert answer.status_code == 202, answer.text
    dataset = answer.json()["dataset"]
    assert dataset["input_shape"] == [1, 8, 8] and dataset["n_test"] == 16 and dataset["labels"] == [2, 3]
    run_worker_once()
    assert client.get(f"/jobs/{answer.json()['job_id']}").json()["status"] in ("succeeded", "rejected")


def test_an_rgb_first_task_makes_a_three_channel_model_with_string_labels(client, settings):
    samples = [("cat" if label else "dog", image) for label, image in digits((0, 1), per_class=20)]
    answer = post(client, zip_bytes(image_folder_zip(samples, mode="RGB")))
    assert answer.status_code == 202, answer.text
    assert answer.json()["dataset"]["input_shape"] == [3, 8, 8]
    assert answer.json()["dataset"]["labels"] == ["cat", "dog"]


def truncated_png() -> bytes:
    data = encode(digits((0,), per_class=1)[0][1])
    return data[: len(data) // 2]


def big_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, format="PNG")  # 25 M pixels, a few KB compressed
    return buffer.getvalue()


def good(n=10) -> dict[str, bytes]:
    return image_folder_zip(digits((0, 1), per_class=n))


def zip_with_raw_name(name: str) -> bytes:
    """A zip whose member is literally named ``name`` (zipfile would keep it; extractall would not)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, data in good().items():
            archive.writestr(member, data)
        archive.writestr(zipfile.ZipInfo(name), encode(digits((0,), per_class=1)[0][1]))
    return buffer.getvalue()


def bigger(image: np.ndarray) -> bytes:
    return encode(np.pad(image, ((0, 2), (0, 2))))


BAD = {
    "corrupt image": (
        {**good(), "1/broken.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40},
        422,
        ["1/broken.png", "corrupt"],
    ),
    "truncated image": ({**good(), "0/cut.png": truncated_png()}, 422, ["0/cut.png", "truncated"]),
    "not an image": ({**good(), "0/notes.png": b"hello, I am text"}, 422, ["0/notes.png", "accepted format"]),
    "mixed sizes": ({**good(), "1/zz.png": bigger(digits((1,), per_class=1)[0][1])}, 422, ["10x10", "8x8", "1/zz.png"]),
    "dot-dot member": (zip_with_raw_name("0/../../escape.png"), 422, ["'..'", "escape.png"]),
    "absolute member": (zip_with_raw_name("/etc/cron.d/x.png"), 422, ["absolute"]),
    "loose image": (
        {**good(), "stray.png": encode(digits((0,), per_class=1)[0][1])},
        422,
        ["stray.png", "class folder"],
    ),
    "test without train": (image_folder_zip(digits((0, 1), per_class=5), "test/"), 422, ["train/"]),
    "one class": (image_folder_zip(digits((0,), per_class=10)), 422, ["two classes"]),
    "no images": ({"notes/readme.txt": b"nothing"}, 415, ["neither"]),
    "decompression bomb": ({**good(), "0/huge.png": big_png()}, 413, ["0/huge.png", "pixels"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_image_folders_are_refused_and_nothing_is_stored(client, database_url, settings, case):
    members, status, words = BAD[case]
    data = members if isinstance(members, bytes) else zip_bytes(members)
    before = stored(database_url, settings.artifact_uri)
    answer = post(client, data)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert all(word in detail for word in words), detail
    assert stored(database_url, settings.artifact_uri) == before


def test_limits_on_members_and_unpacked_size_name_the_limit(client, database_url, settings):
    from app.datasets import images

    zip_bomb = {**good(), "0/pad.png": b"\x00" * (2 * settings.max_upload_bytes + 1)}  # deflates to a few KB
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in zip_bomb.items():
            archive.writestr(name, data)
    before = stored(database_url, settings.artifact_uri)
    answer = post(client, buffer.getvalue())
    assert answer.status_code == 413 and "unpack" in answer.json()["detail"], answer.text
    assert f"{images.MAX_EXPANSION} x the {settings.max_upload_bytes}-byte" in answer.json()["detail"]

    many = settings.max_upload_samples + images.EXTRA_MEMBERS + 1
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(many):
            archive.writestr(f"0/{i}.txt", b"")
    answer = post(client, buffer.getvalue())
    assert answer.status_code == 413 and f"the limit is {many - 1}" in answer.json()["detail"], answer.text
    assert stored(database_url, settings.artifact_uri) == before


def test_an_existing_model_refuses_images_of_another_size_naming_both(client, database_url, settings):
    assert post(client, zip_bytes(good())).status_code == 202
    before = stored(database_url, settings.artifact_uri)
    larger = [(label, np.pad(image, ((0, 4), (0, 4)))) for label, image in digits((0, 1), per_class=10)]
    answer = post(client, zip_bytes(image_folder_zip(larger)))
    assert answer.status_code == 422, answer.text
    assert "12x12" in answer.json()["detail"] and "8x8" in answer.json()["detail"]
    assert "[1, 8, 8]" in answer.json()["detail"]
    assert stored(database_url, settings.artifact_uri) == before
