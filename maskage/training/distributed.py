"""One process's place in a ``torchrun`` job, its share of each epoch, and the seeds and device it runs with."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


class DistContext:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one): gloo on CPU, NCCL on GPUs."""

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu")) -> None:
        self.rank, self.world, self.device = rank, world, device

    @classmethod
    def from_env(cls, device_setting: str = "auto") -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device_setting != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
            # N processes share the machine's cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        return cls(rank, world, device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's BatchNorm statistics to every process (each saw only its own batches since the last forward)."""
        if self.world > 1:
            for b in model.buffers():
                torch.distributed.broadcast(b.data, 0)

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world``-th index of a sampler, from ``rank``: processes drawing the same order split it."""

    def __init__(self, sampler: torch.utils.data.Sampler, rank: int, world: int) -> None:
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        return iter(list(self.sampler)[self.rank :: self.world])

    def __len__(self) -> int:
        return len(range(self.rank, len(self.sampler), self.world))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA GPU is available")
    return torch.device(name)
