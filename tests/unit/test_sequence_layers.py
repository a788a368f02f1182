"""Sequence layers against plain PyTorch, padding exactness (a row in a padded batch = the row
alone) and ONNX parity with a dynamic batch and sequence length for every sequence preset."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from dlcli.errors import SpecError
from dlcli.model.builder import build_network
from dlcli.spec.schema import load_preset, parse_spec

VOCAB = 50
TOL = 1e-5


def build(layers, shape=(None,), dtype=torch.long, outputs=None, vocab=VOCAB):
    spec = parse_spec({"layers": layers, "head": "auto" if outputs else "none"}, "t.yaml")
    info = {"vocab_size": vocab} if vocab else {}
    net = build_network(spec, shape, outputs, input_dtype=dtype, data_info=info)
    return net.module.eval()


def padded_ids(lengths, steps=None, seed=0):
    """(N, T) token ids 1..VOCAB-1, row i real for its first lengths[i] steps, then 0."""
    g = torch.Generator().manual_seed(seed)
    steps = steps or max(lengths)
    ids = torch.randint(1, VOCAB, (len(lengths), steps), generator=g)
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    return ids


def assert_rows_exact(net, ids, lengths, steps_out=None):
    """Each row of the padded batch gives what the row alone (no padding) gives; for per-step
    outputs, at its real steps (`steps_out(n)` of them for a row of n steps)."""
    with torch.no_grad():
        batch = net(ids)
        for i, n in enumerate(lengths):
            alone = net(ids[i : i + 1, :n])[0]
            got = batch[i] if steps_out is None else batch[i, : steps_out(n)]
            assert got.shape == alone.shape
            assert torch.allclose(got, alone, atol=TOL, rtol=0), (i, (got - alone).abs().max())


LENGTHS = [7, 3, 1, 5]
# init normal also fills the padding id's vector, so padded steps are not zero going in
EMBED = {"type": "embedding", "dim": 6, "init": "normal"}


# ---- recurrent layers --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_matches_torch_without_padding(kind, bidirectional):
    torch.manual_seed(0)
    net = build(
        [{kind: 5, "layers": 2, "bidirectional": bidirectional, "output": "all"}], shape=(None, 3),
        dtype=torch.float32,
    )  # fmt: skip
    ref = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](
        3, 5, num_layers=2, bidirectional=bidirectional, batch_first=True
    )
    layer = net[0]
    with torch.no_grad():  # torch's weight_ih_l1_reverse = our backward_layers[1].weight_ih_l0
        for name, p in ref.named_parameters():
            stem, layer_no = name.removesuffix("_reverse").rsplit("_l", 1)
            stack = layer.backward_layers if name.endswith("_reverse") else layer.forward_layers
            p.copy_(getattr(stack[int(layer_no)], f"{stem}_l0"))
    x = torch.randn(4, 6, 3)
    out, _ = ref(x)
    with torch.no_grad():
        assert torch.allclose(net(x), out, atol=TOL)
    # last = forward at the last step + backward at step 0; mean = mean over steps
    last = build([{kind: 5, "layers": 2, "bidirectional": bidirectional}], (None, 3), torch.float32)
    last.load_state_dict(net.state_dict())
    want = torch.cat([out[:, -1, :5], out[:, 0, 5:]], -1) if bidirectional else out[:, -1]
    with torch.no_grad():
        assert torch.allclose(last(x), want, atol=TOL)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("output", ["last", "mean", "all"])
def test_recurrent_padding_is_exact(kind, bidirectional, output):
    torch.manual_seed(1)
    net = build([EMBED, {kind: 4, "layers": 2, "bidirectional": bidirectional, "output": output}])
    ids = padded_ids(LENGTHS)
    assert_rows_exact(net, ids, LENGTHS, (lambda n: n) if output == "all" else None)
    if output == "all":  # padded steps come out zero
        with torch.no_grad():
            assert torch.count_nonzero(net(ids)[1, 3:]) == 0


def test_recurrent_fully_padded_row_is_zero_and_finite():
    net = build([{"embedding": 6}, {"lstm": 4, "bidirectional": True}])
    ids = padded_ids([4, 0])
    with torch.no_grad():
        out = net(ids)
    assert torch.isfinite(out).all() and torch.count_nonzero(out[1]) == 0


# ---- convolution and pooling -------------------------------------------------------------------


def test_conv1d_matches_torch_and_shrinks_the_mask():
    torch.manual_seed(0)
    net = build([{"conv1d": 4, "kernel": 3, "stride": 2}], (9, 3), torch.float32)
    conv = net[0].conv
    x = torch.randn(2, 9, 3)
    want = nn.functional.conv1d(x.transpose(1, 2), conv.weight, conv.bias, 2, 1).transpose(1, 2)
    with torch.no_grad():
        y, mask = net[0](x)
    assert mask is None and torch.allclose(y, want, atol=TOL) and y.shape == (2, 5, 4)
    with torch.no_grad():  # a mask of lengths 9 and 4 -> ceil(n / 2) = 5 and 2 real steps
        _, mask = net[0](x, torch.arange(9).unsqueeze(0) < torch.tensor([[9], [4]]))
    assert mask.sum(1).tolist() == [5, 2]


@pytest.mark.parametrize(
    "layers",
    [
        [{"conv1d": 5, "kernel": 3}, "global_maxpool1d"],
        [{"conv1d": 5, "kernel": 4, "stride": 2}, {"maxpool1d": 2}, "mean_pool"],
        [{"conv1d": 5, "kernel": 3, "padding": "valid"}, {"avgpool1d": 3, "padding": "same"}],
        [{"avgpool1d": 2, "stride": 1}, {"maxpool1d": 3, "padding": "same"}, "global_avgpool1d"],
    ],
)
def test_conv_and_pool_padding_is_exact(layers):
    torch.manual_seed(2)
    lengths = [9, 6, 4, 3]
    net = build([EMBED, *layers], shape=(9,))
    ids = padded_ids(lengths)
    if net(ids).dim() == 2:
        assert_rows_exact(net, ids, lengths)
    else:  # per-step output: compare the steps the row alone has
        assert_rows_exact(net, ids, lengths, lambda n: net(ids[:1, :n]).shape[1])


def test_pools_match_plain_torch_without_padding():
    x = torch.randn(2, 8, 3)
    mx = build([{"maxpool1d": 2}], (8, 3), torch.float32)
    av = build([{"avgpool1d": {"size": 3, "stride": 2}}], (8, 3), torch.float32)
    with torch.no_grad():
        f = nn.functional
        assert torch.equal(mx(x), f.max_pool1d(x.transpose(1, 2), 2).transpose(1, 2))
        want = f.avg_pool1d(x.transpose(1, 2), 3, 2).transpose(1, 2)
        assert torch.allclose(av(x), want, atol=TOL)
        assert torch.allclose(build(["mean_pool"], (8, 3), torch.float32)(x), x.mean(1))
        assert torch.equal(build(["global_maxpool1d"], (8, 3), torch.float32)(x), x.amax(1))


# ---- embeddings, positions, transformer, poolings ----------------------------------------------


def test_embedding_and_input_embedding():
    torch.manual_seed(0)
    net = build([{"embedding": 4}])
    ids = padded_ids([3, 2])
    assert torch.equal(net(ids), nn.functional.embedding(ids, net[0].weight))
    assert net[0].num_embeddings == VOCAB and net[0].padding_idx == 0
    assert isinstance(build([{"input_embedding": 4}])[0], nn.Embedding)
    series = build([{"input_embedding": 4}], (None, 3), torch.float32)
    x = torch.randn(2, 5, 3)
    lin = series[0].linear
    assert torch.equal(series(x), nn.functional.linear(x, lin.weight, lin.bias))
    one = build([{"input_embedding": 4}], (5,), torch.float32)  # (T,) = one feature per step
    assert one(torch.randn(2, 5)).shape == (2, 5, 4)


def test_sinusoidal_and_learned_positions():
    net = build([{"embedding": 6}, "positional_encoding"])
    x = torch.zeros(1, 5, 6)
    pe = net[1](x)[0]  # zeros in: the encoding itself
    pos, i = torch.arange(5.0).unsqueeze(1), torch.arange(0, 6, 2.0)
    angle = pos / 10000 ** (i / 6)
    assert torch.allclose(pe[:, 0::2], angle.sin(), atol=1e-6)
    assert torch.allclose(pe[:, 1::2], angle.cos(), atol=1e-6)
    learned = build([{"embedding": 6}, {"positional_encoding": {"learned": True, "max_length": 9}}])
    assert torch.equal(learned[1](x)[0], learned[1].table[:5])


@pytest.mark.parametrize("pre_norm", [True, False])
def test_transformer_matches_torch_encoder_layer(pre_norm):
    torch.manual_seed(0)
    net = build(
        [{"embedding": 8}, {"transformer": {"heads": 2, "ff": 16, "pre_norm": pre_norm}}]
    ).train()  # dropout is 0.1: compare with dropout off
    enc = net[1]
    for m in enc.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    ref = nn.TransformerEncoderLayer(
        8, 2, 16, 0.0, activation="gelu", batch_first=True, norm_first=pre_norm
    )
    blk = enc.blocks[0]
    pairs = [
        (ref.self_attn.in_proj_weight, blk.attn.qkv.weight),
        (ref.self_attn.in_proj_bias, blk.attn.qkv.bias),
        (ref.self_attn.out_proj.weight, blk.attn.out.weight),
        (ref.self_attn.out_proj.bias, blk.attn.out.bias),
        (ref.linear1.weight, blk.ff[0].weight),
        (ref.linear1.bias, blk.ff[0].bias),
        (ref.linear2.weight, blk.ff[3].weight),
        (ref.linear2.bias, blk.ff[3].bias),
    ]
    with torch.no_grad():
        for a, b in pairs:
            a.copy_(b)
    ids = padded_ids([6, 4, 2])
    x, mask = net[0](ids), ids != 0
    want = ref(x, src_key_padding_mask=~mask)
    if pre_norm:  # pre-norm stacks end with a layer norm
        want = enc.norm(want)
    got = enc(x, mask)
    assert torch.allclose(got[mask], want[mask], atol=TOL)
    assert torch.count_nonzero(got[~mask]) == 0


@pytest.mark.parametrize("pool", ["attention_pool", "mean_pool", "global_maxpool1d", "cls_pool"])
def test_transformer_and_poolings_padding_is_exact(pool):
    torch.manual_seed(3)
    layers = [{**EMBED, "dim": 8}, "positional_encoding", {"transformer": 2, "layers": 2}, pool]
    if pool == "cls_pool":
        layers.insert(1, "cls_token")
    net = build(layers, shape=(7,))
    if pool == "attention_pool":
        nn.init.normal_(net[3].query)  # not the plain mean it starts as
    assert_rows_exact(net, padded_ids(LENGTHS), LENGTHS)


def test_poolings_against_plain_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    att = build(["attention_pool"], (5, 4), torch.float32)[0]
    nn.init.normal_(att.query)
    with torch.no_grad():
        got, _ = att(x, mask)
        w = (x[0, :3] @ att.query / 2).softmax(0)
        assert torch.allclose(got[0], (w.unsqueeze(1) * x[0, :3]).sum(0), atol=TOL)
        mean, _ = build(["mean_pool"], (5, 4), torch.float32)[0](x, mask)
        assert torch.allclose(mean[0], x[0, :3].mean(0), atol=TOL)
        cls = build(["cls_token", "cls_pool"], (5, 4), torch.float32)
        y, m = cls[0](x, mask)
        assert y.shape == (2, 6, 4) and m[:, 0].all() and torch.equal(y[:, 1:], x)
        assert torch.equal(cls[1](y, m)[0], y[:, 0])


def test_fully_padded_rows_stay_finite():
    net = build([{"embedding": 8}, {"transformer": 2}, "attention_pool"])
    with torch.no_grad():
        out = net(padded_ids([4, 0]))
    assert torch.isfinite(out).all() and torch.count_nonzero(out[1]) == 0


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "shape", "dtype", "vocab", "words"),
    [
        ([{"embedding": 12}, {"transformer": 5}], (None,), torch.long, VOCAB, ["heads 5", "12"]),
        ([{"embedding": 8}], (None, 3), torch.float32, VOCAB, ["token ids", "numeric"]),
        ([{"embedding": 8}], (None,), torch.long, None, ["vocabulary size", "set vocab"]),
        ([{"lstm": 8}], (None,), torch.long, VOCAB, ["(steps, features)", "embedding"]),
        ([{"conv1d": 4, "padding": "valid", "kernel": 5}], (3, 2), torch.float32, None, ["3 steps"]),
        ([{"embedding": 8}, {"transformer": {"activation": "nope"}}], (None,), torch.long, VOCAB, ["nope"]),
    ],
)  # fmt: skip
def test_spec_errors(layers, shape, dtype, vocab, words):
    with pytest.raises(SpecError) as err:
        build(layers, shape, dtype, vocab=vocab)
    for w in words:
        assert w in str(err.value)


def test_embedding_vocab_option_wins_without_data():
    assert build([{"embedding": {"dim": 4, "vocab": 7}}], vocab=None)[0].num_embeddings == 7


# ---- presets: build for text and series, ONNX parity with padding ------------------------------

PRESETS = ["rnn", "lstm", "gru", "transformer"]


@contextlib.contextmanager
def quiet():
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def onnx_parity(net: nn.Module, example: torch.Tensor, batches: list[torch.Tensor]) -> float:
    """Export with the dynamo exporter (dynamic batch and sequence length), run `batches` (other
    sizes than `example`) through onnxruntime; max abs difference from PyTorch."""
    import onnxruntime as ort
    from torch.export import Dim

    with quiet():
        program = torch.onnx.export(
            net, (example,), dynamo=True, opset_version=18,
            dynamic_shapes=({0: Dim("batch"), 1: Dim("seq")},),
        )  # fmt: skip
    dims = program.model_proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:2]] == ["batch", "seq"]  # not specialised to the example
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        program.model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    worst = 0.0
    for x in batches:
        with torch.no_grad():
            want = net(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_for_text_and_series(name):
    spec, _ = load_preset(name)
    assert spec.data == ["text", "series"]
    assert spec.training.grad_clip
    text = build_network(spec, (None,), 2, input_dtype=torch.long, data_info={"vocab_size": 50})
    series = build_network(spec, (None, 3), 2)
    assert text.output_shape == series.output_shape == (2,)
    assert isinstance(text.module[0], nn.Embedding)
    assert not isinstance(series.module[0], nn.Embedding)
    assert build_network(spec, (30,), 2).output_shape == (2,)  # (T,) floats: one feature per step


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_onnx_parity_text(name):
    torch.manual_seed(0)
    spec, _ = load_preset(name)
    net = build_network(spec, (None,), 2, input_dtype=torch.long, data_info={"vocab_size": 50})
    net = net.module.eval()
    batches = [padded_ids([9, 4, 1, 6], 11, seed=1), padded_ids([3], seed=2)]
    batches.append(padded_ids([20, 17, 2], 23, seed=3))
    diff = onnx_parity(net, padded_ids([5, 3], 6), batches)
    assert diff < TOL, diff


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_onnx_parity_series(name):
    torch.manual_seed(0)
    spec, _ = load_preset(name)
    net = build_network(spec, (None, 3), 2).module.eval()
    g = torch.Generator().manual_seed(4)
    batches = [torch.randn(n, t, 3, generator=g) for n, t in [(4, 11), (1, 1), (3, 23)]]
    diff = onnx_parity(net, torch.randn(2, 6, 3, generator=g), batches)
    assert diff < TOL, diff


@pytest.mark.slow
def test_other_sequence_layers_onnx_parity():
    """Uni-directional recurrences, strided conv and pooling, cls token, learned positions,
    post-norm: exported with the mask they update, for any batch and length."""
    torch.manual_seed(0)
    net = build(
        [
            {"embedding": 8},
            {"conv1d": 8, "kernel": 3, "stride": 2},
            {"maxpool1d": 2, "padding": "same"},
            {"gru": 8, "output": "all"},
            {"rnn": 8, "output": "all"},
            "cls_token",
            {"positional_encoding": {"learned": True, "max_length": 64}},
            {"transformer": {"heads": 2, "pre_norm": False}},
            "cls_pool",
        ],
        shape=(12,),  # built for a known length; exported for any
    )
    batches = [padded_ids([9, 4, 1, 6], 11, seed=1), padded_ids([30, 2], 33, seed=2)]
    assert onnx_parity(net, padded_ids([12, 5], 12), batches) < TOL


@pytest.mark.parametrize("layer", [{"conv1d": 4, "stride": 2}, {"maxpool1d": 2}, "cls_token"])
def test_length_changing_layers_build_for_variable_length(layer):
    assert build([{"embedding": 4}, layer, "mean_pool"]).training is False
