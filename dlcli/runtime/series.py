"""Series for an exported graph: a history CSV ('-' = stdin) -> the `series` windows of
docs/onnx.md ((N, window, F) float32 raw values), read, date-sorted and checked by
data/series_read.py exactly as `dl predict MODEL.pt` reads it, with the same pass-through column
(the predicted step's date, or `row`) and the same error lines; `--steps` rolls the graph forward
with engine/forecast.py's `roll_forward`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dlcli.data.series_read import (
    Series,
    input_chunks,
    long_enough,
    read_history,
    series_from_frame,
)
from dlcli.errors import InputError, ModelFileError
from dlcli.runtime.session import OnnxModel
from dlcli.runtime.tables import Labels


@dataclass
class SeriesInputs:
    """The features, window, horizon and date column of `dl.series.*`."""

    features: list[str]
    window: int
    horizon: int
    date_column: str | None
    target_name: str
    target: Labels
    kind: str = "series"
    prediction_columns: tuple[str, ...] = ()

    @property
    def target_index(self) -> int:
        return self.features.index(self.target_name)

    def read(self, path: str, need: int | None = None) -> Series:
        return read_history(path, self.date_column, self.features, self.window, need)

    def iter_inputs(
        self, paths: list[str], keep: bool = False
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """Per CSV, the windows ending at every row t (chunked): each predicts step t + horizon,
        named by its date (or `row`); with `keep`, that step's row as read."""
        for path in paths:
            yield from input_chunks(
                self.read(path), self.window, self.horizon, self.date_column, keep
            )

    def check_columns(self, header: list[str], source: str) -> None:
        """The line data/series_read.py gives for a history without the model's columns."""
        wanted = ([self.date_column] if self.date_column else []) + self.features
        missing = [c for c in wanted if c not in header]
        if missing:
            raise InputError(f"{source}: missing column(s) {', '.join(map(repr, missing))}")

    def windows(
        self, frame: pd.DataFrame, source: str, keep: bool = False
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """One history table (a `dl serve` request) -> (pass-through, (k, window, F) windows):
        what `iter_inputs` gives for the same rows in a file, in one piece."""
        ser = long_enough(
            series_from_frame(frame, source, self.date_column, self.features), source, self.window
        )
        parts = list(input_chunks(ser, self.window, self.horizon, self.date_column, keep))
        return pd.concat([p for p, _ in parts], ignore_index=True), np.concatenate(
            [x for _, x in parts]
        )

    def input_schema(self) -> dict[str, str]:
        """Column -> 'number' or 'string' (the serve OpenAPI schema): the date, then the features."""
        dates = {self.date_column: "string"} if self.date_column else {}
        return {**dates, **dict.fromkeys(self.features, "number")}

    def one_step(self, model: OnnxModel) -> Callable[[np.ndarray], float]:
        """(window, F) history -> the graph's next value (engine/forecast.py's `predict_one`)."""
        return lambda history: float(model.run(history[None])[0].reshape(-1)[0])


def encoder(model: OnnxModel) -> SeriesInputs:
    features = [str(c) for c in model.json("dl.series.features", [])]
    target = model.meta.get("dl.target")
    window = model.meta.get("dl.series.window", "")
    if not features or target not in features or not window.isdigit():
        raise ModelFileError(f"{model.path}: dl.series.* metadata this dl cannot use")
    date_column = model.json("dl.series.date_column")
    return SeriesInputs(
        features,
        int(window),
        int(model.meta.get("dl.series.horizon", "1")),
        None if date_column is None else str(date_column),
        str(target),
        Labels([]),
    )
