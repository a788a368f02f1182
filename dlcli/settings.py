"""Every `DL_*` environment variable dl reads, in one table: name, what it accepts, default, meaning.

`get()` parses and checks them all at first use (never at import, so `dl --help` works whatever the
environment holds) and caches the result for as long as the variables keep their values; a bad value
is a UsageError (exit 2) in one line, e.g.
`DL_THREADS='abc': expected a positive whole number (torch threads for training on the CPU)`.
`debug()` is the one answer to "show tracebacks and the exporter's own output?": `--debug` (the CLI
calls `set_debug`) or DL_DEBUG. The README's "Environment variables" table is `markdown_table()`
(`python -m dlcli.settings` prints it).

Imports nothing heavy: `import dlcli.cli` must not load torch, numpy or pandas.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dlcli.errors import UsageError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse_bool(text: str) -> bool:
    word = text.lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise ValueError(text)


def parse_positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def parse_bytes(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def parse_gigabytes(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


def parse_url_base(text: str) -> str:
    if not text.startswith(("http://", "https://", "file://")) or any(c.isspace() for c in text):
        raise ValueError(text)
    return text if text.endswith("/") else text + "/"


def parse_folder(text: str) -> Path:
    path = Path(text).expanduser()
    if "\0" in text or (path.exists() and not path.is_dir()):
        raise ValueError(text)
    return path


@dataclass(frozen=True)
class Setting:
    """One environment variable: `field` of Settings, `parse` (raises ValueError on a bad value),
    `expected` (what a bad value is told it should be), `default` (when unset or blank; a function
    is called; None: dl decides, as `default_text` says) and `doc` (one line, in the README and in
    error lines)."""

    name: str
    field: str
    parse: Callable[[str], Any]
    expected: str
    default: Any
    default_text: str
    doc: str


MAX_IMAGE_MEMORY = 4 * 1024**3


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "dl" / "images"


BOOL = "1/0, true/false, yes/no or on/off"

TABLE: tuple[Setting, ...] = (
    Setting(
        "DL_DEBUG",
        "debug",
        parse_bool,
        BOOL,
        False,
        "off",
        "show full tracebacks and the ONNX exporter's own output, as --debug does",
    ),
    Setting(
        "DL_THREADS",
        "threads",
        parse_positive,
        "a positive whole number",
        None,
        "1 for small steps, else torch's default",
        "torch threads for training on the CPU",
    ),
    Setting(
        "DL_STOCK_OPTIMIZERS",
        "stock_optimizers",
        parse_bool,
        BOOL,
        False,
        "off",
        "use torch's optimizer classes unchanged, not dl's faster-starting subclasses",
    ),
    Setting(
        "DL_STREAM_BYTES",
        "stream_bytes",
        parse_bytes,
        "a whole number of bytes, 0 or more",
        None,
        "20% of the available memory",
        "size of a CSV file above which dl train streams it, when neither --stream nor --no-stream is given",
    ),
    Setting(
        "DL_SHUFFLE_ROWS",
        "shuffle_rows",
        parse_positive,
        "a positive whole number",
        None,
        "32 MB of inputs, at least 100,000 rows",
        "rows in the shuffle buffer of a streamed table",
    ),
    Setting(
        "DL_MAX_IMAGE_MEMORY",
        "max_image_memory",
        parse_bytes,
        "a whole number of bytes, 0 or more",
        MAX_IMAGE_MEMORY,
        f"{MAX_IMAGE_MEMORY} (4 GiB)",
        "bytes of decoded images held in memory; past it, images are decoded each epoch",
    ),
    Setting(
        "DL_MAX_MODEL_GB",
        "max_model_gb",
        parse_gigabytes,
        "a positive number of gigabytes",
        4.0,
        "4 (GB)",
        "memory a network may need to train (parameters, gradients, optimizer state, activations)"
        "; larger specs are refused, as --max-model-gb does",
    ),
    Setting(
        "DL_CACHE_DIR",
        "cache_dir",
        parse_folder,
        "a folder",
        default_cache_dir,
        "~/.cache/dl/images",
        "folder of the image decode cache",
    ),
    Setting(
        "DL_CACHE_MAX_GB",
        "cache_max_gb",
        parse_gigabytes,
        "a positive number of gigabytes",
        20.0,
        "20 (GB)",
        "size bound of DL_CACHE_DIR: after each write the least recently used cache files go",
    ),
    Setting(
        "DL_FEATURE_CACHE",
        "feature_cache",
        parse_bool,
        BOOL,
        True,
        "on",
        "train the layers after a --freeze prefix on its outputs computed once (kept in "
        "DL_CACHE_DIR/features); off: through the frozen layers every epoch",
    ),
    Setting(
        "DL_WEIGHTS_MIRROR",
        "weights_mirror",
        parse_url_base,
        "an http://, https:// or file:// URL",
        None,
        "https://download.pytorch.org/models/",
        "where --weights imagenet fetches the published files (same file names; a mirror, or a "
        "local folder as file:///path/)",
    ),
)


DEBUG = next(s for s in TABLE if s.name == "DL_DEBUG")


@dataclass(frozen=True)
class Settings:
    """The parsed values (fields named as in TABLE)."""

    debug: bool
    threads: int | None
    stock_optimizers: bool
    stream_bytes: int | None
    shuffle_rows: int | None
    max_image_memory: int
    max_model_gb: float
    cache_dir: Path
    cache_max_gb: float
    feature_cache: bool
    weights_mirror: str | None


def parse(setting: Setting, raw: str | None) -> Any:
    """`raw` (the variable's value, None when unset) -> its value; unset or blank -> the default."""
    if raw is None or not raw.strip():
        return setting.default() if callable(setting.default) else setting.default
    try:
        return setting.parse(raw.strip())
    except ValueError:
        raise UsageError(
            f"{setting.name}={raw!r}: expected {setting.expected}", setting.doc
        ) from None


def get() -> Settings:
    """All settings, parsed from the environment once (again only if a DL_* variable changed)."""
    return _read(tuple(os.environ.get(s.name) for s in TABLE))


@lru_cache(maxsize=4)
def _read(raw: tuple[str | None, ...]) -> Settings:
    return Settings(**{s.field: parse(s, v) for s, v in zip(TABLE, raw, strict=True)})


def reload() -> Settings:
    """Forget the cached values and read the environment again."""
    _read.cache_clear()
    return get()


_cli = {"debug": False}


def set_debug(on: bool) -> None:
    """The CLI's --debug flag, for this process."""
    _cli["debug"] = on


def debug(strict: bool = True) -> bool:
    """--debug or DL_DEBUG: full tracebacks, the exporter's output. `strict=False` (the CLI's error
    handler) never raises: a bad DL_DEBUG then counts as off."""
    if _cli["debug"]:
        return True
    if strict:
        return get().debug
    try:
        return bool(parse(DEBUG, os.environ.get(DEBUG.name)))
    except UsageError:
        return False


def markdown_table() -> str:
    """The README's table of environment variables."""
    rows = ["| Variable | Accepts | Default | Meaning |", "| --- | --- | --- | --- |"]
    for s in TABLE:
        rows.append(f"| `{s.name}` | {s.expected} | {s.default_text} | {s.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
