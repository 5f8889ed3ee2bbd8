"""Data-parallel training over several processes (PyTorch DistributedDataParallel).

``torchrun --nproc_per_node N -m diffscreen.cli train ...`` starts N copies of the program; :func:`from_env` joins
them through torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``)
and :func:`diffscreen.train.train_model` then builds the same initial model on every rank (same seed), wrapped in
DistributedDataParallel (gradients averaged after every backward pass, so the parameters stay identical); draws
each epoch's class-balanced batches identically on every rank and gives rank r the r-th slice of every batch
(:class:`ShardedBatchSampler`: together the ranks see exactly the batches of a one-process run); rank 0 alone
validates, logs and writes files. NCCL with one GPU per rank when CUDA is available, else Gloo
(``DIFFSCREEN_DDP_BACKEND=gloo`` forces it). BatchNorm layers normalise with each rank's part of the batch;
running statistics are broadcast from rank 0 at every forward pass.

Reference: Li et al. (2020), "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB
13(12), §3 (gradient averaging with all-reduce).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from diffscreen.errors import ConfigError

__all__ = ["DDPContext", "from_env", "torchrun_launched", "launch_rank", "ShardedBatchSampler"]


def torchrun_launched() -> bool:
    """True when torchrun (torch.distributed.run) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ


def launch_rank() -> int:
    """This process's rank according to torchrun's environment (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0") or 0) if torchrun_launched() else 0


@dataclass
class DDPContext:
    """One process of a data-parallel training: ``rank``, ``world_size``, ``local_rank``, ``backend``
    ("gloo" or "nccl"), the ``device`` of its model and batches, and whether :func:`from_env` set up the
    process group (``owned``: ``train_model`` leaves it at its end)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    owned: bool = False

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        """``model`` (already on :attr:`device`) wrapped in DistributedDataParallel."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sum(self, values) -> list[float]:
        """Element-wise sum over all ranks of a list of numbers (float64)."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def broadcast(self, obj):
        """Rank 0's picklable ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group."""
        if dist.is_initialized():
            dist.destroy_process_group()

    def write_checksum(self, model) -> None:
        """Debugging aid: with ``DIFFSCREEN_DDP_CHECKSUM_DIR`` set, write the SHA-256 (hex) of ``model``'s trainable
        parameters, in order, to ``rank<r>.sha256`` there (after the last epoch all ranks must agree).

        Buffers are left out: BatchNorm running statistics are updated by each rank's own forward pass and made
        equal again (broadcast from rank 0) only at the start of the next one.
        """
        folder = os.environ.get("DIFFSCREEN_DDP_CHECKSUM_DIR")
        if folder:
            h = hashlib.sha256()
            for k, v in model.named_parameters():
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            Path(folder, f"rank{self.rank}.sha256").write_text(h.hexdigest() + "\n")

    def describe(self) -> dict:
        """What goes in the model file's training metadata."""
        return {"world_size": self.world_size, "backend": self.backend, "device": self.device.type}


def from_env(device=None) -> DDPContext | None:
    """Join the process group torchrun set up; None when not launched by torchrun with several processes.

    Parameters
    ----------
    device : torch.device or str, optional
        The ``--device`` asked for: ``cpu`` chooses Gloo on the CPU even where CUDA is available, ``cuda``
        NCCL with one GPU per local rank; None: NCCL when CUDA is available, else Gloo.
        ``DIFFSCREEN_DDP_BACKEND`` overrides both.

    Returns
    -------
    DDPContext or None

    Raises
    ------
    ConfigError
        The environment asks for NCCL but CUDA has fewer GPUs than local ranks.
    """
    if not torchrun_launched():
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    wants_gpu = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    backend = os.environ.get("DIFFSCREEN_DDP_BACKEND") or ("nccl" if wants_gpu else "gloo")
    if backend == "nccl":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local} has no GPU ({torch.cuda.device_count()} visible)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DDPContext(rank, world, local, backend, device, owned)


class ShardedBatchSampler(Sampler):
    """Rank ``rank``'s slice of every mini-batch a base sampler draws.

    The base sampler (e.g. :class:`~diffscreen.train.engine.ClassBalancedSampler`) draws the same items on every
    rank; mini-batch ``b`` is items ``[b·B, (b+1)·B)`` and rank ``r`` of ``W`` takes ``B/W`` of them, ``[b·B +
    r·B/W, b·B + (r+1)·B/W)``.  Use it with a DataLoader of ``batch_size = B / W``.

    Parameters
    ----------
    base : Sampler
        With ``draw() -> (n_items, k) int ndarray`` and ``set_epoch``.
    batch_size : int
        Global mini-batch size B (a multiple of ``world_size``).
    rank, world_size : int

    Raises
    ------
    ConfigError
        B is not a multiple of W.
    """

    def __init__(self, base, batch_size: int, rank: int, world_size: int):
        if batch_size % world_size:
            raise ConfigError(
                f"batch size {batch_size} must be a multiple of the number of processes ({world_size})"
            )
        self.base, self.B, self.rank, self.world = base, int(batch_size), int(rank), int(world_size)
        self.per_rank = self.B // self.world

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return (len(self.base) // self.B) * self.per_rank

    def draw(self) -> np.ndarray:
        items = self.base.draw()
        n = (len(items) // self.B) * self.B
        batches = items[:n].reshape(-1, self.B, items.shape[1])
        lo = self.rank * self.per_rank
        return batches[:, lo : lo + self.per_rank].reshape(-1, items.shape[1])

    def __iter__(self):
        return iter(tuple(int(v) for v in row) for row in self.draw())
