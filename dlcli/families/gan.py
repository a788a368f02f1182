"""The GAN family: a generator and a discriminator from a spec's `generator:` and
`discriminator:` sections, trained on an image folder by the shared trainer with the GAN's own
epoch (gan_fit.py), with a sample grid per epoch and loss curves in the run folder;
`predict --samples` and the generator's graph for `dl export` (noise -> image in [0, 1])."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import torch

from dlcli import __version__
from dlcli.console import info
from dlcli.engine.fit_data import now
from dlcli.engine.train_job import Outcome, TrainJob, TrainSetup
from dlcli.engine.trainer import FitResult
from dlcli.errors import InputError, UsageError
from dlcli.export import ExportPlan, Graph
from dlcli.families.base import Family, PredictOptions
from dlcli.families.gan_fit import (
    GanState,
    GanStep,
    SampleGrid,
    Sampler,
    Watch,
    format_row,
    sample_images,
    spread,
)
from dlcli.model.builder import BuiltNetwork, build_stack

DEFAULT_LATENT = 64
MIN_IMAGES = 32  # fewer than one batch of real images cannot teach a discriminator anything
GRID_SAMPLES = 64  # fixed-noise samples in each epoch's grid
MAX_GRID = 1024  # samples one -o grid may hold (a 32 x 32 grid); more go to --output-dir
GEN_BATCH = 256  # generation batch of `predict --samples` (fixed, so a seed gives the same images)
# the TrainConfig fields GAN training uses (the --json summary shows these)
FINAL_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "diversity")  # last epoch, in the summary
USED_SETTINGS = (
    "epochs", "batch_size", "lr", "optimizer", "weight_decay", "momentum", "label_smoothing",
    "seed", "device",
)  # fmt: skip
# settings a GAN needs other defaults for than a classifier (DCGAN paper), unless given
GAN_DEFAULTS = {
    "optimizer": "adam",
    "lr": 2e-4,
    "weight_decay": 0.0,
    "label_smoothing": 0.1,
    "epochs": 50,
    "batch_size": 64,
}


# -- networks -------------------------------------------------------------------------------------
def gan_networks(
    spec: Any, image_shape: tuple[int, int, int], source: str | None
) -> dict[str, BuiltNetwork]:
    """generator: noise (latent,) -> image (C, H, W); discriminator: image -> one logit."""
    latent = int(spec.latent or DEFAULT_LATENT)
    gen = build_stack(
        spec.generator, "generator", (latent,), image_shape[0], spec.init, "none", source,
        data_info={"image_shape": image_shape}, expect_shape=image_shape,
    )  # fmt: skip
    disc = build_stack(
        spec.discriminator, "discriminator", image_shape, 1, spec.init, spec.head, source,
        data_info={"image_shape": image_shape}, expect_shape=(1,),
    )  # fmt: skip
    return {"generator": gen, "discriminator": disc}


def load_sampler(data: dict, model_path: str) -> tuple[Sampler, int]:
    """The trained generator of a GAN model file as a Sampler (eval mode) and its noise size."""
    from dlcli.spec.schema import parse_spec

    spec = parse_spec(data["spec"], f"in {model_path}")
    shape = tuple(int(d) for d in data["image_shape"])
    gen = gan_networks(spec, shape, f"in {model_path}")["generator"].module  # type: ignore[arg-type]
    gen.load_state_dict(data["weights"]["generator"])
    return Sampler(gen).eval(), int(data["latent"])


class Gan(Family):
    name = "gan"
    unsupervised = True
    evaluates = False
    predict_flags = frozenset({"--samples"})

    def build_networks(
        self, spec: Any, input_shape: tuple[int, ...], outputs: int | None, source: str | None
    ) -> dict[str, BuiltNetwork]:
        """`dl build --arch dcgan --input-shape C,H,W`: {"generator", "discriminator"}."""
        if len(input_shape) != 3:
            raise UsageError(
                f"a GAN generates images: --input-shape must be C,H,W (e.g. 1,32,32), got {','.join(map(str, input_shape))}"
            )
        return gan_networks(spec, tuple(int(d) for d in input_shape), source)  # type: ignore[arg-type]

    # -- training -------------------------------------------------------------------------------
    def check(self, job: TrainJob) -> None:
        """An image folder of at least MIN_IMAGES images; the GAN defaults where neither a flag
        nor the spec set a value (a resumed run keeps its settings); fp32, eager."""
        _check_data(job)
        cfg = job.cfg
        if job.resume is None:
            for key, value in GAN_DEFAULTS.items():
                if job.req.overrides.get(key) is None and getattr(job.spec.training, key) is None:
                    setattr(cfg, key, value)
        if cfg.precision != "fp32":
            raise UsageError(f"--precision {cfg.precision}: GAN training runs in fp32")
        if cfg.compile:
            raise UsageError("--compile: GAN training runs eagerly, without torch.compile")

    def prepare(self, job: TrainJob) -> TrainSetup:
        from dlcli.accel import pick_device, pick_threads

        req, spec, cfg = job.req, job.spec, job.cfg
        preprocessor, images, load_s = _images(job)
        shape = tuple(int(d) for d in preprocessor.input_shape)
        torch.manual_seed(cfg.seed)  # the weights; noise and batches come from the global generator
        nets = gan_networks(spec, shape, job.spec_source)  # type: ignore[arg-type]
        own = torch.Generator().manual_seed(
            cfg.seed
        )  # draws that must not shift it (resume is exact)
        latent = int(spec.latent or DEFAULT_LATENT)
        beta1 = spec.training.beta1 if spec.training.beta1 is not None else 0.5
        device = pick_device(cfg.device)
        gen, disc = nets["generator"].module.to(device), nets["discriminator"].module.to(device)
        reals = images[torch.randperm(len(images), generator=own)[:GRID_SAMPLES]].float() / 255
        fixed_noise = torch.randn(GRID_SAMPLES, latent, generator=own)  # (S, latent)
        opt_g, opt_d = (_optimizer(cfg, beta1, m.parameters()) for m in (gen, disc))
        state = GanState(gen, disc, opt_g, opt_d, fixed_noise, Watch(spread(reals)))
        n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (gen, disc))
        pick_threads(device, (n_g + n_d) * cfg.batch_size)  # small steps: one CPU thread
        info(
            f"{req.data}: {len(images):,} images {shape[1]}x{shape[2]}x{shape[0]}; generator "
            f"{n_g:,} parameters (noise {latent}), discriminator {n_d:,}"
        )
        payload = {
            "family": self.name,
            "spec": job.spec_doc,
            "preprocessor": preprocessor.to_state(),
            "image_shape": list(shape),
            "latent": latent,
        }
        real_label = 1.0 - cfg.label_smoothing
        step = GanStep(state, images, int(cfg.batch_size), real_label, latent, device)
        grids = SampleGrid(step, job.run_folder / "samples")
        context = (state, len(images), latent, beta1, {"generator": n_g, "discriminator": n_d})
        return TrainSetup(step, payload, [grids], format_row, load_s, context)

    def finish(self, job: TrainJob, setup: TrainSetup, result: FitResult) -> Outcome:
        state, n_images, latent, beta1, params = setup.context
        weights = {
            name: {k: v.cpu() for k, v in net.state_dict().items()}
            for name, net in (
                ("generator", state.generator),
                ("discriminator", state.discriminator),
            )
        }
        payload = {
            "weights": weights,
            "history": result.history,
            "warnings": state.watch.warnings,
            "data": {"source": str(job.req.data), "rows": n_images},
            "created": now(),
        }
        last = result.history[-1] if result.history else {}
        run = {"train_rows": n_images, "latent": latent, "params": params}
        results = {
            "final": {k: round(v, 4) for k, v in last.items() if k in FINAL_KEYS},
            "divergence": state.watch.diverged,
            "mode_collapse": state.watch.collapsed,
            "warnings": state.watch.warnings,
        }
        panels = {
            "Loss": ["d_loss", "g_loss"],
            "Discriminator output (probability real)": ["d_real", "d_fake"],
            "Sample diversity (1 = as varied as real)": ["diversity"],
        }
        plots = [("curves", "losses.png", {"history": result.history, "panels": panels})]
        settings = {k: getattr(job.cfg, k) for k in USED_SETTINGS} | {"beta1": beta1}
        return Outcome(payload, {"family": self.name}, run, results, plots, settings)

    # -- serving --------------------------------------------------------------------------------
    def predict(self, data: dict, model_path: str, inputs: list[str], opts: PredictOptions) -> None:
        predict(data, model_path, inputs, opts)

    def export_graphs(self, data: dict, model_path: str) -> ExportPlan:
        """The generator: `noise` float (N, latent) -> `image` float (N, C, H, W) in [0, 1]."""
        from dlcli.export.onnx import FORMAT_VERSION

        sampler, latent = load_sampler(data, model_path)
        noise = torch.randn(8, latent, generator=torch.Generator().manual_seed(0))  # (8, latent)
        c, h, w = (int(d) for d in data["image_shape"])
        meta = {
            "dl.format_version": str(FORMAT_VERSION),
            "dl.task": "generation",
            "dl.family": "gan",
            "dl.data_kind": "image",
            "dl.latent": str(latent),
            "dl.channels": str(c),
            "dl.height": str(h),
            "dl.width": str(w),
            "dl.pixel_range": "0,1",
            "dl.version": __version__,
        }
        batches = [noise[:1], noise]  # batch 1 and 8: the batch axis really is dynamic
        graph = Graph(sampler, noise, "noise", ["image"], batches, meta, dims={0: "batch"})
        return ExportPlan([graph], rows_checked=9)


FAMILY = Gan()


def _check_data(job: TrainJob) -> None:
    """A GAN needs an image folder with at least MIN_IMAGES images: one clear line otherwise."""
    from dlcli.data import image_cache
    from dlcli.data.images import find_splits

    kind = job.source.kind
    if kind != "image":
        raise UsageError(
            f"a GAN generates images and trains on an image folder; {job.req.data} is {kind} data",
            "give a folder of images, e.g. dl train digits/ --arch gan",
        )
    root = Path(job.req.data)
    if root.is_dir():
        found = image_cache.walk_images(find_splits(root).get("train", root))[0]
        if 0 < len(found) < MIN_IMAGES:
            raise InputError(
                f"{job.req.data}: {len(found)} image{'s' if len(found) != 1 else ''}; a GAN needs "
                f"at least {MIN_IMAGES} (hundreds or more to make varied images)"
            )


def _optimizer(cfg: Any, beta1: float, params: Any) -> torch.optim.Optimizer:
    from dlcli.engine.optim import make_optimizer

    opt = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay, cfg.momentum)
    for group in opt.param_groups:
        if "betas" in group:  # Adam's beta1 (0.5 for GANs: less momentum, steadier duels)
            group["betas"] = (beta1, group["betas"][1])
    return opt


def _images(job: TrainJob) -> tuple[Any, torch.Tensor, float]:
    """(preprocessor, all images (N, C, H, W) uint8, load seconds): a GAN has no validation split, so
    the source's training and validation images are one set."""
    from dlcli.data.sources import preprocessor_from_state

    req = job.req
    t0 = time.perf_counter()
    preprocessor = preprocessor_from_state(job.resume["preprocessor"]) if job.resume else None
    prep = job.source.prepare(req.data, req.data_opts, preprocessor)
    if not isinstance(prep.x_train, torch.Tensor):
        raise UsageError(f"{req.data}: too many images to hold in memory for GAN training")
    parts = [prep.x_train] + ([prep.x_val] if prep.x_val is not None else [])
    images = torch.cat(parts)
    if len(images) < MIN_IMAGES:
        raise InputError(
            f"{req.data}: {len(images)} readable images; a GAN needs at least {MIN_IMAGES}"
        )
    return prep.preprocessor, images, time.perf_counter() - t0


# -- generation -----------------------------------------------------------------------------------
def generate(sampler: Sampler, latent: int, n: int, seed: int, device: torch.device) -> Any:
    """Yield (start index, images (b, C, H, W) in [0, 1]) for n samples in batches of GEN_BATCH;
    the noise comes from a CPU generator seeded with `seed`, so any device gives the same noise."""
    rng = torch.Generator().manual_seed(seed)
    sampler = sampler.to(device)
    for start in range(0, n, GEN_BATCH):
        noise = torch.randn(min(GEN_BATCH, n - start), latent, generator=rng)  # (b, latent)
        yield start, sample_images(sampler, noise, device)


def predict(data: dict, model_path: str, inputs: list[str], opts: PredictOptions) -> None:
    """`dl predict GAN.pt --samples N` -> -o FILE.png (a grid) and/or --output-dir DIR."""
    from dlcli.accel import pick_device
    from dlcli.imagegrid import write_samples

    if inputs:
        raise UsageError(
            "a GAN model takes no inputs; it generates images",
            f"dl predict {model_path} --samples 64 -o samples.png",
        )
    if opts.samples is None:
        raise UsageError(
            "a GAN model generates images: give --samples N",
            f"dl predict {model_path} --samples 64 -o samples.png",
        )
    if not opts.output and not opts.output_dir:
        raise UsageError(
            f"--samples {opts.samples}: say where the images go: -o FILE.png for one grid, "
            "or --output-dir DIR for one PNG per sample"
        )
    if opts.output and Path(opts.output).suffix.lower() != ".png":
        raise UsageError(f"-o {opts.output}: a GAN writes a PNG grid; name it FILE.png")
    if opts.output and opts.samples > MAX_GRID:
        raise UsageError(
            f"--samples {opts.samples:,}: one grid (-o {opts.output}) holds at most "
            f"{MAX_GRID:,} samples",
            f"write more with --output-dir DIR, one PNG per sample, in batches of {GEN_BATCH}",
        )
    if opts.output_dir and Path(opts.output_dir).exists() and not Path(opts.output_dir).is_dir():
        raise UsageError(f"--output-dir {opts.output_dir}: exists and is not a folder")
    sampler, latent = load_sampler(data, model_path)
    seed = opts.seed if opts.seed is not None else secrets.randbits(31)
    device = pick_device(opts.device)
    batches = generate(sampler, latent, opts.samples, seed, device)
    write_samples(batches, opts.samples, opts.output, opts.output_dir)  # at most MAX_GRID in -o
    where = " and ".join(f for f in (opts.output, opts.output_dir and f"{opts.output_dir}/") if f)
    info(f"wrote {opts.samples} samples to {where} (seed {seed})")
