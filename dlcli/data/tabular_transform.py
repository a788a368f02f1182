"""The torch side of the table encoding: `TabularTransform` turns the raw matrix (numbers as read,
NaN for missing; categories as codes) into model inputs, and `TabularReconstruction` maps an
autoencoder's output back to raw form. Both run in training, prediction and the ONNX graph.
"""

from __future__ import annotations

import torch
from torch import nn

from dlcli.data.columns import Column


class TabularTransform(nn.Module):
    """(N, F_raw) raw matrix -> (N, F_encoded) model input. Exported to ONNX as part of the graph."""

    def __init__(self, columns: list[Column]) -> None:
        super().__init__()
        num = [i for i, c in enumerate(columns) if c.kind == "numeric"]
        nums = [columns[i] for i in num]
        self.register_buffer("num_idx", torch.tensor(num, dtype=torch.long))
        self.register_buffer("fill", torch.tensor([c.fill for c in nums], dtype=torch.float32))
        self.register_buffer("mean", torch.tensor([c.mean for c in nums], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([c.std for c in nums], dtype=torch.float32))
        self.register_buffer(
            "ind_idx",
            torch.tensor([j for j, c in enumerate(nums) if c.indicator], dtype=torch.long),
        )
        slot_col, slot_code = [], []
        for i, c in enumerate(columns):
            if c.kind == "categorical":
                for code in range(len(c.categories) + 1):  # 0 = missing / unseen
                    slot_col.append(i)
                    slot_code.append(float(code))
        self.register_buffer("slot_col", torch.tensor(slot_col, dtype=torch.long))
        self.register_buffer("slot_code", torch.tensor(slot_code, dtype=torch.float32))
        self.n_num, self.n_ind, self.n_cat = len(num), len(self.ind_idx), len(slot_col)

    @property
    def out_features(self) -> int:
        return self.n_num + self.n_ind + self.n_cat

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, F_raw) -> (N, F_enc)
        parts = []
        if self.n_num:
            xn = x.index_select(1, self.num_idx)
            miss = torch.isnan(xn)
            xn = (torch.where(miss, self.fill, xn) - self.mean) / self.std
            parts.append(xn)
            if self.n_ind:
                parts.append(miss.index_select(1, self.ind_idx).to(x.dtype))
        if self.n_cat:
            parts.append((x.index_select(1, self.slot_col) == self.slot_code).to(x.dtype))
        return torch.cat(parts, dim=1)


class TabularReconstruction(nn.Module):
    """Autoencoder decoder output (N, F_enc) -> a raw-form row (N, F_raw): numbers back in their
    units, categorical columns as the code of the most likely category (0 = missing/unseen)."""

    def __init__(self, preprocess: TabularTransform, groups: list[int]) -> None:
        super().__init__()
        self.register_buffer("mean", preprocess.mean.clone())
        self.register_buffer("std", preprocess.std.clone())
        order = preprocess.num_idx.tolist() + sorted(set(preprocess.slot_col.tolist()))
        inverse = [0] * len(order)  # raw column j is column inverse[j] of [numbers | codes]
        for k, j in enumerate(order):
            inverse[j] = k
        self.register_buffer("inverse", torch.tensor(inverse, dtype=torch.long))
        self.groups, self.n_num = list(groups), int(preprocess.n_num)
        self.n_ind = int(preprocess.n_ind)

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        parts = [out[:, : self.n_num] * self.std + self.mean] if self.n_num else []
        start = self.n_num + self.n_ind
        for size in self.groups:
            parts.append(out[:, start : start + size].argmax(1, keepdim=True).to(out.dtype))
            start += size
        return torch.cat(parts, dim=1).index_select(1, self.inverse)
