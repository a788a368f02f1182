"""The GAN family end to end on the sample digits: training writes the model, a sample grid per
epoch and both losses; Ctrl-C + --resume continues exactly; `predict --samples` (grid,
--output-dir, --seed); ONNX export of the generator checked against PyTorch; bad input gets one
clear line. A tiny spec keeps every run to a few seconds; the preset itself is built, not trained
(its quality is benchmarks/gan_quality.py's job)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLES, assert_error, flat
from PIL import Image
from test_engine import StopAt  # Ctrl-C right after epoch n

from dlcli import modelfile
from dlcli.data.sources import DataOptions
from dlcli.engine.train_job import TrainingInterrupted, TrainRequest
from dlcli.families import run_training

DIGITS = SAMPLES / "digits"
TINY = """
name: tiny-gan
data: [image]
latent: 8
generator:
  - project: [16, h/4, w/4]
  - batchnorm
  - relu
  - {conv_transpose2d: 8}
  - relu
  - {conv_transpose2d: outputs, activation: tanh}
  - resize: image
discriminator:
  - {conv2d: 8, kernel: 4, stride: 2}
  - leaky: 0.2
  - {conv2d: 16, kernel: 4, stride: 2}
  - leaky
  - flatten
training: {batch_size: 64}
"""


def train(out: Path, spec: Path, data: Path = DIGITS, **kw) -> dict:
    callbacks, resume, plots = (
        kw.pop("callbacks", []),
        kw.pop("resume", False),
        kw.pop("plots", False),
    )
    req = TrainRequest(
        str(data), str(out), spec=str(spec), data_opts=DataOptions(), overrides=kw,
        plots=plots, callbacks=callbacks, resume=resume,
    )  # fmt: skip
    return run_training(req)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as `dl` gets in the CLI tests (also: the same float sums in every run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def gan(tmp_path_factory, tiny_spec) -> tuple[Path, dict]:
    """A 3-epoch GAN on the digits, with plots: (model path, --json summary)."""
    out = tmp_path_factory.mktemp("gan") / "gan.pt"
    return out, train(out, tiny_spec, epochs=3, seed=1, plots=True)


def test_training_writes_model_sample_grids_and_both_losses(gan):
    model, summary = gan
    run = modelfile.run_dir(model)
    data = modelfile.load(model)
    assert data["family"] == "gan" and data["latent"] == 8 and data["image_shape"] == [1, 16, 16]
    assert set(data["weights"]) == {"generator", "discriminator"}
    assert summary["epochs_run"] == 3 and summary["train_rows"] == 1437  # digits/train: all of it
    grids = [run / "samples" / f"epoch_{e:03d}.png" for e in (1, 2, 3)]
    assert all(str(g) in summary["files"] for g in grids)
    with Image.open(grids[-1]) as img:  # 8 x 8 tiles of 16 px enlarged to 48, 2 px apart
        assert img.size == (8 * 50 + 2, 8 * 50 + 2) and img.mode == "L"
        assert np.asarray(img).std() > 10  # not a blank image
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for r in rows:
        assert float(r["d_loss"]) > 0 and float(r["g_loss"]) > 0 and 0 < float(r["d_real"]) < 1
    assert (run / "losses.png").stat().st_size > 1000
    assert not modelfile.checkpoint_path(model).exists()


def test_interrupt_leaves_checkpoint_and_resume_matches_the_uninterrupted_run(
    gan, tiny_spec, tmp_path
):
    out = tmp_path / "g.pt"
    out.write_bytes(b"previous good model")
    with pytest.raises(TrainingInterrupted, match="interrupted after 2 complete epochs"):
        train(out, tiny_spec, epochs=3, seed=1, callbacks=[StopAt(2)])
    assert out.read_bytes() == b"previous good model"
    assert modelfile.checkpoint_path(out).exists()
    resumed = train(out, tiny_spec, resume=True)
    assert resumed["epochs_run"] == 3 and not modelfile.checkpoint_path(out).exists()
    full = modelfile.load(gan[0])["weights"]["generator"]
    got = modelfile.load(out)["weights"]["generator"]
    assert all(torch.equal(full[k], got[k]) for k in full)


def test_predict_samples_grid_output_dir_and_seed(gan, dl_inproc, tmp_path):
    model = gan[0]
    r = dl_inproc("predict", model, "--samples", 6, "--seed", 3, "--output-dir", tmp_path / "a",
                  "-o", tmp_path / "grid.png")  # fmt: skip
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "a").iterdir())
    assert [f.name for f in files] == [f"sample_{i:04d}.png" for i in range(6)]
    with Image.open(files[0]) as img:
        assert img.size == (16, 16) and img.mode == "L"
    with Image.open(tmp_path / "grid.png") as img:  # 6 samples: 3 x 2 tiles
        assert img.size == (3 * 50 + 2, 2 * 50 + 2)
    dl_inproc("predict", model, "--samples", 6, "--seed", 3, "--output-dir", tmp_path / "b")
    dl_inproc("predict", model, "--samples", 6, "--seed", 4, "--output-dir", tmp_path / "c")
    same = [(tmp_path / d / "sample_0004.png").read_bytes() for d in "abc"]
    assert same[0] == same[1] and same[0] != same[2]


def test_export_generator_to_onnx_matches_pytorch(gan, dl_inproc, tmp_path):
    import onnx
    import onnxruntime as ort

    from dlcli.families.gan import load_sampler

    model, target = gan[0], tmp_path / "g.onnx"
    r = dl_inproc("export", model, "-o", target, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["input_name"] == "noise" and result["output_name"] == "image"
    meta = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert meta["dl.latent"] == "8" and meta["dl.channels"] == "1" and meta["dl.height"] == "16"
    noise = torch.randn(5, 8, generator=torch.Generator().manual_seed(9))
    got = ort.InferenceSession(str(target)).run(None, {"noise": noise.numpy()})[0]
    sampler, _ = load_sampler(modelfile.load(model), str(model))
    with torch.no_grad():
        expected = sampler(noise).numpy()
    assert got.shape == (5, 1, 16, 16) and np.abs(got - expected).max() < 1e-4
    assert got.min() >= 0 and got.max() <= 1


def test_build_shows_generator_and_discriminator(dl_inproc):
    r = dl_inproc("build", "--arch", "gan", "--input-shape", "1,28,28", "--json")
    assert r.returncode == 0, r.stderr
    nets = json.loads(r.stdout)
    assert set(nets) == {"generator", "discriminator"}
    assert json.dumps(nets["generator"]).count("28") >= 2  # the generator ends at 28x28


# ---- bad input: one clear line -----------------------------------------------------------------


def test_gan_preset_on_a_csv(dl_inproc):
    r = dl_inproc("train", SAMPLES / "penguins" / "train.csv", "--arch", "gan")
    assert_error(r, "--arch gan is made for image data")


def test_gan_spec_without_data_kinds_on_a_csv(dl_inproc, tmp_path, tiny_spec):
    spec = tmp_path / "g.yaml"
    spec.write_text(tiny_spec.read_text().replace("data: [image]\n", ""))
    r = dl_inproc("train", SAMPLES / "penguins" / "train.csv", "--spec", spec)
    assert_error(r, "a GAN generates images", "tabular data")


def test_a_folder_of_one_image(dl_inproc, tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(next((DIGITS / "train" / "3").iterdir()), folder / "a.png")
    r = dl_inproc("train", folder, "--arch", "gan", "-o", tmp_path / "m.pt")
    line = assert_error(r, "1 image", "needs at least 32")
    assert not (tmp_path / "m.pt").exists(), line


def test_predict_flags_that_do_not_fit(gan, penguins_model, dl_inproc):
    assert_error(dl_inproc("predict", gan[0], "--samples", 4), "-o FILE.png", "--output-dir")
    assert_error(dl_inproc("predict", gan[0], "-o", "x.png"), "give --samples N")
    assert_error(dl_inproc("predict", gan[0], "--samples", 4, "-o", "x.csv"), "PNG")
    assert_error(dl_inproc("predict", gan[0], "--embed", "x.csv"), "--embed")
    r = dl_inproc("predict", penguins_model, "--samples", 4, "-o", "x.png")
    assert "needs a GAN model" in flat(assert_error(r))


# ---- divergence and mode collapse --------------------------------------------------------------


def test_watch_reports_divergence_once_after_many_rejected_steps():
    from dlcli.families.gan_fit import DIVERGE_STEPS, Watch

    watch = Watch(real_spread=1.0)
    for step in range(1, DIVERGE_STEPS):
        watch.step(0.001, step)
    assert not watch.diverged  # one step short
    watch.step(0.5, DIVERGE_STEPS)  # the generator fooled it once: the count starts again
    for step in range(DIVERGE_STEPS + 1, 3 * DIVERGE_STEPS + 2):
        watch.step(0.001, step)
    assert watch.diverged and len(watch.warnings) == 1 and "divergence" in watch.warnings[0]


def test_watch_reports_collapse_after_healthy_spread_but_not_early_blur():
    from dlcli.families.gan_fit import Watch, spread

    torch.manual_seed(0)
    real = torch.rand(64, 1, 8, 8)
    alike = real[:1].expand(64, 1, 8, 8) + 0.01 * torch.rand(64, 1, 8, 8)  # one image, 64 times
    watch = Watch(spread(real))
    assert watch.epoch(alike, 1) < 0.1 and not watch.collapsed  # first epochs: one blur is normal
    assert watch.epoch(real, 2) == pytest.approx(1.0)
    watch.epoch(alike, 3)  # healthy, then all alike: collapse
    assert watch.collapsed and "mode collapse" in watch.warnings[0]


def few_digits(tmp_path: Path) -> Path:
    """40 digits of all classes as loose images in one folder (a GAN needs no labels)."""
    folder = tmp_path / "few"
    folder.mkdir()
    for i, path in enumerate(sorted((DIGITS / "train").glob("*/*.png"))[::20][:40]):
        shutil.copy(path, folder / f"{i}.png")
    return folder


def test_nan_losses_stop_training_with_one_line(dl_inproc, tmp_path, tiny_spec):
    r = dl_inproc("train", few_digits(tmp_path), "--spec", tiny_spec, "--lr", "1e30",
                  "-o", tmp_path / "m.pt")  # fmt: skip
    assert_error(r, "NaN or infinite", "no model was written", code=1)
    assert not (tmp_path / "m.pt").exists()


def test_a_generator_that_ignores_its_noise_is_reported(dl_inproc, tmp_path):
    folder = few_digits(tmp_path)
    spec = tmp_path / "flat.yaml"  # zero weights and a learning rate too small to leave them
    spec.write_text(
        "latent: 4\ngenerator: [{project: [c, h, w], init: zeros}, tanh]\n"
        "discriminator: [flatten]\ntraining: {lr: 1.0e-9}\n"
    )
    r = dl_inproc("train", folder, "--spec", spec, "--epochs", 10, "--json", "--no-plots",
                  "-o", tmp_path / "m.pt")  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["mode_collapse"] and summary["final"]["diversity"] < 0.01
    assert "mode collapse: at epoch 10" in flat(r.stderr)


def test_settings_a_gan_cannot_honour_are_refused(dl_inproc, tiny_spec, tmp_path):
    r = dl_inproc(
        "train", DIGITS, "--spec", tiny_spec, "--precision", "bf16", "-o", tmp_path / "m.pt"
    )
    assert_error(r, "--precision bf16", "fp32")
    r = dl_inproc("train", DIGITS, "--spec", tiny_spec, "--compile", "-o", tmp_path / "m.pt")
    assert_error(r, "--compile", "eagerly")
