"""Safe image intake: every bad input is rejected with its reason, good ones are described."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from annotation.validation import (
    ImageRejected,
    Limits,
    ValidImage,
    iter_image_sources,
    safe_member_name,
    validate_image_bytes,
)

# --- helpers: images made in memory ------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def rgb_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb_image(width, height), "PNG")


def jpeg_bytes(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb_image(width, height), "JPEG", quality=90)


def raw_png(width: int, height: int, payload: bytes = b"\x00" * 16) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with a tiny compressed payload."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(payload))
        + chunk(b"IEND", b"")
    )


def rejected(name: str, data: bytes, limits: Limits = Limits()) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        validate_image_bytes(name, data, limits)
    return info.value


# --- validate_image_bytes: bad inputs ------------------------------------------------------------


def test_zero_bytes_is_rejected_as_empty():
    exc = rejected("blank.png", b"")
    assert exc.reason == "empty"
    assert str(exc).startswith("blank.png: ")


def test_random_bytes_named_png_are_not_an_image():
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    exc = rejected("noise.png", data)
    assert exc.reason == "not_an_image"
    assert "noise.png" in str(exc)


def test_text_file_named_jpg_is_not_an_image():
    assert rejected("notes.jpg", b"cell 1: HSIL\n").reason == "not_an_image"


def test_truncated_png_is_corrupt():
    data = png_bytes()
    exc = rejected("x.png", data[: len(data) // 2])
    assert exc.reason == "corrupt"
    assert str(exc).startswith("x.png: truncated or corrupt image data (")
    assert "truncated" in str(exc)


def test_truncated_jpeg_is_corrupt():
    data = jpeg_bytes()
    exc = rejected("x.jpg", data[: len(data) // 2])
    assert exc.reason == "corrupt"
    assert "truncated" in str(exc)


def test_truncated_image_does_not_change_pillows_global_setting():
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    data = png_bytes()
    rejected("x.png", data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is before


def test_corrupt_compressed_stream_is_corrupt():
    # A plausible header with pixel data that is not a valid stream for it.
    exc = rejected("bad.png", raw_png(32, 32, payload=b"\x07" * 5))
    assert exc.reason == "corrupt"


def test_header_claiming_50000_square_pixels_is_too_many_pixels():
    # 2.5 gigapixels: Pillow's own bomb error, reported with our reason.
    exc = rejected("bomb.png", raw_png(50_000, 50_000))
    assert exc.reason == "too_many_pixels"


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # 108 megapixels with 16 bytes of data: decoding would fail as corrupt (and is slow);
    # too_many_pixels proves the header check came first. No Pillow warning leaks out.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exc = rejected("bomb.png", raw_png(12_000, 9_000))
    assert exc.reason == "too_many_pixels"
    assert "12000 x 9000" in str(exc)


def test_small_pixel_limit_rejects_a_valid_image():
    exc = rejected("cells.png", png_bytes(64, 48), Limits(max_pixels=64 * 48 - 1))
    assert exc.reason == "too_many_pixels"


def test_over_max_bytes_is_too_large():
    data = png_bytes()
    exc = rejected("big.png", data, Limits(max_bytes=len(data) - 1))
    assert exc.reason == "too_large"


def test_size_limit_is_checked_before_the_content():
    assert rejected("big.png", b"\x00" * 101, Limits(max_bytes=100)).reason == "too_large"


def test_cmyk_jpeg_is_unsupported_mode():
    exc = rejected("print.jpg", encode(rgb_image().convert("CMYK"), "JPEG"))
    assert exc.reason == "unsupported_mode"
    assert "CMYK" in str(exc)


def test_bilevel_png_is_unsupported_mode():
    assert (
        rejected("mask.png", encode(rgb_image().convert("1"), "PNG")).reason == "unsupported_mode"
    )


def test_palette_png_is_unsupported_mode():
    image = rgb_image().convert("P", palette=Image.Palette.ADAPTIVE)
    assert rejected("pal.png", encode(image, "PNG")).reason == "unsupported_mode"


def test_grey_with_alpha_png_is_unsupported_mode():
    image = rgb_image().convert("LA")
    assert rejected("la.png", encode(image, "PNG")).reason == "unsupported_mode"


def test_gif_is_unsupported_format():
    exc = rejected("anim.gif", encode(rgb_image(), "GIF"))
    assert exc.reason == "unsupported_format"
    assert "GIF" in str(exc)


def test_bmp_named_png_is_unsupported_format():
    assert rejected("x.png", encode(rgb_image(), "BMP")).reason == "unsupported_format"


def test_rejection_survives_pickling():
    exc = rejected("x.png", b"")
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, str(copy), copy.name) == (exc.reason, str(exc), exc.name)


def test_unknown_reason_code_is_a_programming_error():
    with pytest.raises(ValueError):
        ImageRejected("bad_vibes")


# --- validate_image_bytes: good inputs -------------------------------------------------------------


def test_valid_png_is_described():
    data = png_bytes(64, 48)
    result = validate_image_bytes("dir/cells.png", data)
    assert result == ValidImage(
        name="dir/cells.png",
        width=64,
        height=48,
        format="PNG",
        mode="RGB",
        checksum=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        extension=".png",
    )


def test_valid_jpeg_is_described():
    data = jpeg_bytes(80, 30)
    result = validate_image_bytes("cells.jpeg", data)
    assert (result.width, result.height, result.format, result.extension) == (
        80,
        30,
        "JPEG",
        ".jpg",
    )
    assert result.checksum == hashlib.sha256(data).hexdigest()


def test_valid_tiff_is_described():
    data = encode(rgb_image(50, 40), "TIFF", compression="tiff_lzw")
    result = validate_image_bytes("cells.tiff", data)
    assert (result.width, result.height, result.format, result.mode) == (50, 40, "TIFF", "RGB")
    assert result.extension == ".tif"


def test_16_bit_grey_tiff_is_accepted():
    pixels = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    result = validate_image_bytes("scan.tif", encode(Image.fromarray(pixels), "TIFF"))
    assert (result.width, result.height) == (40, 30)
    assert result.mode.startswith("I;16")


def test_16_bit_grey_png_is_accepted():
    pixels = np.full((10, 12), 40000, dtype=np.uint16)
    result = validate_image_bytes("scan.png", encode(Image.fromarray(pixels), "PNG"))
    assert (result.width, result.height, result.format) == (12, 10, "PNG")


def test_8_bit_grey_and_rgba_are_accepted():
    assert validate_image_bytes("g.jpg", encode(rgb_image().convert("L"), "JPEG")).mode == "L"
    assert validate_image_bytes("a.png", encode(rgb_image().convert("RGBA"), "PNG")).mode == "RGBA"


def test_format_comes_from_content_not_name():
    result = validate_image_bytes("really_a_jpeg.png", jpeg_bytes())
    assert (result.format, result.extension) == ("JPEG", ".jpg")


# --- safe_member_name --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("a.png", "a.png"),
        ("dir/sub/a.png", "dir/sub/a.png"),
        ("./dir//a.png", "dir/a.png"),
        ("dir\\sub\\a.png", "dir/sub/a.png"),
        ("dir/./a..b.png", "dir/a..b.png"),
    ],
)
def test_safe_member_name_returns_clean_relative_posix_path(raw, clean):
    assert safe_member_name(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "../evil.png",
        "dir/../../evil.png",
        "/abs.png",
        "C:evil.png",
        "c:\\windows\\evil.png",
        "\\\\server\\share\\evil.png",
        "..\\evil.png",
        "dir\\..\\..\\evil.png",
        "evil\x00.png",
        "",
        "./",
    ],
)
def test_safe_member_name_refuses_unsafe_names(raw):
    with pytest.raises(ImageRejected) as info:
        safe_member_name(raw)
    assert info.value.reason == "unsafe_name"


# --- iter_image_sources: zip files -------------------------------------------------------------------


def make_zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)


def test_zip_with_traversal_and_absolute_names_reports_unsafe_name(tmp_path):
    archive = tmp_path / "upload.zip"
    make_zip(archive, {"../evil.png": png_bytes(), "/abs.png": png_bytes(), "ok.png": png_bytes()})
    sources = list(iter_image_sources(archive))
    by_name = {source.name: source for source in sources}
    assert by_name["ok.png"].error is None
    for bad in ("../evil.png", "/abs.png"):
        assert by_name[bad].error is not None
        assert by_name[bad].error.reason == "unsafe_name"
        with pytest.raises(ImageRejected):
            by_name[bad].read()


def test_zip_iteration_is_sorted_and_skips_folders_hidden_and_non_images(tmp_path):
    archive = tmp_path / "upload.zip"
    make_zip(
        archive,
        {
            "set/b.PNG": png_bytes(),
            "set/a.jpg": jpeg_bytes(),
            "set/": b"",
            "set/annotations.json": b"{}",
            "set/.hidden.png": png_bytes(),
            "__MACOSX/set/._a.jpg": b"\x00\x05\x16\x07",
            "a.tif": encode(rgb_image(), "TIFF"),
        },
    )
    sources = list(iter_image_sources(archive))
    assert [source.name for source in sources] == ["a.tif", "set/a.jpg", "set/b.PNG"]
    results = [validate_image_bytes(s.name, s.read()) for s in sources]
    assert [r.format for r in results] == ["TIFF", "JPEG", "PNG"]


def test_zip_member_with_image_extension_but_text_reaches_validation(tmp_path):
    archive = tmp_path / "upload.zip"
    make_zip(archive, {"fake.png": b"hello"})
    (source,) = iter_image_sources(archive)
    assert source.error is None
    assert rejected(source.name, source.read()).reason == "not_an_image"


def test_zip_member_over_size_limit_is_refused_before_reading(tmp_path):
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.png", b"\x00" * 100_000)  # compresses to almost nothing
    (source,) = iter_image_sources(archive, Limits(max_bytes=10_000))
    assert source.error is not None and source.error.reason == "too_large"


def test_zip_duplicate_names_after_normalising_are_reported(tmp_path):
    archive = tmp_path / "upload.zip"
    make_zip(archive, {"dir/a.png": png_bytes(), "dir\\a.png": png_bytes()})
    sources = list(iter_image_sources(archive))
    assert [s.error.reason if s.error else None for s in sources] == [None, "duplicate"]


def test_zip_sources_can_be_read_after_iteration_ended(tmp_path):
    archive = tmp_path / "upload.zip"
    data = png_bytes()
    make_zip(archive, {"a.png": data})
    (source,) = list(iter_image_sources(archive))
    assert source.read() == data


def test_file_named_zip_that_is_not_an_archive_is_rejected(tmp_path):
    archive = tmp_path / "upload.zip"
    archive.write_bytes(b"not a zip")
    with pytest.raises(ImageRejected) as info:
        list(iter_image_sources(archive))
    assert info.value.reason == "corrupt"


# --- iter_image_sources: folders and files ------------------------------------------------------------


def test_folder_walk_is_recursive_sorted_and_skips_hidden_and_non_images(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "z.png").write_bytes(png_bytes())
    (tmp_path / "b" / "x.JPG").write_bytes(jpeg_bytes())
    (tmp_path / "a" / "deep" / "y.tiff").write_bytes(encode(rgb_image(), "TIFF"))
    (tmp_path / "a" / "m.png").write_bytes(png_bytes())
    (tmp_path / "a" / "labels.csv").write_text("image,label\n")
    (tmp_path / "a" / ".secret.png").write_bytes(png_bytes())
    (tmp_path / ".git" / "obj.png").write_bytes(png_bytes())
    (tmp_path / "__MACOSX" / "z.png").write_bytes(b"junk")
    names = [source.name for source in iter_image_sources(tmp_path)]
    assert names == ["a/deep/y.tiff", "a/m.png", "b/x.JPG", "z.png"]
    assert names == [source.name for source in iter_image_sources(tmp_path)]  # deterministic


def test_folder_sources_read_lazily(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    (source,) = iter_image_sources(tmp_path)
    (tmp_path / "a.png").write_bytes(b"changed")
    assert source.read() == b"changed"


def test_folder_file_over_size_limit_is_refused_before_reading(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    (source,) = iter_image_sources(tmp_path, Limits(max_bytes=10))
    assert source.error is not None and source.error.reason == "too_large"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_folder_walk_refuses_links_leaving_the_folder(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes())
    (root / "inside.png").write_bytes(png_bytes())
    (root / "leak.png").symlink_to(outside / "secret.png")
    (root / "alias.png").symlink_to(root / "inside.png")
    (root / "outdir").symlink_to(outside, target_is_directory=True)
    sources = {source.name: source for source in iter_image_sources(root)}
    assert sorted(sources) == ["alias.png", "inside.png", "leak.png"]
    assert sources["leak.png"].error.reason == "unsafe_name"
    assert sources["alias.png"].error is None
    assert sources["alias.png"].read() == (root / "inside.png").read_bytes()


def test_single_file_is_yielded_under_its_base_name(tmp_path):
    path = tmp_path / "one.png"
    path.write_bytes(png_bytes())
    (source,) = iter_image_sources(path)
    assert source.name == "one.png"
    assert validate_image_bytes(source.name, source.read()).width == 64


def test_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(iter_image_sources(tmp_path / "nope"))
