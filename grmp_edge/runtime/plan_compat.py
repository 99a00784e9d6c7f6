"""Is a TensorRT plan usable on this device? Pure checks on the plan's sidecar JSON.

A serialised TensorRT engine runs only on the TensorRT version that built it and on GPUs of the
compute capability it was built for; anything else fails inside ``deserialize_cuda_engine`` with a
log line. The exporter writes a sidecar beside each ``.plan`` (``tensorrt_version``, ``gpu_name``,
``compute_capability``, ``jetpack``, ``precision``, ``batch``, ``onnx_sha256``) and the runtime
compares it with the device *before* deserialising, so that the user reads which build the plan
wants, which one this device has, and the exact command that rebuilds it here.

Both facts dicts use the sidecar's keys: ``flavour`` (:data:`FLAVOURS`; a sidecar without one is
``tensorrt``), ``tensorrt_version`` (``"10.3.0"``, ``"10.3.0.30"``, ``"1.7.1.116"``),
``compute_capability`` (``"8.7"``, ``"sm_87"``, ``87``, ``[8, 7]`` ...) or, for a plan built ahead of
time for several GPUs, ``compute_capabilities`` (a list of those), and, for messages only,
``gpu_name`` and ``jetpack``. No imports beyond the standard library: the exporter (which builds
plans) and the Jetson runtime (which loads them) share this module.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from grmp_edge.errors import GrmpError

# Engines are tied to the exact TensorRT release; the build number (4th field) is not compared.
VERSION_FIELDS_COMPARED = 3


@dataclass(frozen=True)
class Flavour:
    """One TensorRT distribution: its Python module, the extra that installs it, and whether its
    builder makes plans ahead of time for named GPUs without needing one (``aot``)."""

    name: str
    module: str
    extra: str
    label: str
    option: str  # the value of ``grmp-edge export --trt``
    aot: bool


# tensorrt: JetPack and data-centre TensorRT 10/11, builds for the GPU it runs on.
# tensorrt-rtx: TensorRT for RTX, builds for listed compute capabilities anywhere (no GPU needed),
# compiles kernels just in time on the first load.
FLAVOURS = {
    "tensorrt": Flavour("tensorrt", "tensorrt", "tensorrt", "TensorRT", "tensorrt", aot=False),
    "tensorrt-rtx": Flavour("tensorrt-rtx", "tensorrt_rtx_bindings", "tensorrt-rtx", "TensorRT-RTX", "rtx", aot=True),
}


def flavour(name: str | None) -> Flavour:
    """The flavour named ``name`` (a flavour or its ``--trt`` value; None is ``tensorrt``); GrmpError otherwise."""
    for f in FLAVOURS.values():
        if name in (f.name, f.option) or (name is None and f.name == "tensorrt"):
            return f
    choices = ", ".join(f.option for f in FLAVOURS.values())
    raise GrmpError(f"unknown TensorRT flavour {name!r}; expected one of {choices}")


def parse_sm_list(text: str) -> list[str]:
    """``"86,89,120"`` (or ``sm_86 8.9``) -> ``["8.6", "8.9", "12.0"]``, de-duplicated in order."""
    out = []
    for item in re.split(r"[,\s]+", str(text).strip()):
        if item:
            major, minor = parse_compute_capability(item)
            if f"{major}.{minor}" not in out:
                out.append(f"{major}.{minor}")
    if not out:
        raise GrmpError(f"no compute capability in {text!r}; expected e.g. 86,89,120")
    return out


def parse_compute_capability(value: Any) -> tuple[int, int]:
    """``(major, minor)`` from ``"8.7"``, ``"sm_87"``, ``"87"``, ``87``, ``8.7``, ``[8, 7]`` or
    ``{"major": 8, "minor": 7}``; GrmpError if it is none of these."""
    if isinstance(value, Mapping) and "major" in value and "minor" in value:
        return int(value["major"]), int(value["minor"])
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    text = str(value).strip().lower()
    match = re.fullmatch(r"(?:sm_?|compute_?)?(\d+)\.(\d+)", text)
    if match:
        return int(match.group(1)), int(match.group(2))
    match = re.fullmatch(r"(?:sm_?|compute_?)?(\d+)(\d)", text)
    if match:  # "87" / "sm_87" / "sm_100": the last digit is the minor version
        return int(match.group(1)), int(match.group(2))
    raise GrmpError(f"unreadable compute capability {value!r}; expected e.g. '8.7' or 'sm_87'")


def sm_name(value: Any) -> str:
    """``sm_87`` for any form :func:`parse_compute_capability` accepts."""
    major, minor = parse_compute_capability(value)
    return f"sm_{major}{minor}"


def parse_version(value: Any) -> tuple[int, ...]:
    """``(10, 3, 0)`` from ``"10.3.0"``, ``"10.3.0.30"`` or ``"10.3"`` (missing fields are 0);
    GrmpError if it does not start with a number."""
    numbers = re.findall(r"\d+", str(value).split("+")[0])
    if not numbers:
        raise GrmpError(f"unreadable TensorRT version {value!r}")
    fields = [int(n) for n in numbers[:VERSION_FIELDS_COMPARED]]
    return tuple(fields + [0] * (VERSION_FIELDS_COMPARED - len(fields)))


def describe_build(facts: Mapping[str, Any]) -> str:
    """``"Orin (sm_87) with TensorRT 10.3.0 (JetPack 6.1)"`` or ``"sm_86, sm_89 with TensorRT-RTX
    1.7.1.116"``, from whatever the facts hold."""
    label = flavour(facts.get("flavour")).label
    ccs = facts.get("compute_capabilities")
    cc = facts.get("compute_capability")
    if ccs and not facts.get("gpu_name"):
        where = ", ".join(sm_name(c) for c in ccs)
    else:
        gpu = facts.get("gpu_name") or "an unknown GPU"
        where = f"{gpu} ({sm_name(cc)})" if cc not in (None, "") else gpu
    version = facts.get("tensorrt_version")
    text = f"{where} with {label} {version}" if version else f"{where} with an unknown {label}"
    jetpack = str(facts.get("jetpack") or "")
    if jetpack:  # the exporter writes "JetPack 6.1" or "L4T R36.3.0"; a bare number is a JetPack one
        text += f" ({'JetPack ' + jetpack if jetpack[0].isdigit() else jetpack})"
    return text


def plan_mismatches(sidecar: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Why a plan built as ``sidecar`` says cannot run on the ``current`` device; empty if it can.

    A different flavour, TensorRT release (major.minor.patch) or compute capability (one not among
    the plan's ``compute_capabilities``) is a mismatch; a different GPU name of the same compute
    capability is not (TensorRT runs such plans).
    """
    if flavour(sidecar.get("flavour")) != flavour(current.get("flavour")):
        return [f"the plan is for {flavour(sidecar.get('flavour')).label}, "
                f"this runtime is {flavour(current.get('flavour')).label}"]
    problems = []
    targets = sidecar.get("compute_capabilities") or (
        [sidecar["compute_capability"]] if sidecar.get("compute_capability") not in (None, "") else [])
    if sidecar.get("tensorrt_version") in (None, ""):
        problems.append("the plan's sidecar does not record tensorrt_version")
    if not targets:
        problems.append("the plan's sidecar does not record compute_capability")
    for key in ("tensorrt_version", "compute_capability"):
        if current.get(key) in (None, ""):
            problems.append(f"this device's {key} is unknown")
    if problems:
        return problems
    if parse_version(sidecar["tensorrt_version"]) != parse_version(current["tensorrt_version"]):
        problems.append("the TensorRT release differs")
    if parse_compute_capability(current["compute_capability"]) not in {parse_compute_capability(t) for t in targets}:
        problems.append("the compute capability differs" if len(targets) == 1
                        else "this compute capability is not among the plan's")
    return problems


def rebuild_command(onnx_path: str | Path | None, precision: str | None = None, flavour_name: str | None = None,
                    compute_capability: Any = None) -> str:
    """The command that builds a plan for this device: from the bundle's ONNX when known, else from
    the latest checkpoint; a TensorRT-RTX plan names the flavour and this GPU's compute capability."""
    command = "grmp-edge export --engine"
    if flavour(flavour_name).aot:
        command += f" --trt {flavour(flavour_name).option}"
        if compute_capability not in (None, ""):
            major, minor = parse_compute_capability(compute_capability)
            command += f" --sm {major}{minor}"
    if onnx_path is None:
        return command + (f" --precision {precision}" if precision else "")
    return f"{command} --onnx {shlex.quote(str(onnx_path))}"


def check_plan_compatible(
    sidecar: Mapping[str, Any],
    current: Mapping[str, Any],
    plan_name: str = "engine",
    rebuild: str | None = None,
) -> None:
    """Raise one-line GrmpError unless the plan described by ``sidecar`` runs on ``current``.

    The message names both builds, what differs, and ends with ``rebuild`` (a command, see
    :func:`rebuild_command`) when given, e.g. ``engine model_fp16.plan was built for Orin (sm_87)
    with TensorRT 10.3.0; this is NVIDIA L4 (sm_89) with TensorRT 10.7.0: the TensorRT release
    differs and the compute capability differs; rebuild it here: grmp-edge export --engine --onnx
    bundle/model_fp16.onnx``.
    """
    problems = plan_mismatches(sidecar, current)
    if not problems:
        return
    message = (
        f"{plan_name} was built for {describe_build(sidecar)}; this is {describe_build(current)}: "
        f"{' and '.join(problems)}"
    )
    if rebuild:
        message += f"; rebuild it here: {rebuild}"
    raise GrmpError(message)
