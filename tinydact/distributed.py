"""Several training processes (torchrun): one per GPU, or a few on a CPU.

Each rank takes every N-th row of each planned batch (`shard`) and DistributedDataParallel
averages the gradients, so a step is the step of one process on the whole batch. Rank 0
alone evaluates, logs, shows progress and writes the run folder (train.py).
"""

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import TinydactError


def distributed_setup(device: torch.device):
    """(rank, world size, device) of this process. Under torchrun (which sets WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) join the process group: NCCL on CUDA, where the
    process takes GPU LOCAL_RANK, gloo on CPU. Without torchrun: (0, 1, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise TinydactError(f"LOCAL_RANK {local_rank}, but this machine has {torch.cuda.device_count()} GPUs: "
                                "give torchrun at most one process per GPU (--nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # device_id: NCCL's collectives (the barrier too) run on this GPU
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return dist.get_rank(), world, device


def shard(idx: list, rank: int, world: int):
    """This rank's rows of a planned batch `idx`, and the weight of its mean loss.

    Rank r takes rows r, r + world, ... DDP averages the gradients over ranks, so weighting
    rank r's mean loss by its share, rows_r · world / len(idx), makes the average exactly the
    gradient of the whole batch's mean loss, also when the rows do not split evenly. A rank
    left without rows (a batch smaller than the world) runs the first row with weight 0: it
    still takes part in the gradient all-reduce, so every rank runs the same steps."""
    rows = idx[rank::world]
    if not rows:
        return idx[:1], 0.0
    return rows, len(rows) * world / len(idx)


def global_means(values: dict, weight: float, world: int) -> dict:
    """Batch means for the log, as floats. With several ranks: the whole batch's mean, the
    sum over ranks of weight · (the rank's mean) / world, in one all-reduce."""
    if world == 1:
        return {k: v.item() for k, v in values.items()}
    packed = torch.stack([v.detach().float() * weight for v in values.values()])
    dist.all_reduce(packed)
    return dict(zip(values, (packed / world).tolist()))


def for_ranks(objective: nn.Module, world: int, device) -> nn.Module:
    """The loss module, wrapped in DistributedDataParallel under torchrun (find_unused_parameters:
    the pooler gets no gradient, and in phase 1 neither do the halting units)."""
    if world == 1:
        return objective
    return DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def broadcast(value, world: int):
    """Rank 0's `value` on every rank (a picklable object), then leave the process group
    (after a barrier: no rank tears down its connections while another still reads from them)."""
    if world == 1:
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    dist.barrier()
    dist.destroy_process_group()
    return shared[0]


def barrier(world: int) -> None:
    """Wait for every rank (the others wait while rank 0 evaluates)."""
    if world > 1:
        dist.barrier()
