"""Autoencoders end to end on the shipped data: tables (breast cancer: benign rows are normal,
malignant the anomaly) and images (digits with one class held out), VAE, predict scores and
--embed, evaluate --anomaly-label, ONNX export of scorer and encoder, resume, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES, assert_error

from dlcli import modelfile

CANCER = SAMPLES / "breast_cancer"
DIGITS = SAMPLES / "digits"


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benign training rows without the label: the 'normal' data."""
    folder = tmp_path_factory.mktemp("benign")
    frame = pd.read_csv(CANCER / "train.csv")
    normal = frame[frame["diagnosis"] == "benign"].drop(columns=["diagnosis"])
    normal.to_csv(folder / "normal.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def table_ae(benign: Path, run_dl_session) -> Path:
    res = run_dl_session("train", "normal.csv", "--arch", "autoencoder", "--json", cwd=benign)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["family"] == "autoencoder" and summary["latent"] == 7  # 30 columns // 4
    return benign / "model.pt"


def test_table_autoencoder_scores_rows_and_separates_malignant(table_ae, dl_inproc):
    data = modelfile.load(table_ae)
    assert data["family"] == "autoencoder" and data["threshold_percentile"] == 99
    res = dl_inproc("predict", str(table_ae), str(CANCER / "test.csv"))
    assert res.returncode == 0, res.stderr
    out = pd.read_csv(io.StringIO(res.stdout))
    assert list(out.columns) == ["anomaly_score", "is_anomaly"]
    assert len(out) == len(pd.read_csv(CANCER / "test.csv"))
    assert (out["is_anomaly"] == (out["anomaly_score"] > data["threshold"])).all()
    res = dl_inproc(
        "evaluate", str(table_ae), str(CANCER / "test.csv"), "--anomaly-label", "malignant",
        "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)
    assert metrics["roc_auc"] >= 0.8, metrics  # 0.88 measured at defaults
    assert metrics["anomalies"] == 37 and metrics["n"] == 113


def test_embed_gives_latent_vectors(table_ae, dl_inproc):
    res = dl_inproc("predict", str(table_ae), str(CANCER / "rows.csv"), "--embed")
    assert res.returncode == 0, res.stderr
    out = pd.read_csv(io.StringIO(res.stdout))
    assert list(out.columns) == [f"z{i}" for i in range(7)]
    assert np.isfinite(out.to_numpy()).all() and out.to_numpy().std() > 0


def test_stdin_pipeline_scores_like_a_file(table_ae, run_dl):
    text = (CANCER / "rows.csv").read_text()
    piped = run_dl("predict", str(table_ae), "-", input=text)
    direct = run_dl("predict", str(table_ae), str(CANCER / "rows.csv"))
    assert piped.returncode == 0 and piped.stdout == direct.stdout and piped.stdout


def test_export_scorer_and_encoder_match_pytorch(table_ae, dl_inproc, tmp_path):
    import onnxruntime as ort
    import torch

    from dlcli.model.autoencoder import load_autoencoder as load

    out = tmp_path / "ae.onnx"
    res = dl_inproc("export", str(table_ae), "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["encoder_path"] == str(tmp_path / "ae.encoder.onnx")
    loaded = load(modelfile.load(table_ae), str(table_ae))
    frame = pd.read_csv(CANCER / "test.csv").drop(columns=["diagnosis"])
    raw = torch.from_numpy(loaded.preprocessor.raw_matrix(frame, "test.csv"))
    with torch.no_grad():
        score, recon = loaded.scorer(raw)
        z = loaded.embedder(raw)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got_score, got_recon = sess.run(None, {"features": raw.numpy()})
    assert [o.name for o in sess.get_outputs()] == ["anomaly_score", "reconstruction"]
    assert np.allclose(got_score, score.numpy(), atol=1e-4, rtol=1e-4)
    assert np.allclose(got_recon, recon.numpy(), atol=1e-3, rtol=1e-4)
    assert recon.shape == raw.shape  # the reconstruction is in the input's own units
    enc = ort.InferenceSession(
        str(tmp_path / "ae.encoder.onnx"), providers=["CPUExecutionProvider"]
    )
    assert np.allclose(enc.run(None, {"features": raw.numpy()})[0], z.numpy(), atol=1e-4)
    meta = ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map
    assert float(meta["dl.threshold"]) == pytest.approx(loaded.threshold)


def test_vae_trains_and_scores(benign, dl_inproc):
    res = dl_inproc(
        "train", "normal.csv", "--arch", "vae", "-o", "vae.pt", "--epochs", "40", "--json",
        cwd=benign,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["variational"] is True
    res = dl_inproc(
        "evaluate", str(benign / "vae.pt"), str(CANCER / "test.csv"), "--anomaly-label",
        "malignant", "--json",
    )  # fmt: skip
    assert json.loads(res.stdout)["roc_auc"] >= 0.75


@pytest.fixture(scope="module")
def digits_without_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training digits 1-9 (0 is the anomaly), as links to the shipped folders. Every held-out
    class is measured by benchmarks/quality_anomaly.py."""
    folder = tmp_path_factory.mktemp("digits") / "normal"
    folder.mkdir()
    for c in range(1, 10):
        (folder / str(c)).symlink_to(DIGITS / "train" / str(c), target_is_directory=True)
    return folder


def test_image_autoencoder_flags_a_held_out_digit(digits_without_0, run_dl, dl_inproc):
    out = digits_without_0.parent / "ae.pt"
    res = run_dl(
        "train", str(digits_without_0), "--arch", "autoencoder", "-o", out, "--epochs", "15"
    )
    assert res.returncode == 0, res.stderr
    assert "conv_autoencoder" in res.stderr  # the image variant of the preset
    grids = sorted((digits_without_0.parent / "ae.run" / "reconstructions").glob("epoch_*.png"))
    assert len(grids) == 15
    res = dl_inproc("evaluate", str(out), str(DIGITS / "test"), "--anomaly-label", "0", "--json")
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)
    assert metrics["roc_auc"] >= 0.9, metrics
    res = dl_inproc("predict", str(out), str(DIGITS / "test" / "0"))
    frame = pd.read_csv(io.StringIO(res.stdout))
    assert list(frame.columns) == ["path", "anomaly_score", "is_anomaly"]
    # images score with the latent and input distances by default; the ONNX graph matches
    assert metrics["score"] == modelfile.load(out)["score"] == "knn+input-knn"
    res = dl_inproc("export", str(out), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["max_abs_diff"] < 1e-4


def test_bad_input_is_one_clear_line(table_ae, benign, dl_inproc, penguins_model):
    assert_error(
        dl_inproc("predict", str(penguins_model), str(CANCER / "rows.csv"), "--embed"),
        "--embed", "autoencoder",
    )  # fmt: skip
    assert_error(
        dl_inproc("evaluate", str(table_ae), str(CANCER / "train.csv"), "--anomaly-label", "x"),
        "needs rows with and without that label",
    )
    assert_error(
        dl_inproc(
            "evaluate", str(table_ae), str(CANCER / "test.csv"), "--anomaly-label", "1",
            "--target", "nope",
        ),
        "no label column 'nope'",
    )  # fmt: skip
    assert_error(
        dl_inproc(
            "evaluate", str(penguins_model), str(CANCER / "test.csv"), "--anomaly-label", "1"
        ),
        "--anomaly-label applies to autoencoder",
    )
    assert_error(
        dl_inproc("predict", str(table_ae), str(CANCER / "rows.csv"), "--top-k", "2"),
        "--top-k applies to classifiers",
    )
    assert_error(
        dl_inproc("evaluate", str(table_ae), str(CANCER / "test.csv"), "--errors", "e"),
        "--errors applies to image classifiers",
    )
    spec = benign / "half.yaml"
    spec.write_text("encoder: [{dense: 8}]\n")
    assert_error(
        dl_inproc("train", "normal.csv", "--spec", str(spec), cwd=benign),
        "half.yaml", "'decoder' is required",
    )  # fmt: skip
    before = table_ae.read_bytes()
    assert_error(
        dl_inproc(
            "train", "normal.csv", "--arch", "autoencoder", "--class-weights", "balanced",
            cwd=benign,
        ),
        "--class-weights",
    )  # fmt: skip
    assert table_ae.read_bytes() == before


def test_build_shows_encoder_and_decoder(dl_inproc):
    res = dl_inproc("build", "--arch", "autoencoder", "--input-shape", "30", "--json")
    assert res.returncode == 0, res.stderr
    nets = json.loads(res.stdout)
    assert set(nets) == {"encoder", "decoder"}
    res = dl_inproc("build", "--arch", "conv_vae", "--input-shape", "3,32,32")
    assert res.returncode == 0, res.stderr
    assert "(3, 32, 32)" in res.stderr
    listed = dl_inproc("build", "--list").stdout.splitlines()
    names = {line.split()[0] for line in listed}
    assert {"autoencoder", "vae", "conv_autoencoder", "conv_vae", "dcgan"} <= names
    starts = {len(line) - len(line.split(maxsplit=1)[1]) for line in listed}
    assert len(starts) == 1  # descriptions line up in one column


def test_interrupted_autoencoder_resumes_from_its_checkpoint(benign, tmp_path):
    from test_engine import StopAt

    from dlcli.data.sources import DataOptions
    from dlcli.engine.train_job import TrainingInterrupted, TrainRequest
    from dlcli.families import run_training

    out = tmp_path / "ae.pt"

    def request(**kw) -> TrainRequest:
        overrides = {"epochs": 6, "patience": 0}
        return TrainRequest(
            str(benign / "normal.csv"), str(out), arch="autoencoder", data_opts=DataOptions(),
            overrides=overrides, plots=False, **kw,
        )  # fmt: skip

    with pytest.raises(TrainingInterrupted, match="interrupted after 2 complete epochs"):
        run_training(request(callbacks=[StopAt(2)]))
    assert not out.exists() and modelfile.checkpoint_path(out).exists()
    summary = run_training(request(resume=True))
    assert summary["epochs_run"] == 6 and summary["family"] == "autoencoder"
    assert not modelfile.checkpoint_path(out).exists()
    assert len(modelfile.load(out)["history"]) == 6


def test_reconstruction_error_matches_torch_losses():
    """Numbers: squared error; indicators: BCE; each categorical column: cross-entropy; averaged
    over the fields (reference: plain torch losses)."""
    import torch
    import torch.nn.functional as F

    from dlcli.model.autoencoder import Layout, ReconstructionError

    gen = torch.Generator().manual_seed(0)
    out, x = torch.randn(6, 12, generator=gen), torch.zeros(6, 12)
    x[:, :3] = torch.randn(6, 3, generator=gen)
    x[:, 3:5] = (torch.rand(6, 2, generator=gen) > 0.5).float()
    a, b = torch.randint(0, 4, (6,), generator=gen), torch.randint(0, 3, (6,), generator=gen)
    x[torch.arange(6), 5 + a] = 1
    x[torch.arange(6), 9 + b] = 1
    ref = (
        (out[:, :3] - x[:, :3]).pow(2).sum(1)
        + F.binary_cross_entropy_with_logits(out[:, 3:5], x[:, 3:5], reduction="none").sum(1)
        + F.cross_entropy(out[:, 5:9], a, reduction="none")
        + F.cross_entropy(out[:, 9:12], b, reduction="none")
    ) / 7
    got = ReconstructionError(Layout(3, 2, [4, 3]))(out, x)
    assert torch.allclose(got, ref, atol=1e-6)


def test_categorical_table_exports_with_parity(dl_inproc, tmp_path):
    """Penguins (categorical columns, missing values): the scorer's ONNX graph matches PyTorch."""
    res = dl_inproc(
        "train", str(SAMPLES / "penguins" / "train.csv"), "--arch", "autoencoder", "--target",
        "species", "--epochs", "5", "-o", str(tmp_path / "p.pt"), "--no-plots",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = dl_inproc("export", str(tmp_path / "p.pt"), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["max_abs_diff"] < 1e-3


def test_reconstruction_error_exports_exactly_for_extreme_logits():
    """The exporter's own binary_cross_entropy_with_logits is off by ~0.1 for logits near -15
    (torch 2.13); ours is written out and must match onnxruntime at any logit."""
    import onnxruntime as ort
    import torch

    from dlcli.export.onnx import to_onnx
    from dlcli.model.autoencoder import Layout, ReconstructionError

    error = ReconstructionError(Layout(2, 3, [3]))

    class Both(torch.nn.Module):  # one input: [decoder output | target]
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return error(z[:, :8], z[:, 8:])

    gen = torch.Generator().manual_seed(1)
    out = torch.randn(32, 8, generator=gen) * 20  # logits far into the tails
    x = torch.zeros(32, 8)
    x[:, :2] = torch.randn(32, 2, generator=gen)
    x[:, 2:5] = (torch.rand(32, 3, generator=gen) > 0.5).float()
    x[torch.arange(32), 5 + torch.randint(0, 3, (32,), generator=gen)] = 1
    z = torch.cat([out, x], 1)
    proto, _ = to_onnx(Both(), z, "z", "err")
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"z": z.numpy()})[0]
    assert np.allclose(got, Both()(z).numpy(), rtol=1e-5, atol=1e-4)


def test_image_vae_trains_and_embeds(digits_without_0, dl_inproc):
    out = digits_without_0.parent / "vae.pt"
    res = dl_inproc(
        "train", str(digits_without_0), "--arch", "vae", "-o", str(out), "--epochs", "2",
        "--no-plots", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["variational"] is True and summary["latent"] == 16  # 16x16 digits: 256 // 16
    res = dl_inproc("predict", str(out), str(DIGITS / "test" / "3"), "--embed")
    frame = pd.read_csv(io.StringIO(res.stdout))
    assert list(frame.columns) == ["path", *[f"z{i}" for i in range(16)]]


def test_evaluate_with_a_numeric_label_column_as_in_the_issue(table_ae, tmp_path, dl_inproc):
    """`dl evaluate model.pt labelled.csv --anomaly-label 1`: the last column holds 0/1 labels."""
    frame = pd.read_csv(CANCER / "test.csv")
    frame["label"] = (frame.pop("diagnosis") == "malignant").astype(float)  # 1.0 / 0.0
    frame.to_csv(tmp_path / "labelled.csv", index=False)
    res = dl_inproc("evaluate", str(table_ae), "labelled.csv", "--anomaly-label", "1", "--json",
                    cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["anomalies"] == 37


def test_stream_flag_on_an_autoencoder_says_it_loads_in_memory(benign, dl_inproc):
    """A large or --stream table goes to the in-memory source for unsupervised models, and says so
    (the streamed source needs a target)."""
    res = dl_inproc(
        "train", "normal.csv", "--arch", "autoencoder", "--stream", "--epochs", "2", "-o",
        "s.pt", "--no-plots", cwd=benign,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (
        "--stream applies to supervised tables; for an unsupervised model the data is loaded"
        in " ".join(res.stderr.split())
    )


def test_threshold_percentile_flag_sets_the_stored_threshold(benign, dl_inproc):
    res = dl_inproc(
        "train", "normal.csv", "--arch", "autoencoder", "--epochs", "5", "-o", "t90.pt",
        "--threshold-percentile", "90", "--no-plots", "--json", cwd=benign,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)["metrics"]
    data = modelfile.load(benign / "t90.pt")
    assert metrics["threshold_percentile"] == data["threshold_percentile"] == 90
    res = dl_inproc("predict", str(benign / "t90.pt"), "normal.csv", cwd=benign)
    share = pd.read_csv(io.StringIO(res.stdout))["is_anomaly"].mean()
    assert 0.02 < share < 0.25  # about a tenth of normal rows score above the 90th percentile


# -- anomaly scores beyond the reconstruction error (issue 12) ------------------------------------
SCORE_NAMES = (
    "reconstruction", "knn", "density", "knn+reconstruction", "input-knn",
    "input-knn+reconstruction", "knn+input-knn",
)  # fmt: skip


def test_model_file_keeps_a_bounded_bank_and_a_threshold_per_score(table_ae, benign):
    import torch

    data = modelfile.load(table_ae)  # weights_only: plain data and tensors only
    state = data["anomaly_scores"]
    n_rows = len(pd.read_csv(benign / "normal.csv"))
    bank = state["bank"]
    assert isinstance(bank, torch.Tensor) and bank.dtype == torch.float32
    assert bank.shape[1] == data["latent"] == 7
    assert 0.7 * n_rows < len(bank) < n_rows  # the training rows, not the validation ones
    assert state["input_bank"].shape == (len(bank), 30)  # the 30 standardised columns
    assert set(state["thresholds"]) == set(SCORE_NAMES)
    # tables default to input-knn (benchmarks/quality_anomaly.py)
    assert data["score"] == "input-knn" and data["threshold"] == state["thresholds"]["input-knn"]
    assert state["k"] == 5


def test_every_score_predicts_and_evaluates_with_its_own_threshold(table_ae, dl_inproc):
    data = modelfile.load(table_ae)
    seen = {}
    for score in SCORE_NAMES:
        res = dl_inproc("predict", str(table_ae), str(CANCER / "test.csv"), "--score", score)
        assert res.returncode == 0, res.stderr
        out = pd.read_csv(io.StringIO(res.stdout))
        threshold = data["anomaly_scores"]["thresholds"][score]
        assert (out["is_anomaly"] == (out["anomaly_score"] > threshold)).all()
        seen[score] = out["anomaly_score"].to_numpy()
        res = dl_inproc(
            "evaluate", str(table_ae), str(CANCER / "test.csv"), "--anomaly-label", "malignant",
            "--score", score, "--json",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        metrics = json.loads(res.stdout)
        assert metrics["score"] == score and metrics["threshold"] == pytest.approx(threshold)
        assert metrics["roc_auc"] >= 0.8, (score, metrics)
    assert not np.allclose(seen["knn"], seen["reconstruction"])
    assert not np.allclose(seen["knn"], seen["input-knn"])
    default = dl_inproc("predict", str(table_ae), str(CANCER / "test.csv"))
    got = pd.read_csv(io.StringIO(default.stdout))["anomaly_score"]
    assert np.allclose(got, seen["input-knn"])


def test_score_flag_errors_are_one_line(table_ae, penguins_model, dl_inproc, tmp_path):
    assert_error(
        dl_inproc("predict", str(table_ae), str(CANCER / "rows.csv"), "--score", "nearest"),
        "--score must be one of reconstruction, knn, density, knn+reconstruction, input-knn, "
        "input-knn+reconstruction, knn+input-knn, got 'nearest'",
    )
    assert_error(
        dl_inproc("predict", str(penguins_model), str(CANCER / "rows.csv"), "--score", "knn"),
        "--score chooses an autoencoder's anomaly score; this is a supervised model",
    )
    assert_error(
        dl_inproc(
            "evaluate", str(penguins_model), str(SAMPLES / "penguins" / "test.csv"), "--score",
            "knn",
        ),
        "--score chooses an autoencoder's anomaly score",
    )  # fmt: skip
    # a model file written before the stored scores: reconstruction still works, knn says why not
    import torch

    old = modelfile.load(table_ae)
    for key in ("anomaly_scores", "score"):
        old.pop(key)
    old["threshold"] = 0.5
    old_path = tmp_path / "old.pt"
    torch.save(old, old_path)
    res = dl_inproc("predict", str(old_path), str(CANCER / "rows.csv"))
    assert res.returncode == 0, res.stderr
    out = pd.read_csv(io.StringIO(res.stdout))
    assert (out["is_anomaly"] == (out["anomaly_score"] > 0.5)).all()
    assert_error(
        dl_inproc("evaluate", str(old_path), str(CANCER / "test.csv"), "--score", "knn"),
        "old.pt: this model file keeps no training embeddings",
    )


def test_default_knn_scorer_exports_exactly(table_ae, dl_inproc, tmp_path):
    """The kNN bank is a constant of the ONNX graph; distances and TopK run inside it (tables:
    input-knn; images: knn+input-knn, checked in test_image_autoencoder_flags_a_held_out_digit)."""
    import onnx
    import onnxruntime as ort
    import torch

    from dlcli.model.autoencoder import load_autoencoder as load

    out = tmp_path / "knn.onnx"
    res = dl_inproc("export", str(table_ae), "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    graph = onnx.load(str(out))
    assert "TopK" in {n.op_type for n in graph.graph.node}
    loaded = load(modelfile.load(table_ae), str(table_ae))
    assert loaded.score == "input-knn"
    frame = pd.read_csv(CANCER / "test.csv").drop(columns=["diagnosis"])
    raw = torch.from_numpy(loaded.preprocessor.raw_matrix(frame, "test.csv"))
    with torch.no_grad():
        score = loaded.scorer(raw)[0].numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"features": raw.numpy()})[0]
    assert np.allclose(got, score, rtol=1e-5, atol=1e-5), np.abs(got - score).max()
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["dl.score"] == "input-knn" and float(meta["dl.threshold"]) == pytest.approx(
        loaded.threshold
    )


def test_spec_training_section_chooses_the_stored_score(benign, dl_inproc):
    spec = benign / "recon.yaml"
    spec.write_text(
        "encoder: [{dense: 16}, relu]\ndecoder: [{dense: 16}, relu]\n"
        "training: {anomaly_score: reconstruction, epochs: 3}\n"
    )
    res = dl_inproc(
        "train", "normal.csv", "--spec", str(spec), "-o", "r.pt", "--no-plots", "--json",
        cwd=benign,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = modelfile.load(benign / "r.pt")
    assert data["score"] == json.loads(res.stdout)["score"] == "reconstruction"
    assert data["threshold"] == data["anomaly_scores"]["thresholds"]["reconstruction"]
    spec.write_text(spec.read_text().replace("reconstruction", "nearest"))
    assert_error(
        dl_inproc("train", "normal.csv", "--spec", str(spec), "-o", "bad.pt", cwd=benign),
        "recon.yaml: training.anomaly_score must be one of reconstruction, knn,", "'nearest'",
    )  # fmt: skip
    assert not (benign / "bad.pt").exists()
