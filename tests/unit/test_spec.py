"""Spec parsing, the layer registry and the builder: every layer against plain PyTorch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlcli.errors import SpecError
from dlcli.model.builder import build_network
from dlcli.spec.registry import known_layers, lookup
from dlcli.spec.schema import load_preset, load_spec_file, parse_spec, preset_names


def build(layers, shape=(4,), outputs=3, **top):
    return build_network(parse_spec({"layers": layers, **top}, "t.yaml"), shape, outputs)


def test_dense_matches_torch_linear():
    torch.manual_seed(0)
    net = build([{"dense": 5}], head="none", outputs=None).module
    ref = nn.Linear(4, 5)
    ref.load_state_dict({"weight": net[0].weight, "bias": net[0].bias})
    x = torch.randn(7, 4)
    assert torch.equal(net(x), ref(x))


def test_shorthand_and_long_form_build_the_same_network():
    a = build([{"dense": 8}, "relu", {"dropout": 0.1}])
    b = build(
        [
            {"type": "dense", "units": 8},
            {"type": "activation", "fn": "relu"},
            {"dropout": {"p": 0.1}},
        ]
    )
    assert [type(m) for m in a.module.modules()] == [type(m) for m in b.module.modules()]
    assert [tuple(p.shape) for p in a.module.parameters()] == [
        tuple(p.shape) for p in b.module.parameters()
    ]


def test_head_is_added_from_outputs_unless_spec_uses_outputs():
    net = build([{"dense": 8}, "relu"], outputs=3)
    assert net.output_shape == (3,) and net.rows[-1].name == "head"
    net = build([{"dense": 8}, "relu", {"dense": "outputs"}], outputs=3)
    assert net.output_shape == (3,) and net.rows[-1].name != "head"


def test_residual_adds_skip_and_projects_when_width_changes():
    torch.manual_seed(0)
    same = build([{"residual": [{"dense": 4}]}], head="none", outputs=None).module[0]
    x = torch.randn(3, 4)
    assert torch.allclose(same(x), same.body(x) + x)
    proj = build(
        [{"residual": {"layers": [{"dense": 6}], "activation": "relu"}}], head="none", outputs=None
    ).module[0]
    assert isinstance(proj.proj, nn.Linear)
    assert torch.allclose(proj(x), torch.relu(proj.body(x) + proj.proj(x)))


@pytest.mark.parametrize(
    "name", ["relu", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "softmax"]
)
def test_activations_match_torch_functional(name):
    x = torch.randn(5, 4)
    got = build([name], head="none", outputs=None).module(x)
    ref = {
        "relu": torch.relu,
        "leaky_relu": nn.functional.leaky_relu,
        "elu": nn.functional.elu,
        "gelu": nn.functional.gelu,
        "silu": nn.functional.silu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softmax": lambda t: torch.softmax(t, -1),
    }[name](x)
    assert torch.allclose(got, ref)


def test_norm_layers_and_flatten_shapes():
    net = build(
        ["flatten", "batchnorm", "layernorm", {"dense": 2}], shape=(2, 3), head="none", outputs=None
    )
    assert [r.out_shape for r in net.rows] == [(6,), (6,), (6,), (2,)]
    assert isinstance(net.module[1], nn.BatchNorm1d) and isinstance(net.module[2], nn.LayerNorm)


@pytest.mark.parametrize(
    "init,check",
    [
        ("zeros", lambda w: torch.count_nonzero(w) == 0),
        ("xavier", lambda w: w.abs().max() <= (6 / (64 + 32)) ** 0.5 + 1e-6),
        ("normal", lambda w: abs(float(w.detach().std()) - 0.02) < 0.005),
        ("kaiming", lambda w: abs(float(w.detach().std()) - (2 / 64) ** 0.5) < 0.03),
    ],
)
def test_weight_init(init, check):
    torch.manual_seed(0)
    lin = build([{"dense": 32, "init": init}], shape=(64,), head="none", outputs=None).module[0]
    assert check(lin.weight)
    assert torch.count_nonzero(lin.bias) == 0


def test_registry_normalises_names_and_suggests():
    assert lookup("Batch_Norm", "x") is lookup("batchnorm", "x")
    with pytest.raises(
        SpecError, match=r"layers\[0\]: unknown layer type 'relux' \(did you mean .*relu"
    ):
        lookup("relux", "layers[0]")
    assert {d.names[0] for d in known_layers()} >= {
        "dense",
        "dropout",
        "batchnorm",
        "layernorm",
        "flatten",
        "residual",
        "activation",
    }


@pytest.mark.parametrize(
    "layers,message",
    [
        (
            [{"type": "dense", "units": "many"}],
            r"spec t.yaml: layers\[0\] \(dense\): field 'units': .*integer.*'many'",
        ),
        ([{"dense": {"unit": 3}}], r"layers\[0\] \(dense\): unknown field 'unit'"),
        ([{"type": "dense"}], r"layers\[0\] \(dense\): field 'units' is required"),
        ([{"dropout": 1.5}], r"layers\[0\] \(dropout\): field 'p': .*less than 1"),
        (["relu", {"type": "conv9d"}], r"layers\[1\]: unknown layer type 'conv9d'"),
        ([{"dense": 4, "extra": 1}], r"layers\[0\] \(dense\): unknown field .extra."),
        ([42], r"layers\[0\]: a layer must be a name or a mapping"),
        ([{"dense": 4, "init": "magic"}], r"layers\[0\] .*unknown initialisation 'magic'"),
    ],
)
def test_invalid_specs_name_layer_and_field(layers, message):
    with pytest.raises(SpecError, match=message):
        build(layers)


def test_impossible_shape_is_reported_before_training():
    with pytest.raises(SpecError, match=r"output head needs a flat vector"):
        build([{"dense": 4}], shape=(3, 5))
    with pytest.raises(
        SpecError, match=r"layers\[0\]: unknown field 'layerz'|layers\[0\] \(residual\)"
    ):
        build([{"residual": {"layerz": []}}])


def test_yaml_and_json_syntax_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers:\n  - dense: 4\n  - {type: relu\n")
    with pytest.raises(SpecError, match=r"spec .*bad.yaml: invalid YAML at line \d+"):
        load_spec_file(bad)
    badj = tmp_path / "bad.json"
    badj.write_text('{"layers": [\n {"dense": 4},\n]}')
    with pytest.raises(SpecError, match=r"spec .*bad.json: invalid JSON at line 3"):
        load_spec_file(badj)
    with pytest.raises(SpecError, match="file not found"):
        load_spec_file(tmp_path / "nope.yaml")


def test_top_level_errors():
    with pytest.raises(SpecError, match="unknown field 'layer'"):
        parse_spec({"layer": []}, "t.yaml")
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_spec(["dense"], "t.yaml")
    with pytest.raises(SpecError, match=r"training.lr"):
        parse_spec({"layers": ["relu"], "training": {"lr": -1}}, "t.yaml")


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates_and_builds(name):
    spec, _ = load_preset(name)
    shape = {"image": (3, 32, 32)}.get((spec.data or ["tabular"])[0], (30,))
    if spec.family != "supervised":  # autoencoders, GANs: each network of the family builds
        from dlcli import families

        nets = families.get(spec.family).build_networks(spec, shape, None, f"preset {name}")
        assert len(nets) == 2 and all(n.rows for n in nets.values())
        return
    if spec.data == ["text"]:  # text only (bow): token ids in
        text = {"input_dtype": torch.long, "data_info": {"vocab_size": 50}}
        net = build_network(spec, (None,), 2, **text)
    else:
        net = build_network(spec, shape, 2)
    assert net.output_shape == (2,)


def test_spec_round_trips_through_state_dict():
    spec, doc = load_preset("mlp")
    a = build_network(spec, (10,), 3).module.eval()
    b = build_network(parse_spec(doc, "again"), (10,), 3).module.eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 10)
    assert torch.equal(a(x), b(x))


def test_nested_layer_init_is_not_overwritten_by_its_container():
    net = build(
        [{"residual": [{"dense": 4, "init": "zeros"}]}], init="kaiming", head="none", outputs=None
    )
    assert torch.count_nonzero(net.module[0].body[0].weight) == 0


def test_hostile_spec_documents_are_one_bounded_error(tmp_path) -> None:
    """Deep nesting (JSON arrays, nested residual blocks) and YAML alias bombs end in one SpecError
    naming the file, quickly, instead of a RecursionError or an exponential expansion."""
    import time

    from dlcli.errors import SpecError
    from dlcli.spec.schema import load_spec_file

    deep_json = tmp_path / "deep.json"
    deep_json.write_text('{"layers": ' + "[" * 100_000 + "]" * 100_000 + "}")
    residual = "layers:\n  - relu\n" + "".join(
        "  " * (i + 1) + "- residual:\n" for i in range(1000)
    )
    (tmp_path / "residual.yaml").write_text(residual + "  " * 1001 + "- {dense: 4}\n")
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):  # 10**12 values once expanded, ~400 bytes on disk
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        laughs.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(laughs) + "\nlayers: [*l]\n")
    for path, words in (
        (deep_json, "nested more than"),
        (tmp_path / "residual.yaml", "nested more than"),
        (bomb, "more than 100,000 values"),
    ):
        t0 = time.perf_counter()
        with pytest.raises(SpecError, match=words) as err:
            load_spec_file(path)
        assert str(path) in str(err.value) and len(str(err.value)) < 300
        assert time.perf_counter() - t0 < 10, path
