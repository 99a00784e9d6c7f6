"""scripts/debian_photos.py reads photos out of Qt resource files: checked on a resource file built here."""
from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "debian_photos.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("debian_photos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def qt_resource(files: dict[str, tuple[bytes, bool]]) -> bytes:
    """A format-3 ``.rcc`` holding ``{"dir/name": (payload, compressed)}`` under one directory level,
    laid out as Qt's rcc writes it: header, names, data blobs, then the node tree."""
    folders = sorted({path.split("/")[0] for path in files})
    names, name_offsets = b"", {}
    for name in folders + [path.split("/")[1] for path in files]:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            encoded = name.encode("utf-16-be")
            names += struct.pack(">HI", len(name), 0) + encoded
    data, data_offsets = b"", {}
    for path, (payload, compressed) in files.items():
        blob = struct.pack(">I", len(payload)) + zlib.compress(payload) if compressed else payload
        data_offsets[path] = len(data)
        data += struct.pack(">I", len(blob)) + blob

    def node(name_offset, flags, a, b):
        return struct.pack(">IHII", name_offset, flags, a, b) + bytes(8)

    tree = node(0, 2, len(folders), 1)
    children = {folder: [p for p in files if p.startswith(folder + "/")] for folder in folders}
    first = 1 + len(folders)
    for folder in folders:
        tree += node(name_offsets[folder], 2, len(children[folder]), first)
        first += len(children[folder])
    for folder in folders:
        for path in children[folder]:
            tree += node(name_offsets[path.split("/")[1]], 1 if files[path][1] else 0, 0, data_offsets[path])
    header = 24
    return (struct.pack(">4sIIIII", b"qres", 3, header + len(names) + len(data), header + len(names), header, 0)
            + names + data + tree)


def test_reads_stored_and_compressed_members(script):
    archive = qt_resource({"photos/a.webp": (b"stored bytes", False), "photos/b.png": (b"x" * 500, True),
                           "other/c.txt": (b"elsewhere", False)})
    assert script.rcc_member(archive, "/photos/a.webp") == b"stored bytes"
    assert script.rcc_member(archive, "/photos/b.png") == b"x" * 500
    assert script.rcc_member(archive, "/other/c.txt") == b"elsewhere"


def test_missing_member_and_wrong_file_are_errors(script):
    archive = qt_resource({"photos/a.webp": (b"stored", False)})
    with pytest.raises(KeyError):
        script.rcc_member(archive, "/photos/missing.webp")
    with pytest.raises(KeyError):
        script.rcc_member(archive, "/photos/a.webp/deeper")
    with pytest.raises(ValueError, match="not a Qt resource"):
        script.rcc_member(b"RIFF" + bytes(20), "/photos/a.webp")


def test_path_column_names_a_file_or_a_resource_member(script, tmp_path):
    (tmp_path / "usr").mkdir()
    (tmp_path / "usr" / "plain.jpg").write_bytes(b"plain")
    (tmp_path / "usr" / "bundle.rcc").write_bytes(qt_resource({"img/p.webp": (b"member", True)}))
    assert script.read_source(tmp_path, "usr/plain.jpg") == b"plain"
    assert script.read_source(tmp_path, "usr/bundle.rcc:/img/p.webp") == b"member"
