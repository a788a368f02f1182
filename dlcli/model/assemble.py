"""Model file <-> modules: rebuild the network from its stored spec, and the serving pipeline
(raw inputs -> preprocessing -> network -> task output) that predict, evaluate and export all run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dlcli.data.sources import preprocessor_from_state
from dlcli.errors import ModelFileError, excerpt
from dlcli.model.budget import FLOAT_BYTES, GB, current, model_budget
from dlcli.model.builder import BuiltNetwork, build_network
from dlcli.model.tasks import SupervisedTask, make_task
from dlcli.spec.schema import parse_spec


def network_args(preprocessor: Any) -> dict:
    """What the builder needs to know about the data beyond its shape: the input dtype (token ids
    are integers) and facts such as the vocabulary size."""
    return {
        "input_dtype": preprocessor.input_dtype,
        "data_info": dict(preprocessor.data_info),
    }


class InferenceModel(nn.Module):
    """raw inputs (N, ...) -> probabilities (N, C) or values (N, 1)."""

    def __init__(self, preprocess: nn.Module, network: nn.Module, postprocess: nn.Module) -> None:
        super().__init__()
        self.preprocess, self.network, self.postprocess = preprocess, network, postprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.postprocess(self.network(self.preprocess(x)))


@dataclass
class LoadedModel:
    """A model file brought back to life."""

    data: dict
    preprocessor: Any
    task: SupervisedTask
    built: BuiltNetwork
    inference: InferenceModel


@contextlib.contextmanager
def model_file_errors(source: str) -> Iterator[None]:
    """A missing key or weights that do not fit the stored spec: one ModelFileError line."""
    try:
        yield
    except KeyError as exc:
        raise ModelFileError(f"{source}: model file lacks {excerpt(exc.args[0])}") from None
    except RuntimeError as exc:
        raise ModelFileError(
            f"{source}: weights do not fit the stored spec: {_first_line(exc)}"
        ) from None
    except (TypeError, ValueError, AttributeError, IndexError) as exc:  # modelfile.load checks
        # the layout it knows; what a data kind keeps in 'preprocessor' is checked by using it
        raise ModelFileError(
            f"{source}: model file is malformed ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def loading_budget(weights: Any) -> Any:
    """The memory budget a stored network is rebuilt under (model/budget.py): to run, not to
    train (4 bytes a parameter, one sample), and at least the weights the file holds, so a model
    trained with a raised --max-model-gb loads, and a spec the weights do not back is refused."""
    tensors = weights.values() if isinstance(weights, dict) else ()
    stored = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor)) * FLOAT_BYTES
    return model_budget(
        (current().max_bytes + stored) / GB, batch_size=1, bytes_per_param=FLOAT_BYTES
    )


def from_file_data(data: dict, source: str) -> LoadedModel:
    """Rebuild modules from a loaded model file and load their weights strictly."""
    with model_file_errors(source):
        preprocessor = preprocessor_from_state(data["preprocessor"])
        spec = parse_spec(data["spec"], f"in {source}")
        task = make_task(preprocessor.target, data.get("loss"))
        weights = data["weights"]["network"]
        with loading_budget(weights):
            built = build_network(  # errors name the model file: "spec in model.pt: ..."
                spec,
                tuple(data["input_shape"]),
                int(data["outputs"]),
                f"in {source}",
                **network_args(preprocessor),
            )
        built.module.load_state_dict(weights)
        if tuple(preprocessor.input_shape) != tuple(data["input_shape"]):  # a forged file
            raise ModelFileError(
                f"{source}: its preprocessing gives inputs of shape "
                f"{excerpt(tuple(preprocessor.input_shape))}, its network takes "
                f"{excerpt(tuple(data['input_shape']))}"
            )
        # the preprocessing module is built from the stored state: a malformed one fails here
        model = InferenceModel(
            preprocessor.preprocess_module(), built.module, task.postprocess()
        ).eval()
    return LoadedModel(data, preprocessor, task, built, model)


def load_model(path: str, device: str = "cpu", data: dict | None = None) -> LoadedModel:
    """Load a model file (or use its already loaded `data`); `device` (auto, cpu, cuda, ...) is
    where inference runs. Files of other families (autoencoder, GAN) are refused here: their own
    modules load them (dlcli/families/)."""
    from dlcli import modelfile

    data = modelfile.load(path) if data is None else data
    family = data.get("family")  # absent: a network with a task head (dlcli/families/)
    if family:
        raise ModelFileError(
            f"{path}: is a {str(family)[:60]} model; this command needs a classifier or regressor"
        )
    loaded = from_file_data(data, path)
    if device != "cpu":
        from dlcli.accel import pick_device

        dev = pick_device(device)
        if dev.type != "cpu":
            loaded.inference.to(dev)
            if len(loaded.built.input_shape) == 3:  # images: channels-last convolutions
                loaded.inference.to(memory_format=torch.channels_last)
    return loaded
