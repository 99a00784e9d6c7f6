"""Generated hostile input for the two readers every command shares: the manifest reader and the
image decoder. Whatever bytes they are handed, they return a valid result or raise GrmpError (one
line for the CLI), never another exception; and 16-bit samples always scale as round(x / 257)."""
from __future__ import annotations

import io

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402
from PIL import Image  # noqa: E402

from grmp_edge.images import read_rgb  # noqa: E402
from grmp_edge.data.manifest import load_manifest  # noqa: E402
from grmp_edge.errors import GrmpError  # noqa: E402

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

CELLS = st.one_of(st.sampled_from(["a.png", "missing.png", "0.5", "nan", "-inf", "1e400", "", " ", "3", "x,y",
                                   '"', "\x00", "level", "score", "image", "é"]),
                  st.text(max_size=8))


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


@FAST
@given(header=st.lists(st.sampled_from(["image", "score", "group", "level", "ref", "split", "raw_score", "x", ""]),
                       max_size=6),
       rows=st.lists(st.lists(CELLS, max_size=7), max_size=6),
       raw=st.binary(max_size=64))
# Found by a CI run: "~0" names user 0's home, which pathlib cannot expand (a bare RuntimeError).
@example(header=["score", "image"], rows=[["0.5", "~0"]], raw=b"")
def test_manifest_reader_never_raises_anything_but_grmp_error(tmp_path, header, rows, raw):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    for content in (text.encode("utf-8", "surrogatepass"), raw, text.encode() + raw):
        path = tmp_path / "m.csv"
        path.write_bytes(content)
        try:
            records = load_manifest(path, check_images=True)
        except GrmpError:
            continue
        assert records and all(np.isfinite(r.score) for r in records)


@FAST
@given(seed=st.binary(min_size=1, max_size=2048), cut=st.integers(0, 400), flips=st.lists(st.integers(0, 10**6), max_size=8))
def test_decoder_returns_rgb8_or_grmp_error_on_any_bytes(tmp_path, seed, cut, flips):
    valid = bytearray(_png(np.frombuffer(seed * 48, np.uint8)[:48].reshape(4, 4, 3)))
    for index in flips:  # corrupt a valid file, or truncate it, or hand over noise
        valid[index % len(valid)] ^= 0xFF
    for content in (bytes(valid), bytes(valid[:cut]), seed):
        path = tmp_path / "x.png"
        path.write_bytes(content)
        try:
            rgb = read_rgb(path)
        except GrmpError:
            continue
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


def _png_header(width: int, height: int, idat: bytes) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` 8-bit RGB, with valid CRCs and any IDAT."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@FAST
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1),
       idat=st.one_of(st.binary(max_size=32), st.just(b"x\x9c\x03\x00\x00\x00\x00\x01")))
def test_decoder_refuses_any_declared_size_it_cannot_hold_with_one_error(tmp_path, width, height, idat):
    path = tmp_path / "h.png"
    path.write_bytes(_png_header(width, height, idat))
    try:
        rgb = read_rgb(path)
    except GrmpError:
        return
    assert rgb.shape == (height, width, 3)


@FAST
@given(wide=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9)))
def test_16_bit_grey_scales_as_round_x_over_257(tmp_path, wide):
    path = tmp_path / "g.png"
    path.write_bytes(_png(wide))
    rgb = read_rgb(path)
    expected = np.floor(wide.astype(np.float64) / 257 + 0.5).astype(np.uint8)
    assert (rgb == expected[..., None]).all()
