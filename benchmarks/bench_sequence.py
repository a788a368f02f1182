"""Training throughput (tokens/s) of the `lstm` and `transformer` presets: `dl train` vs a
hand-written PyTorch loop with the same modules and padded batches, on the sample reviews.

Both sides: the same network (dl's builder), AdamW with the preset's learning rate, the batch size
dl chose, BCE-with-logits, BENCH_THREADS torch threads (default 1), a validation pass per epoch.
The reference pads every batch to the longest text (what a plain DataLoader over a padded tensor
does); dl buckets texts by length. Figure: real (non-padding) training tokens per second, median of
epochs 2..3. Also reported: dl's padding waste on the sample text (goal < 25%).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import common

REPO = Path(__file__).resolve().parents[1]
REVIEWS = REPO / "sample_data" / "reviews" / "train.csv"
EPOCHS = 3
GOAL = 0.9


def _prepared():
    from dlcli.console import set_quiet
    from dlcli.data.sources import DataOptions
    from dlcli.data.text import TextSource

    set_quiet(True)
    return TextSource.prepare(str(REVIEWS), DataOptions())


def dl_tokens_per_s(arch: str, tmp: Path, threads: int, train_tokens: int) -> tuple[float, dict]:
    args = [common.DL, "train", REVIEWS, "-o", tmp / f"{arch}.pt", "--arch", arch]
    args += ["--epochs", EPOCHS, "--patience", 0, "--no-plots", "--quiet", "--json"]
    summary = json.loads(common.run_measured(args, env=common.thread_env(threads)).check().stdout)
    return train_tokens / common.median_of(summary["epoch_seconds"][1:]), summary["settings"]


def reference_tokens_per_s(
    arch: str, prep, settings: dict, threads: int, train_tokens: int
) -> float:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from dlcli.model.assemble import network_args
    from dlcli.model.builder import build_network
    from dlcli.spec.schema import load_preset

    x_tr, y_tr = prep.x_train.ids.cpu(), prep.x_train.y.cpu().float()
    x_va, y_va = prep.x_val.ids.cpu(), prep.x_val.y.cpu().float()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = build_network(
            load_preset(arch)[0], (None,), 1, **network_args(prep.preprocessor)
        ).module
        opt = torch.optim.AdamW(
            net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
        )
        loader = DataLoader(
            TensorDataset(x_tr, y_tr), batch_size=settings["batch_size"], shuffle=True
        )
        loss_fn = torch.nn.BCEWithLogitsLoss()
        times = []
        for _ in range(EPOCHS):
            t0 = time.perf_counter()
            net.train()
            for xb, yb in loader:
                loss = loss_fn(net(xb).squeeze(-1), yb)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), settings.get("grad_clip") or 1e9)
                opt.step()
            net.eval()
            with torch.no_grad():
                for i in range(0, len(x_va), 512):
                    loss_fn(net(x_va[i : i + 512]).squeeze(-1), y_va[i : i + 512])
            times.append(time.perf_counter() - t0)
        return train_tokens / common.median_of(times[1:])
    finally:
        torch.set_num_threads(previous)


def run() -> list[dict]:
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    prep = _prepared()
    train_tokens = int((prep.x_train.ids != 0).sum())
    waste = float(prep.info.get("padding_waste", float("nan")))
    load = common.load_note()
    results = []
    with common.temp_dir() as tmp:
        for arch in ("lstm", "transformer"):
            dl_tps, settings = dl_tokens_per_s(arch, tmp, threads, train_tokens)
            ref_tps = reference_tokens_per_s(arch, prep, settings, threads, train_tokens)
            note = f"{train_tokens:,} training tokens, batch {settings['batch_size']}; {threads} threads; {load}"
            results.append(
                common.result(
                    f"seq_{arch}_tokens_per_s",
                    dl_tps,
                    ref_tps,
                    "tok/s",
                    dl_tps / ref_tps,
                    GOAL,
                    higher_is_better=True,
                    note=note,
                )
            )
    results.append(
        common.result(
            "seq_padding_waste",
            waste,
            None,
            "",
            waste,
            0.25,
            kind="abs",
            note="share of padding tokens per epoch, bucketed",
        )
    )
    return results


if __name__ == "__main__":
    common.main(run)
