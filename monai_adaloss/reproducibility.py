"""Random-number state for checkpoints, so that a resumed training run continues bit for bit.

:class:`RandomStateCheckpoint` goes next to the network, optimiser, trainer and Adaloss handler in a
checkpoint's ``save_dict``::

    rng = RandomStateCheckpoint(train_transforms)
    save_dict = {"net": net, "opt": opt, "trainer": trainer, "adaloss": adaloss_handler, "rng": rng}
    CheckpointSaver(save_dir, save_dict, save_interval=1)     # writes at EPOCH_COMPLETED
    CheckpointLoader(path, load_dict=save_dict)               # restores at STARTED

What it captures: the torch CPU generator, the CUDA generators (when CUDA is initialised), numpy's
global generator, Python's ``random`` and the ``R`` (a ``numpy.random.RandomState``) of every MONAI
``Randomizable`` in the given transforms, found by walking ``Compose.transforms`` and the attributes
of each transform recursively (so the inner ``RandGaussianNoise`` of a ``RandGaussianNoised`` is
included). The state holds only tensors and plain Python values: the file loads with
``torch.load(..., weights_only=True)``.

Why saving at ``EPOCH_COMPLETED`` is enough: Ignite creates the next epoch's DataLoader iterator
after that event, and that is when a shuffling ``RandomSampler`` and the DataLoader draw their seeds
from the torch generator; restoring it at ``STARTED`` of the resumed run reproduces the draws.

Conditions for a bit-identical continuation:

- Nothing that draws random numbers may run at ``EPOCH_COMPLETED`` after the checkpoint is written
  (a ``ValidationHandler`` creates a DataLoader iterator, which draws from the torch generator):
  attach the checkpoint saver after such handlers, or give the validation DataLoader its own
  ``generator``.
- Load the state after the training DataLoader is built: ``monai.data.DataLoader`` re-seeds the
  transforms when it is constructed (``CheckpointLoader`` loads at ``STARTED``, which is after).
- DataLoader workers (``num_workers > 0``, ``persistent_workers=False``): each epoch's workers are
  seeded from a base seed drawn from the torch generator, and ``monai.data.DataLoader``'s
  ``worker_init_fn`` re-seeds the transform copies in the workers from it, so the torch state
  covers them. Persistent workers keep their generators in the worker processes, out of reach of a
  checkpoint. A DataLoader given its own ``generator`` is not covered either.
- Multi-process runs: :meth:`RandomStateCheckpoint.state_dict` gathers every rank's state (a
  collective: call it on all ranks, as Ignite's ``Checkpoint`` does) and each rank restores its own;
  a checkpoint from a run with a different number of processes is not restored (with a warning).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from monai.transforms import Randomizable, Transform

__all__ = ["RandomStateCheckpoint"]

logger = logging.getLogger(__name__)


def _find_randomizables(root: Any) -> list[Randomizable]:
    """Every ``Randomizable`` reachable from ``root`` through sequences and transform attributes, depth first."""
    found: list[Randomizable] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
            return
        if not isinstance(obj, (Randomizable, Transform)):
            return
        if isinstance(obj, Randomizable):
            found.append(obj)
        for value in getattr(obj, "__dict__", {}).values():
            visit(value)

    visit(root)
    return found


def _numpy_state(state: tuple[str, np.ndarray, int, int, float]) -> dict[str, Any]:
    """A ``RandomState.get_state()`` tuple (MT19937) as a tensor and plain values."""
    _, keys, pos, has_gauss, cached_gaussian = state
    return {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _numpy_tuple(state: Mapping[str, Any]) -> tuple[str, np.ndarray, int, int, float]:
    """The inverse of :func:`_numpy_state`: the tuple ``RandomState.set_state`` takes."""
    keys = torch.as_tensor(state["keys"]).cpu().numpy().astype(np.uint32)
    return "MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"])


class RandomStateCheckpoint:
    """The random-number state a resumed run needs, with ``state_dict`` / ``load_state_dict``.

    Args:
        transforms: the training transforms, a MONAI transform, ``Compose`` or sequence of them (nested
            ``Compose`` included); the ``R`` of each ``Randomizable`` in them is captured. ``None`` for
            the global generators only.
    """

    def __init__(self, transforms: Any = None) -> None:
        self.transforms = transforms

    def _local_state(self) -> dict[str, Any]:
        """This process's generator states (see :meth:`state_dict` for the layout)."""
        version, mt_state, gauss_next = random.getstate()
        cuda_initialized = torch.cuda.is_available() and torch.cuda.is_initialized()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if cuda_initialized else [],
            "numpy": _numpy_state(np.random.get_state(legacy=True)),
            "python": {
                "version": version,
                "state": torch.tensor(mt_state, dtype=torch.int64),
                "gauss_next": gauss_next,
            },
            "transforms": [_numpy_state(t.R.get_state(legacy=True)) for t in _find_randomizables(self.transforms)],
        }

    def state_dict(self) -> dict[str, Any]:
        """``{"world_size": n, "ranks": [state of rank 0, ..., rank n - 1]}``; tensors and plain values only.

        Each rank's state is ``{"torch": uint8 (N,), "cuda": [uint8 (M,), ...], "numpy": {...},
        "python": {...}, "transforms": [{...}, ...]}`` where a numpy state is ``{"keys": int64 (624,),
        "pos": int, "has_gauss": int, "cached_gaussian": float}``. In a multi-process run this is a
        collective (an all-gather across ranks).
        """
        ranks = idist.all_gather(self._local_state())
        return {"world_size": len(ranks), "ranks": list(ranks)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore this rank's generators and the transforms' ``R`` from :meth:`state_dict`'s output.

        Raises:
            ValueError: when a key is missing or the transforms hold a different number of
                ``Randomizable`` objects than when the state was saved.
        """
        missing = {"world_size", "ranks"} - set(state)
        if missing:
            raise ValueError(f"Argument `state` misses the keys {sorted(missing)}.")
        world_size = idist.get_world_size()
        if int(state["world_size"]) != world_size:
            logger.warning(
                "Random state not restored: the checkpoint was written by %d processes, this run has %d.",
                state["world_size"],
                world_size,
            )
            return
        own = state["ranks"][idist.get_rank()]
        randomizables = _find_randomizables(self.transforms)
        if len(own["transforms"]) != len(randomizables):
            raise ValueError(
                f"Argument `state` holds {len(own['transforms'])} transform random states, the transforms "
                f"have {len(randomizables)} Randomizable objects."
            )
        torch.set_rng_state(torch.as_tensor(own["torch"]).cpu())
        if own["cuda"] and torch.cuda.is_available():
            for device, cuda_state in enumerate(own["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(torch.as_tensor(cuda_state).cpu(), device)
        np.random.set_state(_numpy_tuple(own["numpy"]))
        python = own["python"]
        random.setstate((int(python["version"]), tuple(python["state"].tolist()), python["gauss_next"]))
        for transform, transform_state in zip(randomizables, own["transforms"], strict=True):
            transform.R.set_state(_numpy_tuple(transform_state))
