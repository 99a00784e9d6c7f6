"""Fetch the natural photos of Debian's desktop-wallpaper packages that the bootstrap also trains on.

    python scripts/debian_photos.py                 # -> ~/.cache/grmp-edge/photos/debian-wallpapers/

CBSD68 alone (481 x 321 Berkeley photos) left the bootstrap scoring content: its validation photos
ranked well, the unseen Kodak24 and McMaster photos less so. Debian's wallpaper packages hold free
(CC / GPL) high-resolution photographs of other kinds: macro shots with shallow depth of field, plain
skies, fog, night lakes, still lifes. ``debian_photos.csv`` (beside this script) names the 37 that are
photographs (renders, paintings and abstract art left out, chosen by looking at each); their scenes are
in ``grmp_edge/data/scene_labels.csv`` as the ``debian-wallpapers`` collection.

Each package is fetched with ``apt-get download`` (no root needed, nothing installed) and unpacked
with ``dpkg-deb``; each photo is resized with Lanczos antialiasing to ``--short-side`` pixels (the model
resizes to 256 anyway; this keeps the folder small) and saved as PNG named by its ``photo`` column,
beside a ``SOURCES.json`` that records each package's version and each source file's sha256. The
photos are not committed: only the list and the weights trained on them are.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LIST_CSV = Path(__file__).with_name("debian_photos.csv")


def parse_args(argv: list[str]) -> argparse.Namespace:
    from grmp_edge.artifacts import cache_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=cache_root() / "photos" / "debian-wallpapers")
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


def save_photo(source: Path, target: Path, short_side: int) -> None:
    """The photo as RGB, its shorter side resized to ``short_side`` (never enlarged), written atomically."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # 6000 x 4000 wallpapers are legitimate
    with Image.open(source) as image:
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
    args.out.mkdir(parents=True, exist_ok=True)
    sources: dict = {"packages": {}, "photos": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for package in sorted({row["package"] for row in rows}):
            try:
                root, version = fetch_package(package, Path(tmp))
            except subprocess.CalledProcessError as exc:
                print(f"error: could not fetch {package}: {(exc.stderr or b'').decode().strip()}", file=sys.stderr)
                return 1
            sources["packages"][package] = version
            for row in (r for r in rows if r["package"] == package):
                source = root / row["path"]
                save_photo(source, args.out / f"{row['photo']}.png", args.short_side)
                sources["photos"][row["photo"]] = {"package": package, "path": row["path"],
                                                   "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
                print(f"{row['photo']}: {package} {version} {row['path']}")
    atomic_write_json(args.out / "SOURCES.json", sources)
    print(f"wrote {len(rows)} photos to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
