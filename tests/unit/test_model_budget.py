"""The network size limit (dlcli/model/budget.py, issue 11 class 2): a spec whose parameters and
activations need more memory than the limit is one line naming the layer and the size, decided
on the meta device before anything is allocated; --max-model-gb / DL_MAX_MODEL_GB raise it; the
shipped presets are far under it; and an error line never quotes a huge value."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from conftest import PENGUINS, assert_error

from dlcli.errors import MAX_LINE, DLError, ModelSizeError, SpecError, excerpt
from dlcli.model.budget import TRAIN_BYTES_PER_PARAM, human_bytes, human_count, model_budget
from dlcli.model.builder import build_network, estimate_size
from dlcli.spec.schema import load_preset, parse_spec, preset_names

HUGE = [
    # (layers, input shape, the layer the line names)
    ([{"dense": 1_000_000_000}], (4,), "layers[0].dense"),
    ([{"dense": 16}, "relu", {"dense": 1_000_000_000}], (4,), "layers[2].dense"),
    ([{"conv2d": 1_000_000}], (3, 8, 8), "layers[0].conv2d"),
    ([{"embedding": {"dim": 64, "vocab": 1_000_000_000}}], (8,), "layers[0].embedding"),
    ([{"lstm": 100_000}], (8, 4), "layers[0].lstm"),
    (
        [{"block": [{"dense": 8}, {"residual": [{"dense": 200_000_000}]}]}],
        (4,),
        "layers[0].layers[1].layers[0].dense",
    ),
    ([{"project": [1_000_000, 1000]}], (4,), "layers[0].project"),
]


def build(layers, shape=(4,), outputs=3, **top):
    return build_network(parse_spec({"layers": layers, **top}, "t.yaml"), shape, outputs, "t.yaml")


@pytest.mark.parametrize(("layers", "shape", "where"), HUGE)
def test_a_huge_layer_is_refused_before_any_allocation(layers, shape, where):
    dtype = torch.long if "embedding" in json.dumps(layers) else torch.float32
    spec = parse_spec({"layers": layers}, "t.yaml")
    t0 = time.perf_counter()
    with pytest.raises(ModelSizeError) as err:
        build_network(spec, shape, 3, "t.yaml", input_dtype=dtype)
    assert time.perf_counter() - t0 < 2  # decided on the meta device, nothing allocated
    line = str(err.value)
    assert line.startswith("spec t.yaml: ") and where in line, line
    assert re.search(r"[\d.]+ (million|billion|trillion) parameters", line), line
    assert re.search(r"[\d.,]+ (GB|TB) to train at batch size 32, over the 4.0 GB limit", line)
    assert "--max-model-gb" in line and "DL_MAX_MODEL_GB" in line and len(line) < 400
    assert "(" not in line.split(": ")[1]  # a spec path: layers[0].layers[1].layers[0].dense


def test_the_line_gives_the_size_in_human_units():
    with pytest.raises(ModelSizeError) as err:
        build([{"dense": 1_000_000_000}], shape=(1,), outputs=None, head="none")
    # 2.0 billion parameters x 16 bytes + one 1e9-value output x 32 samples x 4 bytes
    assert str(err.value) == (
        "spec t.yaml: layers[0].dense: 2.0 billion parameters, 160.0 GB to train at batch size 32,"
        " over the 4.0 GB limit (raise it with --max-model-gb N or DL_MAX_MODEL_GB)"
    )


def test_a_raised_limit_lets_the_same_spec_pass_the_check():
    spec = parse_spec({"layers": [{"dense": 1_000_000_000}]}, "t.yaml")
    with model_budget(1000):  # 1 TB: the estimate passes (building it for real is another matter)
        tally = estimate_size(spec.layers, "layers", (4,), 3)
    assert tally.params == 5_000_000_000 + 3_000_000_003
    assert tally.bytes == tally.params * TRAIN_BYTES_PER_PARAM + (4 + 1_000_000_000 + 3) * 32 * 4
    with pytest.raises(ModelSizeError):
        estimate_size(spec.layers, "layers", (4,), 3)


def test_the_limit_is_a_real_boundary_and_builds_below_it():
    layers = [{"dense": 1_000_000}]  # 8 million parameters x 16 bytes + activations: 0.26 GB
    with model_budget(0.25), pytest.raises(ModelSizeError, match=r"head\.dense"):
        build(layers)
    with model_budget(0.3):
        net = build(layers)
    assert sum(p.numel() for p in net.module.parameters()) == 8_000_003


def test_activations_at_the_batch_size_count_too():
    """Few parameters, a large input: the spec's batch size decides."""
    spec = {"layers": ["flatten"], "head": "none"}
    with pytest.raises(ModelSizeError, match=r"input of shape \(3, 2000, 2000\).* batch size 512"):
        build(
            ["flatten"],
            shape=(3, 2000, 2000),
            outputs=None,
            head="none",
            training={"batch_size": 512},
        )
    assert build_network(parse_spec(spec, "t.yaml"), (3, 200, 200), None).output_shape == (120000,)
    with model_budget(batch_size=1):
        build(
            ["flatten"],
            shape=(3, 2000, 2000),
            outputs=None,
            head="none",
            training={"batch_size": 512},
        )


def test_the_check_draws_nothing_from_the_random_generator():
    """Weights are bit for bit what they were without the size check (seeded runs reproduce)."""
    spec, _ = load_preset("transformer")
    torch.manual_seed(0)
    a = build_network(spec, (16, 4), 3)
    after_a = torch.rand(1)
    torch.manual_seed(0)
    with torch.device("cpu"):
        b = build_network(spec, (16, 4), 3)
    assert torch.equal(after_a, torch.rand(1))
    for p, q in zip(a.module.parameters(), b.module.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_far_under_the_limit(name):
    """The presets at the largest inputs they are made for (128x128 images, 400 steps)."""
    from dlcli.families import get

    spec, _ = load_preset(name)
    shape = (3, 128, 128) if spec.data and "image" in spec.data else (200,)
    if name in ("lstm", "gru", "rnn", "transformer"):
        shape = (400, 4)
    with model_budget(1.4):  # the largest, cnn on 128x128 images at its batch size 64: 1.37 GB
        if spec.data == ["text"]:  # text only (bow): token ids of a 20,000-word vocabulary
            from dlcli.model.builder import build_network

            text = {"input_dtype": torch.long, "data_info": {"vocab_size": 20_000}}
            nets = {"network": build_network(spec, (400,), 10, name, **text)}
        else:
            nets = get(spec.family).build_networks(spec, shape, 10, name)
    assert nets


def test_an_integer_overflow_in_a_size_is_one_line_naming_the_layer():
    with pytest.raises(SpecError, match=r"layers\[1\] \(dense\): cannot be built"):
        build([{"dense": 8}, {"dense": 10**30}])


def test_human_units():
    assert human_count(5_000) == "5,000"
    assert human_count(12_345_678) == "12.3 million"
    assert human_count(1e9) == "1.0 billion"
    assert human_bytes(4e9) == "4.0 GB"
    assert human_bytes(250e6) == "250.0 MB"
    assert human_count(10**400) == "about 10^400"  # past a float's range (found by the fuzzer)
    assert human_bytes(4 * 10**30) == "about 10^30 bytes"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_bad_max_model_gb_is_one_line(dl_inproc, value):
    res = dl_inproc("build", "--arch", "mlp", "--input-shape", "4", "--max-model-gb", value)
    assert_error(res, "--max-model-gb")


def test_dl_build_refuses_a_huge_layer_and_the_flag_raises_the_limit(dl_inproc, tmp_path: Path):
    spec = tmp_path / "big.yaml"
    spec.write_text("layers:\n  - dense: 16\n  - relu\n  - dense: 1000000\n", encoding="utf-8")
    res = dl_inproc("build", "--spec", spec, "--input-shape", "4", "--max-model-gb", "0.05")
    line = assert_error(res, "layers[2].dense", "17.0 million parameters", "--max-model-gb")
    # 80 + 17,000,000 parameters x 16 bytes + (4 + 16 + 16 + 1,000,000) values x 32 x 4 bytes
    assert line == (
        f"error: spec {spec}: layers[2].dense: 17.0 million parameters; with the layers before it"
        " 17.0 million parameters, 400.0 MB to train at batch size 32, over the 50.0 MB limit"
        " (raise it with --max-model-gb N or DL_MAX_MODEL_GB)"
    )
    res = dl_inproc(
        "build", "--spec", spec, "--input-shape", "4", "--max-model-gb", "0.5", "--json"
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["params"] == 80 + 17_000_000  # no --outputs: no head


def test_dl_train_refuses_a_huge_layer_before_training(dl_inproc, tmp_path: Path):
    spec = tmp_path / "big.yaml"
    spec.write_text("layers:\n  - dense: 1000000000\n", encoding="utf-8")
    res = dl_inproc("train", PENGUINS / "train.csv", "--spec", spec, "-o", tmp_path / "m.pt")
    assert_error(res, "layers[0].dense", "billion parameters", "GB to train")
    assert not (tmp_path / "m.pt").exists()


# -- error lines quote at most an excerpt of a value ------------------------------------------------
def test_a_1mb_value_in_a_wrong_type_field_gives_a_short_line_naming_the_field(dl_inproc, tmp_path):
    spec = tmp_path / "long.json"
    spec.write_text(json.dumps({"layers": [{"dense": "x" * 1_000_000}]}), encoding="utf-8")
    res = dl_inproc("build", "--spec", spec, "--input-shape", "4")
    line = assert_error(res, "layers[0] (dense)", "field 'units'", "1,000,000 characters")
    assert len(line) < 300, len(line)


@pytest.mark.parametrize(
    "doc",
    [
        {"layers": [{"x" * 1_000_000: 4}]},  # an unknown layer type
        {"layers": [{"dense": 4, "y" * 1_000_000: 1}]},  # an unknown option
        {"layers": [{"type": ["z"] * 200_000}]},  # a type that is no string
        {"layers": ["relu"], "name": ["n"] * 100_000},  # a wrong type at the top
        {"layers": [{"dense": 4, "init": "q" * 1_000_000}]},  # a bad name in a validator
        {"layers": [{"dense": 4, "name": "a.b" * 300_000}]},  # a bad layer name
        {"layers": [{"relu": "v" * 1_000_000}]},  # a shorthand value a layer does not take
        {"layers": ["w" * 1_000_000]},
    ],
)
def test_no_message_quotes_a_huge_value(doc):
    with pytest.raises(DLError) as err:
        build_network(parse_spec(doc, "t.json"), (4,), 3, "t.json")
    assert len(err.value.message) < 300, str(err.value)[:400]  # the hint: the known names


def test_excerpt_and_the_line_cap():
    assert excerpt("short") == "'short'"
    assert excerpt("x" * 1_000_000).endswith("... (1,000,000 characters)")
    assert len(excerpt(list(range(1_000_000)))) < 100
    assert excerpt(10**5000) == "<a whole number of about 5,000 digits>"
    nested: list = []
    for _ in range(10_000):
        nested = [nested]
    assert len(excerpt(nested)) < 100  # deep nesting neither recurses nor grows
    line = str(DLError("m" * 10**6, "h" * 10**6))
    assert len(line) <= MAX_LINE and line.endswith("characters left out)")


# -- what the fuzzers found (tests/fuzz/), kept as plain examples --------------------------------
def test_a_yaml_control_character_is_one_line():
    from dlcli.spec.schema import read_spec_text

    with pytest.raises(SpecError) as err:
        read_spec_text("layers: [relu]\n\x1f", "f.yaml")
    assert str(err.value) == (
        "spec f.yaml: invalid YAML at character 15: unacceptable character #x001f"
    )


def test_token_ids_passed_through_to_the_output_are_a_spec_error():
    """[relu] on token ids used to build, then crash at the first batch (Long into the head)."""
    spec = parse_spec({"layers": ["relu"]}, "t.yaml")
    with pytest.raises(SpecError, match=r"pass token ids .* to the output.*embedding"):
        build_network(spec, (12,), 3, "t.yaml", torch.long, {"vocab_size": 40})
    ok = parse_spec({"layers": [{"embedding": 8}, "global_avgpool1d"]}, "t.yaml")
    assert build_network(ok, (12,), 3, "t.yaml", torch.long, {"vocab_size": 40}).output_shape == (
        3,
    )
