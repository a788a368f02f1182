"""Pretrained word vectors in a network (`dl train --embeddings FILE`): the spec's token-embedding
layer takes the file's dimension and the name `embeddings` (so `--freeze embeddings` selects it),
and its table starts from the vectors (read by data/word_vectors.py): matched words copied,
other words drawn at random with each dimension's mean and spread over the matched vectors,
padding zero. The vectors then are the layer's weights: the model file holds them, not the path.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dlcli.console import info, note
from dlcli.data.word_vectors import coverage, read_vectors, vector_dim
from dlcli.errors import InputError, UsageError
from dlcli.spec.schema import parse_layer, parse_spec

NAME = "embeddings"  # the module name the embedding layer gets (--freeze embeddings)


@dataclass(frozen=True)
class EmbeddingLayer:
    """The first top-level layer of a spec that embeds token ids."""

    index: int
    name: str  # its module name in the network
    dim: int
    type_name: str


def find_layer(spec_doc: dict) -> EmbeddingLayer | None:
    for i, raw in enumerate(spec_doc.get("layers") or []):
        entry = parse_layer(raw, f"layers[{i}]")
        if entry.layerdef.embeds_tokens:
            return EmbeddingLayer(i, entry.opts.name or str(i), entry.opts.dim, entry.type_name)
    return None


def fit_spec(spec_doc: dict, path: str, label: str, fixed: bool) -> tuple[Any, dict]:
    """The spec (parsed, document) with its embedding layer as wide as the vectors in `path` and
    named `embeddings` (unless it has a name). A preset's other width is overridden with a note;
    a user's spec (`fixed`) that sets another width is refused."""
    dim = vector_dim(path)
    layer = find_layer(spec_doc)
    if layer is None:
        raise UsageError(
            f"--embeddings {path}: {label} has no layer that embeds token ids",
            "start its layers with embedding, input_embedding or bag",
        )
    where = f"layers[{layer.index}] ({layer.type_name})"
    if layer.dim != dim:
        if fixed:
            raise UsageError(
                f"--embeddings {path}: the vectors have {dim} dimensions but {label} {where} "
                f"has dim {layer.dim}",
                f"set its dim to {dim}",
            )
        note(
            f"--embeddings: {label} {where} is {dim} wide, the vectors' dimension (was {layer.dim})"
        )
    doc = copy.deepcopy(spec_doc)
    raw = doc["layers"][layer.index]
    opts = parse_layer(raw, where).opts.model_dump(exclude_unset=True)
    opts.pop("dim", None)
    opts["name"] = opts.get("name") or NAME
    doc["layers"][layer.index] = {layer.type_name: dim, **opts}
    if not fixed:
        fit_heads(doc, layer.index, dim, label)
    return parse_spec(doc, label), doc


def fit_heads(doc: dict, start: int, dim: int, label: str) -> None:
    """A preset's attention layers after the embedding (`heads: 4` of the transformer preset)
    take the largest head count that divides the vectors' width and is not above the preset's
    (25-wide vectors: 1 head), with a note; a user's spec keeps its own and is refused at build."""
    for i in range(start + 1, len(doc["layers"])):
        where = f"layers[{i}]"
        entry = parse_layer(doc["layers"][i], where)
        heads = getattr(entry.opts, "heads", None)
        if not isinstance(heads, int) or dim % heads == 0:
            continue
        fitted = max(h for h in range(1, heads + 1) if dim % h == 0)
        opts = entry.opts.model_dump(exclude_unset=True)
        doc["layers"][i] = {"type": entry.type_name, **opts, "heads": fitted}
        noun = "head" if fitted == 1 else "heads"
        note(
            f"--embeddings: {label} {where} ({entry.type_name}) has {fitted} {noun}, a divisor "
            f"of the vectors' dimension {dim} (was {heads})"
        )


def embedding_table(network: nn.Module, spec_doc: dict, vocab_size: int) -> tuple[str, nn.Module]:
    """(parameter name, table) of the network's token-embedding table."""
    layer = find_layer(spec_doc)
    module = network.get_submodule(layer.name) if layer else None
    tables = [
        (".".join(p for p in (layer.name, sub, "weight") if p), m)
        for sub, m in (module.named_modules() if module is not None else ())
        if isinstance(m, nn.Embedding) and m.num_embeddings == vocab_size
    ]
    if not tables:
        raise UsageError("--embeddings: the network has no table of the vocabulary's token ids")
    return tables[0]


def initialise(
    table: nn.Embedding, rows: dict[int, np.ndarray], generator: torch.Generator
) -> None:
    """Rows of known words copied; the rest (unknown and the ids' other words) random with each
    dimension's mean and standard deviation over the known ones; row 0 (padding) zero."""
    found = sorted(rows)
    known = torch.from_numpy(np.stack([rows[i] for i in found]))  # (F, D)
    mean = known.mean(0)
    spread = known.std(0) if len(found) > 1 else known.abs().mean().expand_as(mean)
    weight = mean + spread * torch.randn(table.weight.shape, generator=generator)  # (V, D)
    weight[found] = known
    weight[0] = 0.0
    with torch.no_grad():
        table.weight.copy_(weight.to(table.weight.dtype))


def load_vectors(
    network: nn.Module,
    spec_doc: dict,
    path: str,
    vocab: list[str],
    train_ids: torch.Tensor,
    seed: int,
) -> tuple[set[str], dict]:
    """Read the vectors of `vocab` from `path` into the network's embedding table and log the
    coverage; returns (the tensor names loaded, the figures the model file keeps)."""
    name, table = embedding_table(network, spec_doc, len(vocab))
    got = read_vectors(path, vocab)
    words = len(vocab) - 2  # besides padding and unknown
    if not got.rows:
        raise InputError(
            f"{path}: none of the {words:,} vocabulary words has a vector in it",
            "give vectors of the training texts' language (and --tokenizer word)",
        )
    if got.dim != table.embedding_dim:
        raise UsageError(
            f"--embeddings {path}: {got.dim}-wide vectors for a {table.embedding_dim}-wide layer"
        )
    initialise(table, got.rows, torch.Generator().manual_seed(int(seed)))
    ids = train_ids[train_ids != 0].cpu()
    counts = torch.bincount(ids, minlength=len(vocab)).numpy()
    share, tokens = coverage(set(got.rows), counts, words)
    folded = f", {got.folded:,} of them in lower case" if got.folded else ""
    info(
        f"--embeddings: {len(got.rows):,} of {words:,} vocabulary words ({share:.1%}) found in "
        f"{path}{folded}; covering {tokens:.1%} of training tokens"
    )
    stats = {
        "dim": got.dim,
        "vocabulary_words": words,
        "found": len(got.rows),
        "lower_case": got.folded,
        "token_coverage": round(tokens, 6),
    }
    return {name}, stats
