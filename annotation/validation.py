"""Safe image intake: check uploaded or imported image bytes before anything else touches them.

Pure module (no Django import); it never writes files.

What is accepted (see ``Limits``):

* formats: PNG, JPEG, TIFF (identified from the content, never from the file name; a JPEG named
  ``x.png`` is a valid JPEG and its ``ValidImage.extension`` is ``.jpg``);
* modes: 8-bit grey ``L``, ``RGB``, ``RGBA`` and 16-bit grey (``I;16``, ``I;16B``, ``I;16L``; a
  PNG that an older Pillow opens as ``I`` is 16-bit grey too, since PNG has no 32-bit mode).
  Rejected as ``unsupported_mode``: bilevel ``1``, palette ``P``/``PA``, grey+alpha ``LA``,
  ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, 32-bit ``I`` and float ``F`` images, and anything else:
  convert such images to RGB (or grey) before uploading;
* a multi-page TIFF is checked on its first page, which is the one the platform uses.

Checks run in this order, the first failure wins: ``empty`` -> ``too_large`` -> format from the
header (``not_an_image``, ``unsupported_format``) -> pixel count from the header, before any
pixel is decoded (``too_many_pixels``, the decompression-bomb guard) -> ``unsupported_mode`` ->
full decode (``corrupt``).  Pillow's global ``LOAD_TRUNCATED_IMAGES`` and ``MAX_IMAGE_PIXELS``
are read, never changed: a truncated file is always ``corrupt``.  Pillow raises its own
``DecompressionBombError`` for images over twice ``Image.MAX_IMAGE_PIXELS`` (about 179 million
pixels) before this module sees the size; that is reported as ``too_many_pixels`` as well, so a
``Limits.max_pixels`` above Pillow's own hard limit cannot take effect.

``iter_image_sources`` walks a folder, a zip file or a single file and yields lazily read
``Source`` objects with safe relative names; ``validate_image_bytes`` then checks each one.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

MiB = 1024 * 1024

#: Extensions that name image files in folders and zips (compared case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})

#: The extension a valid image of each format is stored under.
FORMAT_EXTENSIONS: dict[str, str] = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}

#: Short reason codes and what each means; ``ImageRejected.reason`` is one of these keys.
REASONS: dict[str, str] = {
    "empty": "the file is empty (0 bytes)",
    "too_large": "the file is larger than the size limit",
    "not_an_image": "not an image file",
    "unsupported_format": "image format not supported",
    "corrupt": "truncated or corrupt image data",
    "too_many_pixels": "image has more pixels than the limit",
    "unsupported_mode": "pixel format not supported",
    "unsafe_name": "unsafe file name",
    "duplicate": "the same file name appears twice",
}


@dataclass(frozen=True)
class Limits:
    """What ``validate_image_bytes`` and ``iter_image_sources`` accept."""

    max_bytes: int = 200 * MiB
    #: Decompression-bomb guard, checked from the header before decoding.
    max_pixels: int = 100_000_000
    formats: frozenset[str] = frozenset({"PNG", "JPEG", "TIFF"})
    #: 8-bit grey, RGB, RGBA and 16-bit grey (Pillow spells 16-bit grey ``I;16``/``I;16B``/``I;16L``).
    modes: frozenset[str] = frozenset({"L", "RGB", "RGBA", "I;16", "I;16B", "I;16L"})


class ImageRejected(Exception):
    """An input that is not accepted as an image; ``reason`` is a short code from ``REASONS``.

    ``str(exc)`` is a sentence for people, naming the file: ``"x.png: truncated or corrupt image
    data (image file is truncated)"``.
    """

    def __init__(self, reason: str, message: str | None = None, *, name: str | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        if message is None:
            message = REASONS[reason]
            if name is not None:
                message = f"{_display(name)}: {message}"
        super().__init__(message)
        self.reason = reason
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable (Celery results, multiprocessing)
        return (self.__class__, (self.reason, self.message), {"name": self.name})


@dataclass(frozen=True)
class ValidImage:
    """An image that passed every check, described from its own bytes."""

    name: str
    width: int
    height: int
    format: str  # "PNG" | "JPEG" | "TIFF"
    mode: str
    checksum: str  # sha256 hex of the bytes
    size_bytes: int
    extension: str  # ".png" | ".jpg" | ".tif"


def _display(name: str) -> str:
    """A file name fit for a message (control characters made visible)."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return repr(name)
    return name


def _reject(reason: str, name: str, detail: str | None = None) -> ImageRejected:
    text = f"{_display(name)}: {REASONS[reason]}"
    if detail:
        text += f" ({detail})"
    return ImageRejected(reason, text, name=name)


def _mode_accepted(image_format: str, mode: str, limits: Limits) -> bool:
    if mode in limits.modes:
        return True
    # Pillow < 11 opens 16-bit grey PNGs as "I"; PNG has no other way to reach that mode.
    return image_format == "PNG" and mode == "I" and "I;16" in limits.modes


def validate_image_bytes(name: str, data: bytes, limits: Limits = Limits()) -> ValidImage:
    """Check ``data`` (the content of the file called ``name``) and describe it.

    Raises ImageRejected with the first problem found (see the module docstring for the order).
    """
    size = len(data)
    if size == 0:
        raise _reject("empty", name)
    if size > limits.max_bytes:
        raise _reject("too_large", name, f"{size:,} bytes, limit {limits.max_bytes:,}")

    with warnings.catch_warnings():
        # We apply our own pixel limit below; Pillow's warning threshold is not ours.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise _reject("too_many_pixels", name, str(exc)) from None
        except UnidentifiedImageError:
            raise _reject("not_an_image", name, "no known image header") from None
        except Exception as exc:  # Pillow raises many types on a malformed header
            raise _reject("corrupt", name, f"unreadable header: {exc}") from None

    with image:
        image_format = image.format or ""
        if image_format not in limits.formats:
            allowed = ", ".join(sorted(limits.formats))
            raise _reject(
                "unsupported_format", name, f"{image_format or 'unknown'}; accepted: {allowed}"
            )
        width, height = image.size
        if width <= 0 or height <= 0:
            raise _reject("corrupt", name, f"header gives a size of {width} x {height}")
        pixels = width * height
        if pixels > limits.max_pixels:
            raise _reject(
                "too_many_pixels",
                name,
                f"{width} x {height} = {pixels:,} pixels, limit {limits.max_pixels:,}",
            )
        mode = image.mode
        if not _mode_accepted(image_format, mode, limits):
            allowed = ", ".join(sorted(limits.modes))
            raise _reject("unsupported_mode", name, f"mode {mode}; accepted: {allowed}")
        try:
            image.load()
        except Image.DecompressionBombError as exc:
            raise _reject("too_many_pixels", name, str(exc)) from None
        except MemoryError:
            raise
        except Exception as exc:  # truncated data, bad compressed streams, broken tiles...
            raise _reject("corrupt", name, str(exc) or type(exc).__name__) from None

    return ValidImage(
        name=name,
        width=int(width),
        height=int(height),
        format=image_format,
        mode=mode,
        checksum=hashlib.sha256(data).hexdigest(),
        size_bytes=size,
        extension=FORMAT_EXTENSIONS.get(image_format, "." + image_format.lower()),
    )


# ---------------------------------------------------------------------------------------------
# Names from folders and zip files

_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_member_name(name: str) -> str:
    """Return ``name`` as a clean relative POSIX path, or raise ImageRejected("unsafe_name").

    Backslashes count as separators (zips made on Windows use them); ``.`` and empty components
    are dropped. Refused: empty names, NUL and other control characters, absolute paths (``/x``,
    ``\\\\server\\x``), drive letters (``C:x``) and any ``..`` component.
    """
    if not isinstance(name, str) or not name:
        raise ImageRejected("unsafe_name", "empty file name", name=str(name))
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise _reject("unsafe_name", name, "control character in the name")
    text = name.replace("\\", "/")
    if text.startswith("/"):
        raise _reject("unsafe_name", name, "absolute path")
    if _DRIVE.match(text):
        raise _reject("unsafe_name", name, "drive letter")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _reject("unsafe_name", name, "'..' leaves the folder")
    if not parts:
        raise _reject("unsafe_name", name, "no file name")
    return "/".join(parts)


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _is_hidden(name: str) -> bool:
    """Hidden files and folders, and macOS's resource-fork folder in zips."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


@dataclass(frozen=True)
class Source:
    """One candidate image from a folder, zip or file.

    ``name`` is the safe relative POSIX name when ``error`` is None. When ``error`` is set the
    entry was refused before reading (unsafe or duplicate name, too large), ``name`` is the name
    as found and ``read()`` raises that error.
    """

    name: str
    error: ImageRejected | None = None
    _reader: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        if self.error is not None:
            raise self.error
        assert self._reader is not None
        return self._reader()


def _read_capped(stream, limit: int) -> bytes:
    """At most ``limit + 1`` bytes: enough for validation to see that the file is too large."""
    return stream.read(limit + 1)


def iter_image_sources(path: str | os.PathLike, limits: Limits = Limits()) -> Iterator[Source]:
    """Yield the image candidates in ``path``: a folder (recursively), a ``.zip`` file or one file.

    * Folders and zips yield only names ending in .png .jpg .jpeg .tif .tiff (any case), sorted
      by name; other files (annotation .json/.csv/.txt...) are skipped silently, as are hidden
      files and folders and ``__MACOSX``. A file with an image extension is yielded whatever it
      holds, so that validation can reject it.
    * Folder walks never descend into symbolic links to folders; a linked file is read only when
      it resolves inside the folder, otherwise it comes with an ``unsafe_name`` error.
    * Zip member names go through ``safe_member_name``; a refused name comes with its error
      (whatever its extension: traversal in an archive is worth reporting). A member whose
      declared uncompressed size exceeds ``limits.max_bytes`` comes with a ``too_large`` error
      and is never decompressed. Two members with the same safe name: the second is a
      ``duplicate`` error. Sources of a zip should be read while iterating (the archive stays open
      until the iterator ends; reading later reopens it).
    * A single file is yielded under its base name, whatever its extension.

    Reading is lazy: ``Source.read()`` returns at most ``max_bytes + 1`` bytes.
    Raises FileNotFoundError when ``path`` does not exist and ImageRejected("corrupt") for a
    ``.zip`` that is not a readable archive.
    """
    root = Path(path)
    if root.is_dir():
        yield from _iter_folder(root, limits)
    elif root.is_file():
        if root.suffix.lower() == ".zip":
            yield from _iter_zip(root, limits)
        else:
            yield _file_source(root, root.name, limits)
    else:
        raise FileNotFoundError(f"{root}: no such file or folder")


def _file_source(file_path: Path, name: str, limits: Limits) -> Source:
    try:
        size = file_path.stat().st_size
    except OSError as exc:
        return Source(name, _reject("corrupt", name, f"cannot read: {exc.strerror or exc}"))
    if size > limits.max_bytes:
        return Source(
            name, _reject("too_large", name, f"{size:,} bytes, limit {limits.max_bytes:,}")
        )

    def read() -> bytes:
        try:
            with open(file_path, "rb") as handle:
                return _read_capped(handle, limits.max_bytes)
        except OSError as exc:
            raise _reject("corrupt", name, f"cannot read: {exc.strerror or exc}") from None

    return Source(name, None, read)


def _iter_folder(root: Path, limits: Limits) -> Iterator[Source]:
    real_root = root.resolve()
    found: list[tuple[str, Path, bool]] = []  # (relative name, path, is link leaving the root)
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            rel = prefix + entry.name
            if entry.name.startswith(".") or entry.name == "__MACOSX":
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append((Path(entry.path), rel + "/"))
                continue
            if not _is_image_name(entry.name):
                continue
            outside = False
            if entry.is_symlink():
                target = Path(entry.path).resolve()
                outside = not target.is_relative_to(real_root)
                if not outside and not target.is_file():
                    continue  # a link to a folder or a dangling link: nothing to read
            elif not entry.is_file(follow_symlinks=False):
                continue  # sockets, fifos, devices
            found.append((rel, Path(entry.path), outside))
    found.sort(key=lambda item: item[0])
    for rel, file_path, outside in found:
        if outside:
            yield Source(rel, _reject("unsafe_name", rel, "link points outside the folder"))
        else:
            yield _file_source(file_path, rel, limits)


class _ZipHandle:
    """The archive open while iterating; reopened on demand if read after the iterator closed."""

    def __init__(self, path: Path):
        self.path = path
        self.archive: zipfile.ZipFile | None = zipfile.ZipFile(path)

    def read_member(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        if self.archive is not None:
            with self.archive.open(info) as member:
                return _read_capped(member, limit)
        with zipfile.ZipFile(self.path) as archive, archive.open(info) as member:
            return _read_capped(member, limit)

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()
            self.archive = None


def _iter_zip(zip_path: Path, limits: Limits) -> Iterator[Source]:
    try:
        handle = _ZipHandle(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _reject("corrupt", zip_path.name, f"not a readable zip archive: {exc}") from None
    try:
        assert handle.archive is not None
        members: list[tuple[str, zipfile.ZipInfo | None, ImageRejected | None]] = []
        for info in handle.archive.infolist():
            if info.is_dir():
                continue
            try:
                name = safe_member_name(info.filename)
            except ImageRejected as exc:
                members.append((info.filename, None, exc))
                continue
            if _is_hidden(name) or not _is_image_name(name):
                continue
            members.append((name, info, None))
        members.sort(key=lambda item: item[0])

        seen: set[str] = set()
        for name, info, error in members:
            if error is not None:
                yield Source(name, error)
                continue
            assert info is not None
            if name in seen:
                yield Source(name, _reject("duplicate", name, "listed twice in the archive"))
                continue
            seen.add(name)
            if info.file_size > limits.max_bytes:
                yield Source(
                    name,
                    _reject(
                        "too_large",
                        name,
                        f"{info.file_size:,} bytes uncompressed, limit {limits.max_bytes:,}",
                    ),
                )
                continue
            if info.flag_bits & 0x1:
                yield Source(name, _reject("corrupt", name, "encrypted zip member"))
                continue
            yield Source(name, None, _zip_reader(handle, info, name, limits))
    finally:
        handle.close()


def _zip_reader(handle: _ZipHandle, info: zipfile.ZipInfo, name: str, limits: Limits):
    def read() -> bytes:
        try:
            return handle.read_member(info, limits.max_bytes)
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            OSError,
            EOFError,
            ValueError,
            RuntimeError,
            NotImplementedError,
        ) as exc:
            raise _reject("corrupt", name, f"cannot extract: {exc}") from None

    return read


__all__ = [
    "FORMAT_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "REASONS",
    "ImageRejected",
    "Limits",
    "Source",
    "ValidImage",
    "iter_image_sources",
    "safe_member_name",
    "validate_image_bytes",
]
