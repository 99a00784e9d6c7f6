"""The bench report's schema: a :class:`BenchReport` of one :class:`Variant` row per file and backend.

``report.json`` is :meth:`BenchReport.to_dict`; the tables, the plot and the command read these
classes, so a renamed field breaks at the attribute, not silently at a string key. The JSON keys
are the report's published format and stay as they are.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Accuracy:
    """The variant's scores against the manifest's labels."""

    srcc: float | None
    plcc: float | None
    plcc_logistic: float | None


@dataclass
class Agreement:
    """The variant's scores against the reference variant's (PyTorch, else the FP32 graph)."""

    reference: str
    srcc: float | None
    max_abs: float
    p99_abs: float


@dataclass
class Efficiency:
    """Achieved GEMM throughput at the 1-crop p50 latency, and its share of the machine's measured peak."""

    gflops_per_s: float
    fraction_of_peak: float


# Keys of a measurement that the JSON leaves out when they have no value (older reports lack them).
_OMITTED_WHEN_NONE = ("scores", "agreement", "efficiency")


@dataclass
class Measurement:
    """What a variant's own process measured (:mod:`grmp_edge.report.measure`), and how its scores compare.

    ``latency_ms`` holds :func:`grmp_edge.timing.latency_stats` summaries: ``infer``, ``e2e`` and
    ``preprocess`` for one frame as 1 crop, and ``frame`` (the same three, plus ``gpu`` and ``crops``) for
    one frame as the crop plan's crops. ``scores`` is every image's score until
    :func:`grmp_edge.report.bench.score_rows` has compared them; the report keeps the first eight.
    """

    load_s: float
    latency_ms: dict[str, Any]
    gpu_ms: dict[str, float] | None
    throughput: dict[str, float]
    peak_rss_mb: float
    scores: list[float] | None = None
    scores_head: list[float] = field(default_factory=list)
    accuracy: Accuracy | None = None
    agreement: Agreement | None = None
    efficiency: Efficiency | None = None
    speedup_vs_reference: float | None = None

    def latency(self, *keys: str) -> float | None:
        """One number of ``latency_ms`` by path, e.g. ``latency("frame", "infer", "p50")``; None if absent."""
        value: Any = self.latency_ms
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        def nested(kind, key):
            return kind(**d[key]) if d.get(key) else None

        return cls(load_s=d["load_s"], latency_ms=d["latency_ms"], gpu_ms=d.get("gpu_ms"),
                   throughput=d["throughput"], peak_rss_mb=d["peak_rss_mb"], scores=d.get("scores"),
                   scores_head=d.get("scores_head", []), accuracy=nested(Accuracy, "accuracy"),
                   agreement=nested(Agreement, "agreement"), efficiency=nested(Efficiency, "efficiency"),
                   speedup_vs_reference=d.get("speedup_vs_reference"))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in _OMITTED_WHEN_NONE}


@dataclass
class Variant:
    """One row of the report: a file (or checkpoint) run by one backend."""

    name: str
    kind: str  # pytorch | onnxruntime | tensorrt
    path: str
    precision: str
    backend: str
    format: str
    provider: str | None = None
    size_mb: float | None = None
    status: str = "pending"  # pending | ok | skipped | failed
    reason: str = ""
    result: Measurement | None = None
    layers: dict[str, Any] = field(default_factory=dict)  # a plan's engine layers per precision

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Variant":
        fields = {k: d[k] for k in ("name", "kind", "path", "precision", "backend", "format")}
        return cls(**fields, provider=d.get("provider"), size_mb=d.get("size_mb"), status=d["status"],
                   reason=d.get("reason", ""), result=Measurement.from_dict(d["result"]) if d.get("result") else None,
                   layers=d.get("layers") or {})

    def to_dict(self) -> dict[str, Any]:
        # A row without a measurement has written ``"result": {}`` since the first report.
        return {**asdict(self), "result": self.result.to_dict() if self.result else {}}


@dataclass
class BenchSettings:
    """How the variants were measured. Reports from before crop plans have no ``crops`` (one crop)."""

    batches: list[int]
    warmup: int
    iters: int
    threads: int
    crops: int | None = None
    crops_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("crops", "crops_from")}


@dataclass
class BenchReport:
    """One ``grmp-edge bench`` run: what was measured, where, and one row per variant.

    ``machine`` is :func:`grmp_edge.report.machine.machine_context` plus ``gemm_peak_gflops``, and
    ``model_cost`` is :func:`grmp_edge.report.flops.graph_cost`: free-form records written as they are.
    """

    command: str
    created: str
    bundle: str
    data: str
    images: int
    settings: BenchSettings
    machine: dict[str, Any]
    model_cost: dict[str, float]
    variants: list[Variant]

    @property
    def measured(self) -> list[Variant]:
        """The variants that ran and were scored."""
        return [v for v in self.variants if v.ok]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchReport":
        return cls(command=d["command"], created=d["created"], bundle=d["bundle"], data=d["data"],
                   images=d["images"], settings=BenchSettings(**d["settings"]), machine=d["machine"],
                   model_cost=d["model_cost"], variants=[Variant.from_dict(v) for v in d["variants"]])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "settings": self.settings.to_dict(),
                "variants": [v.to_dict() for v in self.variants]}
