"""Plots: accuracy against latency with its Pareto front, and a run's score timeline."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from grmp_edge.artifacts import atomic_write
from grmp_edge.errors import GrmpError, require
from grmp_edge.report.results import BenchReport


def _pyplot():
    matplotlib = require("matplotlib", "report")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def accuracy_vs_latency(report: BenchReport, out: Path) -> list[dict]:
    """SRCC against p50 latency per frame, one labelled point per variant, Pareto front drawn. Both at
    the report's crops per frame: the SRCC was scored with them. Returns the points."""
    from grmp_edge.report.tables import rows

    pts = [r for r in rows(report) if r["status"] == "ok" and r["srcc"] is not None and r["frame_p50_ms"]]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    xy = [(r["frame_p50_ms"], r["srcc"]) for r in pts]
    if xy:
        ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=40, zorder=3)
        # Neighbours in latency alternate above and below their point, so close labels do not overprint.
        for rank, i in enumerate(sorted(range(len(xy)), key=lambda k: xy[k][0])):
            ax.annotate(pts[i]["variant"], xy[i], textcoords="offset points",
                        xytext=(5, 5 if rank % 2 == 0 else -11), fontsize=7)
        front = [xy[i] for i in pareto_front(xy)]
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="tab:red", label="Pareto front", zorder=2)
        ax.legend(loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel(f"latency p50 per frame, {report.settings.crops} crop(s) in one call (ms, log scale)")
    ax.set_ylabel("SRCC vs labels")
    ax.set_title(f"accuracy vs latency ({report.machine['cpu']}, {report.machine['threads']} threads)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)
    return [{"variant": r["variant"], "frame_p50_ms": r["frame_p50_ms"], "srcc": r["srcc"]} for r in pts]


@dataclass
class Timeline:
    """What a run's score timeline shows; :meth:`to_dict` is the run folder's ``report.json``."""

    frames: int
    duration_s: float
    mean_score: float
    min_score: float
    events: int

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self, plot: Path) -> str:
        """One line for the terminal, naming the plot."""
        return (f"report: {plot} ({self.frames} frames over {self.duration_s:.1f} s, mean score "
                f"{self.mean_score:.3f}, min {self.min_score:.3f}, {self.events} events)")


def _scored_frames(jsonl: Path) -> list[dict]:
    """The records of a run's JSON lines that carry a score."""
    records = []
    try:
        for line in jsonl.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                rec = json.loads(line)
                if "score" in rec:
                    records.append(rec)
    except FileNotFoundError:
        raise GrmpError(f"run log not found: {jsonl}") from None
    except json.JSONDecodeError as exc:
        raise GrmpError(f"{jsonl} is not JSON lines: {exc}") from None
    if not records:
        raise GrmpError(f"{jsonl} holds no scored frames")
    return records


def score_timeline(jsonl: Path, out: Path) -> Timeline:
    """Score, smoothed score and degraded/recovered events over time from a run's JSON lines. Time is
    the video's own (``media_s``) when every frame has it, else seconds since the first frame was
    captured."""
    records = _scored_frames(jsonl)
    media = all(r.get("media_s") is not None for r in records)
    t0 = 0.0 if media else records[0]["ts"]
    t = [(r["media_s"] if media else r["ts"]) - t0 for r in records]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4), dpi=120)
    ax.plot(t, [r["score"] for r in records], lw=0.8, alpha=0.6, label="score")
    ax.plot(t, [r["smoothed"] for r in records], lw=1.8, label="smoothed")
    for r, x in zip(records, t):
        if r.get("event"):
            color = "tab:red" if r["event"] == "degraded" else "tab:green"
            ax.axvline(x, color=color, ls=":", lw=1)
            ax.annotate(r["event"], (x, 0.02), rotation=90, fontsize=7, color=color)
    ax.set_ylim(0, 1)
    ax.set_xlabel("video time (s)" if media else "time since the first frame (s)")
    ax.set_ylabel("quality (higher = better)")
    ax.legend(loc="upper right")
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)
    scores = [r["score"] for r in records]
    return Timeline(frames=len(records), duration_s=t[-1], mean_score=sum(scores) / len(scores),
                    min_score=min(scores), events=sum(1 for r in records if r.get("event")))


def run_report(run_dir: Path) -> Timeline:
    """A run folder's report (what ``grmp-edge run --report`` adds): ``score_timeline.png`` drawn from
    its ``frames.jsonl``, and the timeline's numbers as ``report.json``."""
    from grmp_edge.artifacts import atomic_write_json

    timeline = score_timeline(run_dir / "frames.jsonl", run_dir / "score_timeline.png")
    atomic_write_json(run_dir / "report.json", timeline.to_dict())
    return timeline
