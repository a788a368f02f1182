"""Autoencoder modules: encoder + decoder (a VAE when `variational`), the per-row reconstruction
error that is both the training loss and the anomaly score, and the serving modules that predict
and export run (raw inputs -> score + reconstruction; raw inputs -> latent vector); the networks
from a spec (`build_autoencoder`) and a model file brought back to life (`load_autoencoder`).

Network space: the encoded features the data's preprocessing produces. For tables that is
[standardised numbers | missing indicators | one-hot groups per categorical column]; for images,
normalised pixels (C, H, W). Each data kind's preprocessor declares that layout
(`reconstruction_layout`) and the way back to the user's units (`reconstruction_module`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dlcli.model.anomaly_scores import Term, score_module
from dlcli.model.builder import BuiltNetwork, build_stack


@dataclass
class Layout:
    """How the network-space features split by type: `n_cont` continuous (squared error),
    `n_bin` binary (cross-entropy with logits), then one categorical group per entry of `groups`
    (softmax cross-entropy over that many slots)."""

    n_cont: int
    n_bin: int = 0
    groups: list[int] = field(default_factory=list)

    @property
    def fields(self) -> int:
        """Columns the error is averaged over (a categorical group counts once)."""
        return max(1, self.n_cont + self.n_bin + len(self.groups))

    def to_state(self) -> dict:
        return {"n_cont": self.n_cont, "n_bin": self.n_bin, "groups": list(self.groups)}


def layout_for(preprocessor: Any) -> Layout:
    """The feature layout of a fitted preprocessor's output (its data kind declares it)."""
    return Layout(**preprocessor.reconstruction_layout())


class ReconstructionError(nn.Module):
    """(decoder output, network input) -> per-row error (N,), averaged over the fields: squared
    error for numbers and pixels, cross-entropy for missing indicators and categories."""

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.n_cont, self.n_bin, self.fields = layout.n_cont, layout.n_bin, layout.fields
        # categorical groups as one padded (G, S) gather: slot j of group g is feature
        # index[g, j]; padding slots (valid = False) never win the softmax
        width = max(layout.groups, default=0)
        index, valid, start = [], [], layout.n_cont + layout.n_bin
        for size in layout.groups:
            index.append([start + j if j < size else start for j in range(width)])
            valid.append([j < size for j in range(width)])
            start += size
        shape = (len(index), width)  # (0, 0) without categorical columns
        self.register_buffer("cat_index", torch.tensor(index, dtype=torch.long).reshape(shape))
        self.register_buffer("cat_valid", torch.tensor(valid, dtype=torch.bool).reshape(shape))

    def forward(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out, x = out.flatten(1), x.flatten(1)  # (N, F)
        c, b = self.n_cont, self.n_cont + self.n_bin
        err = (out[:, :c] - x[:, :c]).pow(2).sum(1)
        if self.n_bin:  # BCE with logits written out: the ONNX exporter's version of
            # F.binary_cross_entropy_with_logits is off by 0.1 for logits near -15 (torch 2.13)
            z, t = out[:, c:b], x[:, c:b]
            err = err + (z.clamp(min=0) - z * t + torch.log1p(torch.exp(-z.abs()))).sum(1)
        if self.cat_index.numel():  # softmax cross-entropy per categorical column, vectorised
            logits = out[:, self.cat_index]  # (N, G, S)
            onehot = x[:, self.cat_index] * self.cat_valid  # (N, G, S)
            logits = logits.masked_fill(~self.cat_valid, -1e9)
            picked = (logits * onehot).sum(-1)  # the logit of the true category
            err = err + (torch.logsumexp(logits, dim=-1) - picked).sum(1)
        return err / self.fields


class AutoEncoder(nn.Module):
    """encoder: x -> latent (mean and log-variance when variational); decoder: latent -> x-hat."""

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, latent: int, variational: bool
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent, self.variational = int(latent), bool(variational)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.encoder(x)  # (N, latent) or (N, 2 * latent)
        if not self.variational:
            return h, None
        return h[:, : self.latent], h[:, self.latent :].clamp(-10, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        mu, logvar = self.encode(x)
        z = mu
        if logvar is not None and self.training:  # the reparameterisation trick
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


class TrainingObjective(nn.Module):
    """What the trainer optimises: network input (N, ...) -> per-row loss (N,): reconstruction
    error, plus the KL divergence to N(0, I) per field for a VAE."""

    def __init__(self, ae: AutoEncoder, error: ReconstructionError, beta: float = 1.0) -> None:
        super().__init__()
        self.ae, self.error, self.beta = ae, error, float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, mu, logvar = self.ae(x)
        loss = self.error(out, x)
        if logvar is not None:
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)  # (N,)
            loss = loss + self.beta * kl / self.error.fields
        return loss


class ObjectiveTask:
    """The trainer's task for a network that returns its own per-row loss."""

    name = "reconstruction"
    metric = "loss"
    loss = "reconstruction"

    def make_loss(self, class_weights: Any = None, label_smoothing: float = 0.0) -> Any:
        return lambda per_row, _y: per_row.mean()

    def batch_score(self, per_row: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return per_row.sum()

    def balanced_weights(self, y: torch.Tensor) -> torch.Tensor:
        from dlcli.errors import UsageError

        raise UsageError("--class-weights applies to classification, not to autoencoders")


def reconstruction_module(preprocessor: Any, layout: Layout) -> nn.Module:
    """Decoder output -> the user's units (its data kind declares how)."""
    return preprocessor.reconstruction_module()


class ScoringModel(nn.Module):
    """raw inputs -> (anomaly score (N,), reconstruction in the input's units). `score` maps
    (reconstruction error (N,), latent (N, L), network input (N, F)) to the score
    (model/anomaly_scores.py); without it the score is the reconstruction error."""

    def __init__(
        self,
        preprocess: nn.Module,
        ae: AutoEncoder,
        error: ReconstructionError,
        recon: nn.Module,
        score: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.preprocess, self.ae, self.error, self.recon = preprocess, ae, error, recon
        self.score = score if score is not None else Term("error")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.preprocess(x)
        out, z, _ = self.ae(h)  # z: the latent vector (the mean, for a VAE)
        return self.score(self.error(out, h), z, h.flatten(1)), self.recon(out)


class ScoreTerms(nn.Module):
    """raw inputs -> what the scores are fitted on: the latent vectors (N, L), the network inputs
    (N, F) with `inputs`, or with `terms` (anomaly_scores.Terms) every score term (N, 4)."""

    def __init__(
        self,
        preprocess: nn.Module,
        ae: AutoEncoder,
        error: ReconstructionError,
        terms: nn.Module | None = None,
        inputs: bool = False,
    ) -> None:
        super().__init__()
        self.preprocess, self.ae, self.error, self.terms = preprocess, ae, error, terms
        self.inputs = inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.preprocess(x)
        if self.inputs:
            return h.flatten(1).float()
        out, z, _ = self.ae(h)
        if self.terms is None:
            return z.float()
        return self.terms(self.error(out, h), z, h.flatten(1).float())


class EmbeddingModel(nn.Module):
    """raw inputs -> latent vectors (N, latent) (the mean, for a VAE)."""

    def __init__(self, preprocess: nn.Module, ae: AutoEncoder) -> None:
        super().__init__()
        self.preprocess, self.ae = preprocess, ae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ae.encode(self.preprocess(x))[0]


class ScoreOnly(nn.Module):
    """raw inputs -> anomaly score (N,): the scorer without the reconstruction."""

    def __init__(self, scorer: ScoringModel) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scorer(x)[0]


# -- networks from a spec, modules from a model file ----------------------------------------------
def latent_size(spec: Any, input_shape: tuple[int, ...]) -> int:
    """`latent:` from the spec, else about a quarter of a table's encoded width (2 to 16), or
    C*H*W/16 for images (8 to 128)."""
    if spec.latent:
        return int(spec.latent)
    width = math.prod(int(d) for d in input_shape)
    if len(input_shape) == 3:
        return int(min(128, max(8, width // 16)))
    return int(min(16, max(2, width // 4)))


def build_autoencoder(
    spec: Any,
    input_shape: tuple[int, ...],
    source: str | None = None,
    data_info: dict | None = None,
    latent: int | None = None,
) -> dict[str, BuiltNetwork]:
    """{"encoder": input -> latent (x2 for a VAE), "decoder": latent -> input shape}."""
    shape = tuple(int(d) for d in input_shape)
    latent = latent or latent_size(spec, shape)
    info_ = (
        {**(data_info or {}), "image_shape": shape} if len(shape) == 3 else dict(data_info or {})
    )
    enc = build_stack(
        spec.encoder, "encoder", shape, latent * (2 if spec.variational else 1), spec.init,
        "auto", source, data_info=info_,
    )  # fmt: skip
    if len(shape) == 3:  # images: the decoder ends in `filters: outputs` channels at (C, H, W)
        dec = build_stack(
            spec.decoder, "decoder", (latent,), shape[0], spec.init, "none", source,
            data_info=info_, expect_shape=shape,
        )  # fmt: skip
    else:
        dec = build_stack(spec.decoder, "decoder", (latent,), shape[0], spec.init, "auto", source)
    return {"encoder": enc, "decoder": dec}


def assemble(
    spec: Any, preprocessor: Any, latent: int, source: str | None
) -> tuple[AutoEncoder, ReconstructionError, Layout]:
    """The autoencoder of `spec` for data preprocessed by `preprocessor`, its error and layout."""
    from dlcli.model.assemble import network_args

    data_info = network_args(preprocessor)["data_info"]
    nets = build_autoencoder(spec, preprocessor.input_shape, source, data_info, latent)
    ae = AutoEncoder(nets["encoder"].module, nets["decoder"].module, latent, spec.variational)
    layout = layout_for(preprocessor)
    return ae, ReconstructionError(layout), layout


@dataclass
class LoadedAutoencoder:
    """A model file of the autoencoder family, ready to score (with `score`) and embed."""

    data: dict
    preprocessor: Any  # the fitted data preprocessing
    ae: AutoEncoder
    scorer: ScoringModel
    embedder: EmbeddingModel
    score: str = "reconstruction"

    @property
    def threshold(self) -> float:
        """The anomaly threshold of `score` (files from before per-score thresholds: `threshold`)."""
        state = self.data.get("anomaly_scores")
        if state is None:
            return float(self.data["threshold"])
        return float(state["thresholds"][self.score])


def stored_score(data: dict) -> str:
    """The score a model file uses by default (files from before the choice: reconstruction)."""
    return str(data.get("score") or "reconstruction")


def load_autoencoder(
    data: dict, source: str, device: str = "cpu", score: str | None = None
) -> LoadedAutoencoder:
    """Rebuild the modules of a loaded model file and load the weights strictly; the scorer
    computes `score` (default: the one stored in the file)."""
    from dlcli.data.sources import preprocessor_from_state
    from dlcli.model.assemble import model_file_errors
    from dlcli.spec.schema import parse_spec

    name = score or stored_score(data)
    with model_file_errors(source):
        preprocessor = preprocessor_from_state(data["preprocessor"])
        spec = parse_spec(data["spec"], f"in {source}")
        ae, error, layout = assemble(spec, preprocessor, int(data["latent"]), f"in {source}")
        ae.load_state_dict(data["weights"]["network"])
        term = score_module(name, data.get("anomaly_scores"))
    pre = preprocessor.preprocess_module()
    recon = reconstruction_module(preprocessor, layout)
    scorer = ScoringModel(pre, ae, error, recon, term).eval()
    embedder = EmbeddingModel(pre, ae).eval()
    if device != "cpu":
        from dlcli.accel import pick_device

        scorer.to(pick_device(device))
    return LoadedAutoencoder(data, preprocessor, ae, scorer, embedder, name)
