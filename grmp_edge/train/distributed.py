"""One training code path for CPU, one GPU, or many under ``torchrun``.

:func:`setup_runtime` reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); with
more than one process it joins the process group (NCCL on GPU, gloo on CPU). Each rank trains on its
shard of every batch (``DistributedSampler``) and the trainers all-reduce the gradients themselves.

Why not DistributedDataParallel: QGR takes two gradients of the same parameters with
``torch.autograd.grad``, and DDP's all-reduce hooks fire only on ``backward()``. Both stages therefore
train an explicit parameter list (prompt parameters in meta pre-training, the unfrozen blocks in
fine-tuning) and call :meth:`Runtime.all_reduce_mean_` on its gradients before every optimiser step,
which keeps every rank's weights bit-identical with one flat all-reduce per step. Evaluation runs on
rank 0, whose decisions (best epoch, lr decay, stop) are broadcast so every rank follows them;
only rank 0 logs and writes files.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, ContextManager, Sequence

import torch
import torch.distributed as dist

from grmp_edge.errors import GrmpError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class Runtime:
    """Where and how this process trains: device, rank, world size and mixed-precision mode."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    precision: str = "fp32"
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on the one process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> ContextManager:
        """Autocast context for forward passes: bf16 or fp16 on CUDA, a no-op in fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> "torch.amp.GradScaler | None":
        """A loss scaler for fp16 (bf16 and fp32 have fp32's exponent range and need none)."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def all_reduce_mean_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Average tensors over ranks, in place, with one flat all-reduce (no-op on one process)."""
        if not self.distributed or not tensors:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n

    def broadcast_(self, tensors: Sequence[torch.Tensor], src: int = 0) -> None:
        """Copy rank ``src``'s tensors to every rank, in place (e.g. freshly initialised weights)."""
        if not self.distributed:
            return
        for t in tensors:
            dist.broadcast(t.data, src=src)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable value, on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def sampler(self, dataset, shuffle: bool, seed: int):
        """A ``DistributedSampler`` giving this rank its shard, or None on one process."""
        if not self.distributed:
            return None
        from torch.utils.data.distributed import DistributedSampler

        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                  shuffle=shuffle, seed=seed, drop_last=False)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if :func:`setup_runtime` joined it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GrmpError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise GrmpError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if precision not in PRECISIONS:
        raise GrmpError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise GrmpError(f"{precision} mixed precision needs a CUDA device; CPU trains in fp32")
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def setup_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """The runtime of this process; joins torchrun's process group when ``WORLD_SIZE > 1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        index = local_rank if world_size > 1 else (dev.index or 0)
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        owns = True
    return Runtime(device=dev, rank=rank, world_size=world_size,
                   precision=resolve_precision(precision, dev), owns_group=owns)
