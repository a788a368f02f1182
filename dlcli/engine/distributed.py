"""Training on several processes with torch.distributed: the process group (NCCL on GPUs, gloo on
CPUs) read from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT),
DistributedDataParallel, sums reduced across processes, and `--devices N`, which starts N local
processes through torchrun's own launcher.

`dl train` runs unchanged under `torchrun ... -m dlcli train ...`: every process loads the same
data and builds the same network; each takes its share of every batch (see batches.shard); only
rank 0 prints and writes files. torch is imported inside the functions that use it, so the CLI can
ask `is_main()` before anything heavy is loaded."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dlcli.errors import UsageError

if TYPE_CHECKING:
    import torch


def world_size() -> int:
    """Processes in this training run (1 when not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def is_main() -> bool:
    """True in the one process that prints progress and writes files."""
    return rank() == 0


def local_device(dev: torch.device) -> torch.device:
    """Under torchrun, `cuda` means this process's own GPU: cuda:LOCAL_RANK."""
    import torch

    if dev.type == "cuda" and dev.index is None and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


@dataclass
class Group:
    """This process's place in a torch.distributed run."""

    rank: int
    world: int
    device: torch.device
    owned: bool  # we created the process group, so we destroy it

    def wrap(self, network: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel: gradients averaged across processes in every backward."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(network, device_ids=ids)

    def sum(self, *values: float) -> list[float]:
        """Element-wise sums of `values` over all processes (identical on every process)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def _comm_device(self) -> torch.device:
        import torch

        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def close(self) -> None:
        import torch.distributed as dist

        if self.owned and dist.is_initialized():
            if sys.exc_info()[0] is None:  # a normal end, reached by every rank: wait for all,
                dist.barrier()  # so no rank's exit closes a connection another still tears down
            dist.destroy_process_group()


def exit_worker() -> None:
    """End a rank other than 0 after a clean run: flush, then leave without the interpreter's
    teardown, where the native thread pools of torch, gloo and pyarrow were seen to abort the
    process now and then (exit -6 on a busy machine), failing a run whose model rank 0 had
    already written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def join(device: torch.device) -> Group | None:
    """Join the process group torchrun set up the environment for; None for a single process."""
    if world_size() <= 1:
        return None
    import torch
    import torch.distributed as dist

    if device.type not in ("cuda", "cpu"):
        raise UsageError(f"distributed training runs on cuda or cpu, not {device.type}")
    owned = not dist.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size(), device, owned)


# --- `dl train --devices N` ------------------------------------------------------------------


def launch(nproc: int, argv: list[str], device: str | None) -> int:
    """Run `dl <argv>` as `nproc` local processes with torchrun's launcher; returns the exit
    status (the failing process has printed its own error line)."""
    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if world_size() > 1:
        raise UsageError("--devices starts processes itself; under torchrun leave it out")
    wanted = device or "auto"
    if wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available()):
        have = torch.cuda.device_count()
        if have < nproc:
            raise UsageError(
                f"--devices {nproc}: only {have} CUDA GPU{'s' if have != 1 else ''} here",
                f"use --devices {have}" if have else "use --device cpu",
            )
    # one process per device; on CPUs split the cores between them (torchrun would set 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = ["--standalone", "--nproc-per-node", str(nproc), "--module", "dlcli", *argv]
    try:
        run(parse_args(args))
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values() if f.exitcode]
        return codes[0] if codes and codes[0] > 0 else 1
    return 0
