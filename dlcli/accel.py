"""The GPU path's switches: numeric precision of training and inference (fp32, or bf16/fp16
autocast with a gradient scaler for fp16, checked against the device up front) and torch.compile
with an eager fallback.

- cuda: bf16 (where the GPU supports it) and fp16 (+ GradScaler) autocast.
- cpu: bf16 autocast is allowed (fast on CPUs with AMX/AVX512-BF16, slower elsewhere); a network
  whose kernels lack bf16 support on this CPU (e.g. LSTM without AVX512-BF16) is refused with one
  line by `probe`. fp16 on CPU is refused: there is no fp16 autocast worth having there.
- mps: fp32 only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from dlcli import settings
from dlcli.errors import UsageError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str, device: torch.device) -> str:
    """`name` if the device can run it, else a UsageError naming what would work."""
    if name not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{name}'")
    if name == "fp32":
        return name
    if device.type == "cuda":
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            raise UsageError(
                "--precision bf16: this GPU has no bfloat16 support", "use --precision fp16"
            )
        return name
    if device.type == "cpu" and name == "bf16":
        return name
    if device.type == "cpu":
        raise UsageError(
            "--precision fp16 needs a CUDA GPU", "use --precision bf16 or fp32 on the CPU"
        )
    raise UsageError(f"--precision {name} is not supported on {device.type}", "use fp32")


def inference_precision(name: str | None, device: torch.device) -> str:
    """Inference default ('auto' or None): bf16 on a CUDA GPU that supports it, else fp32."""
    if name in (None, "auto"):
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else "fp32"
    return check_precision(name, device)


def autocast(name: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward-pass context for `name` on `device` (a no-op for fp32)."""
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[name])


class MixedPrecision:
    """Autocast + (fp16 only) a GradScaler around the optimisation step."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name, self.device = check_precision(name, device), device
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.name, self.device)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        """Before clipping: gradients back in true units."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            opt.step()
        else:
            self.scaler.step(opt)  # skipped when the scaled gradients overflowed
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

    def probe(self, forward: Callable[[], object]) -> None:
        """CPU bf16: run `forward` (one pass on a couple of real rows) under autocast, so kernels
        without bf16 support on this CPU are one clear line before training, not a traceback."""
        if self.name == "fp32" or self.device.type != "cpu":
            return
        try:
            with torch.no_grad(), self.autocast():
                forward()
        except RuntimeError as exc:
            raise unsupported_on_cpu(self.name, exc) from None


def unsupported_on_cpu(name: str, exc: Exception) -> UsageError:
    """The one line for a network whose kernels have no `name` version on this CPU."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
    return UsageError(
        f"--precision {name} is not supported on this CPU for this network ({first})",
        "use --precision fp32, or bf16 on a CUDA GPU",
    )


class CompiledForward:
    """`torch.compile(module)` called like the module; if compiling fails (no compiler, an
    unsupported layer) one note is shown and the eager module is used from then on."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.fn = module, module
        try:
            self.fn = torch.compile(module)
        except Exception as exc:  # torch.compile unavailable on this platform
            self._fall_back(exc)

    def _fall_back(self, exc: Exception) -> None:
        from dlcli.console import note

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        note(f"--compile: torch.compile failed ({type(exc).__name__}: {first}); training eagerly")
        self.fn = self.module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fn is self.module:
            return self.module(x)
        try:
            return self.fn(x)  # compiles on first use (and on new shapes or modes)
        except Exception as exc:
            self._fall_back(exc)
            return self.module(x)


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is absent is a usage error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"unknown --device '{name}'", "use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here", "use --device cpu")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise UsageError("--device mps: Apple MPS is not available here", "use --device cpu")
    return dev


SMALL_STEP = 2e7  # parameters x batch rows below which one CPU thread is faster


def pick_threads(dev: torch.device, work: float) -> None:
    """Small steps run faster on one thread: OpenMP's hand-offs cost more than they save, and
    collapse when other processes share the cores. DL_THREADS overrides."""
    if dev.type != "cpu":
        return
    threads = settings.get().threads
    if threads:
        torch.set_num_threads(threads)
    elif work < SMALL_STEP:
        torch.set_num_threads(1)
