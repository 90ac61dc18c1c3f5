"""app/uploads.py, the client side of `retain teach`: a folder zipped on the fly, a body that reports
the bytes sent, references sent as a uri; through the real API and a real worker."""

import io
import zipfile
from pathlib import Path

import pytest
from data_files import FORM, digits, encode

from app.uploads import ProgressReader, UploadError, is_reference, teach_body, zip_folder, zipped_folder


def image_folder(root: Path, classes=(0, 1), per_class=30) -> Path:
    for i, (label, image) in enumerate(digits(classes, per_class=per_class)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        (root / str(label) / f"{i:03d}.png").write_bytes(encode(image))
    return root


def test_a_folder_is_zipped_with_relative_names_and_hidden_files_skipped(tmp_path):
    folder = image_folder(tmp_path / "pets", per_class=2)
    (folder / ".DS_Store").write_bytes(b"x")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    (folder / "notes.txt").write_text("hello " * 100)
    buffer = io.BytesIO()
    assert zip_folder(folder, buffer) == 5
    with zipfile.ZipFile(buffer) as archive:
        members = {info.filename: info.compress_type for info in archive.infolist()}
    assert members == {
        "0/000.png": zipfile.ZIP_STORED,
        "0/001.png": zipfile.ZIP_STORED,
        "1/002.png": zipfile.ZIP_STORED,
        "1/003.png": zipfile.ZIP_STORED,
        "notes.txt": zipfile.ZIP_DEFLATED,
    }

    with zipped_folder(folder) as archive:
        assert archive.exists() and zipfile.is_zipfile(archive)
    assert not archive.exists()  # the temporary zip is gone
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    with pytest.raises(UploadError, match="no files"), zipped_folder(tmp_path / "empty"):
        pass


def test_progress_reports_every_byte_and_restarts_on_rewind(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 1000)
    calls = []
    with path.open("rb") as raw:
        reader = ProgressReader(raw, lambda sent, total: calls.append((sent, total)))
        while reader.read(65536):
            pass
        assert calls[-1] == (256_000, 256_000) and [sent for sent, _ in calls] == sorted(sent for sent, _ in calls)
        reader.seek(0)
        reader.read(10)
        assert calls[-1] == (10, 256_000)


def test_a_folder_is_taught_through_the_api_with_upload_progress(client, settings, tmp_path, run_worker_once):
    folder = image_folder(tmp_path / "digits")
    sent = []
    with teach_body(
        folder,
        {"model": "u", "name": "folder", **FORM, "lr": None},
        progress=lambda done, total: sent.append((done, total)),
    ) as body:
        assert "lr" not in body["data"] and body["files"]["file"][0] == "digits.zip"
        answer = client.post("/tasks", **body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["dataset"]["format"] == "images" and answer.json()["dataset"]["labels"] == [0, 1]
    assert sent and sent[-1][0] == sent[-1][1] > 0  # every byte of the zip was reported sent
    assert run_worker_once() == 1
    assert client.get(f"/jobs/{answer.json()['job_id']}").json()["status"] == "succeeded"

    with teach_body(folder / "0" / "000.png", {"model": "u"}) as body:
        assert body["files"]["file"][0] == "000.png"  # a single file goes as it is


def test_references_go_as_a_uri_and_missing_paths_are_refused(tmp_path):
    assert is_reference("s3://bucket/key.parquet") and is_reference("file:///srv/data/t.zip")
    assert not is_reference("data/t.zip") and not is_reference(tmp_path)
    with teach_body("s3://bucket/key.parquet", {"model": "m", "epochs": 2}) as body:
        assert body == {"data": {"model": "m", "epochs": "2", "uri": "s3://bucket/key.parquet"}}
    with (
        pytest.raises(UploadError, match="neither a file nor a folder"),
        teach_body(tmp_path / "missing.npz", {"model": "m"}),
    ):
        pass
