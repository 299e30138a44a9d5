"""Sharding a run over processes or nodes: each rank's share of the files, and a barrier."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from .errors import InferenceConfigError

__all__ = ["ShardGroup", "shard"]

_BARRIER_TIMEOUT = timedelta(hours=24)  # ranks wait for the slowest shard before rank 0 merges


def shard(files: Sequence[str], rank: int, world_size: int) -> list[str]:
    """Rank ``rank``'s disjoint share of ``files``: ``files[rank::world_size]``."""
    if not 0 <= rank < world_size:
        raise InferenceConfigError(f"Rank {rank} is outside a world of size {world_size}.")
    return list(files[rank::world_size])


class ShardGroup:
    """This process's rank and world size, and a barrier across the ranks of a sharded run.

    Uses the default ``torch.distributed`` group when one exists (a gloo subgroup for the barrier),
    else initialises a gloo group from ``torchrun``'s environment when ``WORLD_SIZE`` > 1.
    """

    def __init__(self) -> None:
        self._own = False
        self._group: Any = None
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

    def __enter__(self) -> ShardGroup:
        if self.world_size > 1:
            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=_BARRIER_TIMEOUT)
                self._own = True
            elif dist.get_backend() != "gloo":
                self._group = dist.new_group(backend="gloo", timeout=_BARRIER_TIMEOUT)
        return self

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier(group=self._group)

    def __exit__(self, *exc: object) -> None:
        if self._own:
            dist.destroy_process_group()
