"""Image datasets: a zip of class folders (torchvision's ``ImageFolder`` layout) and the image
decoder that Parquet image columns share.

Layout, as ``ImageFolder`` reads it::

    cat/0001.png  cat/0002.png  dog/0001.jpg ...            labels are the folder names
    train/cat/0001.png ... test/cat/0101.png ...           optional train/ and test/ top folders

One folder wrapping everything (what zipping the folder itself gives) is looked through.
Images deeper inside a class folder belong to that class; files that are not images
(README, .DS_Store, __MACOSX/) are skipped. Folder names that are all integers become
integer labels, as in a .csv.

The zip is untrusted and is never extracted to disk. Before any image is decoded every
member is checked: no absolute names or ``..`` parts, no encrypted members, at most
``max_samples`` images and ``max_samples + 10,000`` members, and the uncompressed total at
most ``MAX_EXPANSION`` x the upload limit (images are compressed already, so a real image
folder barely grows; a zip bomb does). Images are decoded by Pillow, restricted to the
common formats, one at a time: a size over ``MAX_PIXELS`` (a decompression bomb) is refused
from the header before the pixels are decoded; truncated or corrupt files are refused,
naming the file (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off).

Shape. A new model takes its input shape [C, H, W] from the first image (sorted by name):
C = 1 for grey modes (1, L, LA, I, F), else 3 (RGB; alpha is dropped, palettes are
expanded); every other image is converted to that mode and must have that size. For an
existing model, images are converted to its channels (1 -> L, 3 -> RGB) and must have its
H x W. Images are never resized: resizing changes what the model sees (aspect, blur,
interpolation) without the user choosing it, and a task whose images differ in size is more
often a mistake than a wish; the error names both sizes so the fix is one resize away.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath

import numpy as np

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedFormat

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
# Pillow plugins allowed to parse untrusted bytes: the common raster formats only (never EPS,
# which runs Ghostscript, nor the long tail of rarely exercised decoders).
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_PIXELS = 4096 * 4096  # per image; far above any training image, far below a bomb
MAX_EXPANSION = 2  # uncompressed members may total at most this many times the byte limit
EXTRA_MEMBERS = 10_000  # folders and other files allowed beside the images
SPLIT_FOLDERS = ("train", "test")


class ImageDecoder:
    """Untrusted image bytes -> C x H x W uint8, all of one shape.

    ``input_shape`` is the model's when it has one; otherwise the first decoded image fixes it.
    """

    def __init__(self, input_shape: tuple[int, ...] | None = None):
        if input_shape is not None:
            input_shape = tuple(int(d) for d in input_shape)
            if len(input_shape) != 3 or input_shape[0] not in (1, 3):
                raise InvalidInput(
                    f"the model takes samples of shape {list(input_shape)}; images give samples of "
                    "shape [C, H, W] with C = 1 (grey) or 3 (RGB), so they cannot teach it"
                )
        self.shape = input_shape
        self.first: str | None = None  # the image that fixed the shape, when no model did

    @property
    def mode(self) -> str:
        return "L" if self.shape[0] == 1 else "RGB"

    def decode(self, data: bytes, name: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
        except UnidentifiedImageError:
            raise InvalidInput(
                f"image {name!r} cannot be read: it is corrupt or not in an accepted format ("
                f"{', '.join(f.lower() for f in PILLOW_FORMATS)})"
            ) from None
        except Image.DecompressionBombError:
            raise PayloadTooLarge(
                f"image {name!r} declares too many pixels; the limit is {MAX_PIXELS} pixels per image"
            ) from None
        except Exception as error:  # Pillow raises many kinds on malformed headers
            raise InvalidInput(f"image {name!r} is corrupt: {error}") from None
        with image:
            width, height = image.size
            if width * height > MAX_PIXELS:  # from the header, before any pixel is decoded
                raise PayloadTooLarge(
                    f"image {name!r} is {width}x{height} pixels; the limit is {MAX_PIXELS} pixels per image"
                )
            if self.shape is None:
                self.shape = (1 if image.mode in GREY_MODES else 3, height, width)
                self.first = name
            if (height, width) != self.shape[1:]:
                raise InvalidInput(self._size_message(name, width, height))
            try:
                image.load()  # truncated data raises here (LOAD_TRUNCATED_IMAGES is off)
                if image.mode != self.mode:
                    image = image.convert(self.mode)
                pixels = np.asarray(image, dtype=np.uint8)
            except Exception as error:
                raise InvalidInput(f"image {name!r} is truncated or corrupt: {error}") from None
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def _size_message(self, name: str, width: int, height: int) -> str:
        want = f"{self.shape[2]}x{self.shape[1]}"
        if self.first is None:
            return (
                f"image {name!r} is {width}x{height} pixels (width x height); the model takes {want} images "
                f"(input shape {list(self.shape)}). Images are not resized here: resize them to {want} first"
            )
        return (
            f"image {name!r} is {width}x{height} pixels (width x height) but the first image {self.first!r} is "
            f"{want}; all images of a task must have one size (resize them first)"
        )


# ------------------------------------------------------------------------ zip archives


def is_image_folder_zip(content: bytes) -> bool:
    """A zip holding no .npy arrays is read as image folders (an .npz holds nothing else)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False  # the .npz reader reports the damage
    return not any(name.endswith(".npy") for name in names)


def parse_image_zip(content: bytes, limits, input_shape: tuple[int, ...] | None = None):
    """Image folders in a zip -> ``((x, y), (x_test, y_test) | None)``: x N x C x H x W uint8, y labels."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise InvalidInput(f"the zip archive is damaged: {error}") from None
    with archive:
        members = archive.infolist()
        max_members = limits.max_samples + EXTRA_MEMBERS
        if len(members) > max_members:
            raise PayloadTooLarge(
                f"the zip has {len(members)} members; the limit is {max_members} "
                f"({limits.max_samples} images plus {EXTRA_MEMBERS} folders and other files)"
            )
        for info in members:
            check_member_name(info.filename)
        images = [info for info in members if is_image_member(info)]
        if not images:
            raise UnsupportedFormat(
                "the zip holds neither .npy arrays (an .npz) nor images in class folders "
                f"(class_name/image.png, with {', '.join(IMAGE_EXTENSIONS)})"
            )
        encrypted = next((info.filename for info in images if info.flag_bits & 0x1), None)
        if encrypted:
            raise InvalidInput(f"zip member {encrypted!r} is encrypted; send an unencrypted zip")
        if len(images) > limits.max_samples:
            raise PayloadTooLarge(f"the zip holds {len(images)} images; the limit is {limits.max_samples} samples")
        max_unpacked = MAX_EXPANSION * limits.max_bytes
        unpacked = sum(info.file_size for info in images)
        if unpacked > max_unpacked:
            raise PayloadTooLarge(
                f"the images in the zip unpack to {unpacked} bytes; the limit is {max_unpacked} "
                f"bytes ({MAX_EXPANSION} x the {limits.max_bytes}-byte upload limit)"
            )
        splits = layout(sorted(info.filename for info in images))
        by_name = {info.filename: info for info in images}
        decoder = ImageDecoder(input_shape)
        decoded = {
            split: read_images(archive, [by_name[name] for name in entries], labels, decoder, limits, total=len(images))
            for split, (entries, labels) in splits.items()
        }
    train = decoded["train"]
    test = decoded.get("test")
    y_all = np.concatenate([train[1]] + ([test[1]] if test else []))
    if all(re.fullmatch(r"[+-]?\d{1,18}", label) for label in y_all.tolist()):  # integer folder names: int labels
        train = (train[0], train[1].astype(np.int64))
        test = (test[0], test[1].astype(np.int64)) if test else None
    return train, test


def check_member_name(name: str) -> None:
    """Refuse names that would escape a folder if anyone ever extracted the zip."""
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise InvalidInput(
            f"zip member {name!r} has an absolute path or a '..' part; member names must be "
            "relative paths inside the archive (class_name/image.png)"
        )


def is_image_member(info: zipfile.ZipInfo) -> bool:
    path = PurePosixPath(info.filename)
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in path.parts)
    return not info.is_dir() and not hidden and path.suffix.lower() in IMAGE_EXTENSIONS


def layout(names: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Member names -> {"train": (names, labels), optionally "test": ...} by the ImageFolder layout."""
    parts = [PurePosixPath(name).parts for name in names]
    depth = 0  # leading folders shared by every image (a wrapping folder), looked through
    while (
        all(len(p) > depth + 2 for p in parts)
        and len({p[depth] for p in parts}) == 1
        and parts[0][depth].lower() not in SPLIT_FOLDERS
    ):
        depth += 1
    tops = {p[depth].lower() for p in parts if len(p) > depth + 1}
    if tops & set(SPLIT_FOLDERS):
        outside = next(
            (
                name
                for name, p in zip(names, parts, strict=True)
                if p[depth].lower() not in SPLIT_FOLDERS or len(p) < depth + 3
            ),
            None,
        )
        if outside:
            raise InvalidInput(
                f"the zip has train/ or test/ folders, so every image must lie in "
                f"train/<class>/ or test/<class>/; {outside!r} does not"
            )
        if "train" not in tops:
            raise InvalidInput(
                "the zip has a test/ folder but no train/ folder: the images to learn from go in train/<class>/"
            )
        splits: dict[str, tuple[list[str], list[str]]] = {}
        for name, p in zip(names, parts, strict=True):
            entries, labels = splits.setdefault(p[depth].lower(), ([], []))
            entries.append(name)
            labels.append(p[depth + 1])
        return splits
    loose = next((name for name, p in zip(names, parts, strict=True) if len(p) < depth + 2), None)
    if loose:
        raise InvalidInput(
            f"image {loose!r} is not inside a class folder; the zip needs class_name/image.png "
            "(the folder name is the label)"
        )
    return {"train": (names, [p[depth] for p in parts])}


def read_images(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], labels: list[str], decoder: ImageDecoder, limits, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``infos`` in order; ``total`` images of the whole upload count against the decoded-size limit."""
    x = None
    for i, info in enumerate(infos):
        try:
            with archive.open(info) as stream:
                data = stream.read(info.file_size + 1)  # zipfile stops at the declared size and checks the CRC
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as error:
            raise InvalidInput(f"zip member {info.filename!r} cannot be read: {error}") from None
        pixels = decoder.decode(data, info.filename)
        if x is None:
            check_decoded_size(total, pixels.shape, limits)
            x = np.empty((len(infos), *pixels.shape), dtype=np.uint8)
        x[i] = pixels
    return x, np.asarray(labels, dtype=str)


def check_decoded_size(n: int, sample_shape: tuple[int, ...], limits) -> None:
    """N uint8 images of ``sample_shape`` must fit the decoded-size limit before they are allocated."""
    size = n * int(np.prod(sample_shape))
    if size > limits.max_array_bytes:
        raise PayloadTooLarge(
            f"{n} images of shape {list(sample_shape)} decode to {size} bytes; the limit is "
            f"{limits.max_array_bytes} bytes"
        )
