"""Where a backbone's weights come from, and the backbone built with them.

``pretrained`` is one of: None (random weights), ``"bootstrap"`` (``grmp-tiny``'s offline weights,
see :mod:`grmp_edge.train.bootstrap`), a local open_clip checkpoint file, or an open_clip pretrained
tag, downloaded where a network exists. Offline, a tag download fails within seconds with a message
that names both offline ways out, instead of the Hub client's minute of retries.

This module sits above the bootstrap (which builds its weights from a randomly initialised
``grmp-tiny`` of :mod:`grmp_edge.train.backbones`), so a first ``"bootstrap"`` request can build them.
"""
from __future__ import annotations

import socket
import urllib.parse
import urllib.request

from grmp_edge.artifacts import user_path
from grmp_edge.errors import GrmpError, require
from grmp_edge.train.backbones import GRMP_TINY, backbone_config, check_config, clip_from_config

open_clip = require("open_clip")

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")
OFFLINE_WAYS_OUT = (
    "pass a local open_clip checkpoint with --pretrained /path/to/open_clip_checkpoint.pt, "
    f"or use the offline model with --backbone {GRMP_TINY} --pretrained bootstrap"
)


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the weights host answers; behind a proxy we cannot tell, so say yes."""
    if any(k in urllib.request.getproxies() for k in ("https", "http", "all")):
        return True
    host = urllib.parse.urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def download_tag(name: str, tag: str) -> str:
    """Local path of an open_clip pretrained tag's weights, downloading them if a network exists."""
    tag_cfg = open_clip.get_pretrained_cfg(name, tag)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise GrmpError(
            f"--pretrained {tag!r} is neither a file nor an open_clip tag of {name} "
            f"(tags: {', '.join(tags) or 'none'}); or {OFFLINE_WAYS_OUT}"
        )
    if tag_cfg.get("hf_hub"):
        import huggingface_hub.constants

        url = huggingface_hub.constants.ENDPOINT
    else:
        url = tag_cfg.get("url", "")
    failure = f"cannot download the {name} '{tag}' weights (no network?)"
    # Fail fast offline: the Hub client otherwise retries for most of a minute before giving up.
    if not host_reachable(url):
        raise GrmpError(f"{failure}; {OFFLINE_WAYS_OUT}")
    try:
        return open_clip.pretrained.download_pretrained(tag_cfg)
    except Exception as exc:  # the Hub client raises many types; all mean "no weights"
        raise GrmpError(f"{failure}: {str(exc).splitlines()[0][:160]}; {OFFLINE_WAYS_OUT}") from None


def resolve_weights(name: str, pretrained: str) -> str:
    """Weights file for ``pretrained``: "bootstrap", a local checkpoint path, or an open_clip tag."""
    if pretrained == "bootstrap":
        if name != GRMP_TINY:
            raise GrmpError(
                f"bootstrap weights exist only for {GRMP_TINY}; use --backbone "
                f"{GRMP_TINY} --pretrained bootstrap, or give {name} real weights"
            )
        from grmp_edge.train.bootstrap import bootstrap_weights

        return str(bootstrap_weights())
    path = user_path(pretrained)
    if path.is_file():
        return str(path)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES or "/" in pretrained:
        raise GrmpError(f"checkpoint not found: {path}")
    return download_tag(name, pretrained)


def create_backbone(name: str, pretrained: str | None, device: str = "cpu") -> "open_clip.CLIP":
    """An open_clip CLIP ViT: ``pretrained`` is an open_clip tag (downloaded where a network
    exists), a local checkpoint file, ``"bootstrap"`` (offline grmp-tiny weights) or None (random)."""
    cfg = backbone_config(name, pretrained)
    check_config(name, cfg)  # before any download
    weights = resolve_weights(name, pretrained) if pretrained else None
    clip = clip_from_config(cfg, name)
    if weights:
        try:
            open_clip.load_checkpoint(clip, weights)
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise GrmpError(f"weights {weights} do not fit backbone {name}: {str(exc).splitlines()[0][:200]}") from None
    return clip.to(device)
