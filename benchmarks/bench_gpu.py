"""GPU training throughput: `dl train` vs a hand-written PyTorch loop with the same network on the
same GPU, for an MLP on a generated 1M x 100 table, the `resnet` preset on generated 32x32 images
and the `lstm` preset on padded token sequences; plus dl's bf16 against its own fp32 on the ResNet.

Both sides: the network from dl's own builder and preset, AdamW with the same learning rate and
weight decay, the same batch size, no schedule, a validation pass per epoch (dl's epoch includes
one). The reference keeps its tensors on the GPU and slices them with `randperm` (the fast way to
write it by hand), in fp32 with the default memory format; for the LSTM it pads every batch to the
longest text. Figure: samples/s (training rows per epoch / epoch seconds), median of epochs 2..3;
dl's comes from the model file's history. Goals: dl/reference >= 1.0; ResNet bf16/fp32 >= 1.5.

Skips (exit 0) when CUDA is absent. `--device cpu --small` runs every code path on a CPU with tiny
data (a smoke test, not a measurement):

    .venv/bin/python benchmarks/bench_gpu.py [--device cuda:1] [--small]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import common
import numpy as np

EPOCHS = 3
GOAL_VS_LOOP, GOAL_BF16 = 1.0, 1.5
FULL = {"rows": 1_000_000, "cols": 100, "images": 20_000, "texts": 50_000}
SMALL = {"rows": 2_000, "cols": 100, "images": 100, "texts": 300}
BATCH = {"mlp": 1024, "resnet": 256, "lstm": 256}
SMALL_BATCH = 32  # smoke runs: a few steps per epoch
SEED = 0


# --- data -------------------------------------------------------------------------------------


def write_texts(path: Path, n: int, seed: int = SEED) -> Path:
    """n texts of 5-200 words from a 5,000-word vocabulary; label 1 when the text holds more of
    the 50 'positive' words than of the 50 'negative' ones (ties: by the first word)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(5), np.log(200), n)).astype(int)
    texts, labels = [], []
    for length in lengths:
        ids = rng.integers(0, 5000, length)
        score = int((ids < 50).sum() - ((ids >= 50) & (ids < 100)).sum())
        texts.append(" ".join(f"w{i}" for i in ids))
        labels.append(int(score > 0 or (score == 0 and ids[0] % 2 == 0)))
    pd.DataFrame({"review": texts, "label": labels}).to_csv(path, index=False)
    return path


# --- dl ---------------------------------------------------------------------------------------


def _stream_flag() -> list[str]:
    """Keep the big table in memory (the reference holds it in GPU memory too)."""
    helptext = subprocess.run([common.DL, "train", "--help"], capture_output=True, text=True)
    return ["--no-stream"] if "--no-stream" in helptext.stdout else []


def dl_rate(data: Path, out: Path, args: list, device: str, threads: int) -> tuple[float, dict]:
    """(median samples/s of epochs 2..3, settings) of one `dl train` run."""
    from dlcli import modelfile

    cmd = [common.DL, "train", data, "-o", out, *args, "--device", device, "--epochs", EPOCHS]
    cmd += ["--patience", 0, "--schedule", "none", "--no-plots", "--quiet", "--json"]
    common.run_measured(cmd, env={**common.thread_env(threads), "PYTHONUNBUFFERED": "1"}).check()
    saved = modelfile.load(out)
    rates = [float(r["samples_per_s"]) for r in saved["history"]]
    return common.median_of(rates[1:]), saved["train"]


# --- the hand-written loop --------------------------------------------------------------------


def reference_rate(
    net,
    train: tuple,
    val: tuple,
    settings: dict,
    loss_fn: Callable,
    device: str,
    prepare: Callable = lambda x: x,
) -> float:
    """Samples/s of a plain loop: tensors on the device, randperm slices, fp32, a val pass."""
    import torch

    from dlcli.engine.task_step import member_loss, trained_members

    train_loss = member_loss(loss_fn, trained_members(net))  # packed ensembles: as dl trains them
    dev = torch.device(device)
    x_tr, y_tr = (t.to(dev) for t in train)
    x_va, y_va = (t.to(dev) for t in val)
    net = net.to(dev)
    opt = torch.optim.AdamW(
        net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
    )
    clip, batch = settings.get("grad_clip") or 0.0, int(settings["batch_size"])
    steps = max(1, len(x_tr) // batch)
    times = []
    for _ in range(EPOCHS):
        _sync(dev)
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(x_tr), device=dev)
        for s in range(steps):
            idx = perm[s * batch : (s + 1) * batch]
            loss = train_loss(net(prepare(x_tr[idx])), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
        net.eval()
        with torch.no_grad():
            for i in range(0, len(x_va), 4096):
                loss_fn(net(prepare(x_va[i : i + 4096])), y_va[i : i + 4096])
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return steps * batch / common.median_of(times[1:])


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _bce(out, y):
    import torch

    return torch.nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), y.float())


def _ce(out, y):
    import torch

    return torch.nn.functional.cross_entropy(out, y)


def _network(arch: str, shape: tuple, outputs: int, preprocessor=None):
    import torch

    from dlcli.model.assemble import network_args
    from dlcli.model.builder import build_network
    from dlcli.spec.schema import load_preset

    torch.manual_seed(SEED)
    extra = network_args(preprocessor) if preprocessor is not None else {}
    return build_network(load_preset(arch)[0], shape, outputs, **extra).module


def _prepare(path: Path, extra: dict | None = None):
    """dl's own data preparation (the reference trains on exactly dl's tensors)."""
    from dlcli.console import set_quiet
    from dlcli.data.sources import DataOptions, choose_source

    set_quiet(True)
    in_memory = {"stream": False} if _has_stream_option() else {}  # as the reference holds it
    opts = DataOptions(extra=extra or {}, **in_memory)
    return choose_source(str(path), opts).prepare(str(path), opts)


def _has_stream_option() -> bool:
    from dataclasses import fields

    from dlcli.data.sources import DataOptions

    return "stream" in {f.name for f in fields(DataOptions)}


# --- the three workloads ------------------------------------------------------------------------


def bench_mlp(tmp: Path, size: dict, device: str, threads: int) -> list[dict]:
    csv = common.write_linear_binary(tmp / "table.csv", size["rows"], size["cols"], SEED)
    args = ["--arch", "mlp", "--batch-size", size["batch"]["mlp"], *_stream_flag()]
    dl, settings = dl_rate(csv, tmp / "mlp.pt", args, device, threads)
    prep = _prepare(csv)
    pre = prep.preprocessor.preprocess_module()
    train, val = (pre(prep.x_train), prep.y_train), (pre(prep.x_val), prep.y_val)
    net = _network("mlp", (train[0].shape[1],), 1)
    ref = reference_rate(net, train, val, settings, _bce, device)
    note = f"{len(train[0]):,} x {size['cols']} training rows, batch {size['batch']['mlp']}"
    return [_result("gpu_mlp_samples_per_s", dl, ref, GOAL_VS_LOOP, note)]


def bench_resnet(tmp: Path, size: dict, device: str, threads: int) -> list[dict]:
    import bench_images
    import torch

    from dlcli.data.images import ImageOptions

    folder = tmp / "images"
    bench_images.write_images(folder, size["images"])
    args = ["--arch", "resnet", "--image-size", 32, "--batch-size", size["batch"]["resnet"]]
    dl32, settings = dl_rate(
        folder, tmp / "r32.pt", [*args, "--precision", "fp32"], device, threads
    )
    dl16, _ = dl_rate(folder, tmp / "r16.pt", [*args, "--precision", "bf16"], device, threads)
    prep = _prepare(folder, {"image": ImageOptions(image_size=32)})
    x = prep.x_train[:4096].float() / 255
    mean, std = x.mean((0, 2, 3)).view(1, 3, 1, 1), x.std((0, 2, 3)).view(1, 3, 1, 1)
    dev = torch.device(device)
    mean, std = mean.to(dev), std.to(dev)
    net = _network("resnet", (3, 32, 32), len(prep.preprocessor.target.classes))
    ref = reference_rate(
        net,
        (prep.x_train, prep.y_train),
        (prep.x_val, prep.y_val),
        settings,
        _ce,
        device,
        prepare=lambda xb: (xb.float() / 255 - mean) / std,
    )
    note = f"{len(prep.x_train):,} training images 32x32, batch {size['batch']['resnet']}"
    return [
        _result("gpu_resnet_samples_per_s", dl32, ref, GOAL_VS_LOOP, note + ", both fp32"),
        _result("gpu_resnet_bf16_vs_fp32", dl16, dl32, GOAL_BF16, note + ", dl bf16 vs dl fp32"),
    ]


def bench_lstm(tmp: Path, size: dict, device: str, threads: int) -> list[dict]:
    csv = write_texts(tmp / "texts.csv", size["texts"])
    args = ["--arch", "lstm", "--batch-size", size["batch"]["lstm"]]
    dl, settings = dl_rate(csv, tmp / "lstm.pt", args, device, threads)
    prep = _prepare(csv)
    train = (prep.x_train.ids.cpu(), prep.x_train.y.cpu())
    val = (prep.x_val.ids.cpu(), prep.x_val.y.cpu())
    net = _network("lstm", (None,), 1, prep.preprocessor)
    ref = reference_rate(net, train, val, settings, _bce, device)
    note = f"{len(train[0]):,} texts padded to {train[0].shape[1]} tokens, batch {size['batch']['lstm']}"
    return [_result("gpu_lstm_samples_per_s", dl, ref, GOAL_VS_LOOP, note)]


def _result(name: str, dl: float, ref: float, goal: float, note: str) -> dict:
    return common.result(
        name, dl, ref, "samples/s", dl / ref, goal, higher_is_better=True, note=note
    )


# --- entry points -------------------------------------------------------------------------------


def run(device: str | None = None, small: bool | None = None) -> list[dict]:
    """Every GPU figure; [] with a printed reason when the device is a GPU that is not here."""
    import torch

    device = device or os.environ.get("BENCH_GPU_DEVICE", "cuda")
    small = small if small is not None else os.environ.get("BENCH_GPU_SMALL") == "1"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "bench_gpu: skipped: no CUDA GPU here (torch.cuda.is_available() is False)", flush=True
        )
        return []
    size = {**(SMALL if small else FULL), "batch": dict(BATCH)}
    if small:
        size["batch"] = dict.fromkeys(BATCH, SMALL_BATCH)
    threads = int(os.environ.get("BENCH_THREADS", "1" if device == "cpu" else "4"))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    old_cache = os.environ.get("DL_CACHE_DIR")
    results = []
    try:
        with common.temp_dir("dlbench-gpu-") as tmp:
            os.environ["DL_CACHE_DIR"] = str(tmp / "cache")  # never the user's ~/.cache
            for bench in (bench_mlp, bench_resnet, bench_lstm):
                results += bench(tmp, size, device, threads)
    finally:
        torch.set_num_threads(previous)
        if old_cache is None:
            os.environ.pop("DL_CACHE_DIR", None)
        else:
            os.environ["DL_CACHE_DIR"] = old_cache
    where = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
    for r in results:
        r["note"] += f"; {where}" + ("; smoke run, tiny data" if small else "")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default), cuda:N, or cpu (smoke run)")
    parser.add_argument("--small", action="store_true", help="tiny data: check the code paths")
    args = parser.parse_args()
    common.main(lambda: run(args.device, args.small or None))
    sys.exit(0)


if __name__ == "__main__":
    main()
