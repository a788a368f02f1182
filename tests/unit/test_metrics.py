"""dlcli.metrics checked against scikit-learn, and dlcli.report's run-folder files."""

from __future__ import annotations

import ast
import csv
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from dlcli import metrics, report

sk = pytest.importorskip("sklearn.metrics")
Image = pytest.importorskip("PIL.Image")

TOL = 1e-9
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSIFICATION_KEYS = {
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "log_loss",
    "roc_auc",
    "confusion_matrix",
    "per_class",
    "n",
}


# ---------------------------------------------------------------------------- helpers


def random_proba(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    logits = rng.normal(size=(n, c)) * 2.0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def names(c: int) -> list[str]:
    return [f"class_{i}" for i in range(c)]


def check_against_sklearn(y: np.ndarray, proba: np.ndarray, auc_expected: float | None) -> dict:
    """Compare every classification metric with sklearn; return ours for further checks."""
    c = proba.shape[1]
    labels = list(range(c))
    pred = proba.argmax(axis=1)
    got = metrics.classification_metrics(y, proba, names(c))

    assert set(got) == CLASSIFICATION_KEYS
    assert got["n"] == len(y) and type(got["n"]) is int
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes absent from y_true
        expected = {
            "accuracy": sk.accuracy_score(y, pred),
            "balanced_accuracy": sk.balanced_accuracy_score(y, pred),
            "log_loss": sk.log_loss(y, proba, labels=labels),
        }
    for avg_name, value in zip(
        ("precision_macro", "recall_macro", "f1_macro"),
        sk.precision_recall_fscore_support(
            y, pred, labels=labels, average="macro", zero_division=0
        )[:3],
        strict=True,
    ):
        expected[avg_name] = value
    for key, value in expected.items():
        assert type(got[key]) is float, key
        assert got[key] == pytest.approx(value, abs=TOL), key

    if auc_expected is None:
        assert got["roc_auc"] is None
    else:
        assert type(got["roc_auc"]) is float
        assert got["roc_auc"] == pytest.approx(auc_expected, abs=TOL)

    cm = sk.confusion_matrix(y, pred, labels=labels)
    assert got["confusion_matrix"] == cm.tolist()
    assert all(type(v) is int for row in got["confusion_matrix"] for v in row)

    p, r, f, s = sk.precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0
    )
    assert list(got["per_class"]) == names(c)
    for i, name in enumerate(names(c)):
        entry = got["per_class"][name]
        assert set(entry) == {"precision", "recall", "f1", "support"}
        assert entry["precision"] == pytest.approx(p[i], abs=TOL)
        assert entry["recall"] == pytest.approx(r[i], abs=TOL)
        assert entry["f1"] == pytest.approx(f[i], abs=TOL)
        assert entry["support"] == s[i] and type(entry["support"]) is int
    return got


def ovr_auc_over_present(y: np.ndarray, proba: np.ndarray) -> float:
    """Macro one-vs-rest AUC over the classes present in y, via sklearn's binary AUC."""
    present = np.unique(y)
    return float(np.mean([sk.roc_auc_score(y == k, proba[:, k]) for k in present]))


# ---------------------------------------------------------------------- classification


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_random_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    proba = random_proba(rng, 257, 2)
    y = (rng.random(257) < proba[:, 1] * 0.8 + 0.1).astype(int)
    check_against_sklearn(y, proba, sk.roc_auc_score(y, proba[:, 1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_four_class_random_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    proba = random_proba(rng, 400, 4)
    y = rng.integers(0, 4, 400)
    auc = sk.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=[0, 1, 2, 3])
    got = check_against_sklearn(y, proba, auc)
    assert sum(sum(row) for row in got["confusion_matrix"]) == 400


def test_class_never_predicted() -> None:
    rng = np.random.default_rng(3)
    proba = random_proba(rng, 200, 4)
    proba[:, 2] = 1e-6  # class 2 is in y_true but never the argmax
    proba /= proba.sum(axis=1, keepdims=True)
    y = rng.integers(0, 4, 200)
    assert 2 in y and 2 not in proba.argmax(axis=1)
    auc = sk.roc_auc_score(y, proba, multi_class="ovr", labels=[0, 1, 2, 3])
    got = check_against_sklearn(y, proba, auc)
    assert got["per_class"]["class_2"]["precision"] == 0.0
    assert got["per_class"]["class_2"]["recall"] == 0.0


def test_class_absent_from_truth_and_predictions() -> None:
    rng = np.random.default_rng(4)
    proba = random_proba(rng, 150, 4)
    proba[:, 2] = 1e-6
    proba /= proba.sum(axis=1, keepdims=True)
    y = rng.choice([0, 1, 3], 150)
    got = check_against_sklearn(y, proba, ovr_auc_over_present(y, proba))
    assert got["per_class"]["class_2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # macro averages include the empty class, so they sit below the mean over present classes
    present_f1 = np.mean([got["per_class"][f"class_{k}"]["f1"] for k in (0, 1, 3)])
    assert got["f1_macro"] == pytest.approx(present_f1 * 3 / 4, abs=TOL)


def test_predicted_class_absent_from_truth() -> None:
    # class 0 is predicted but never true: balanced accuracy ignores it, macro precision does not
    y = np.array([1, 1, 2, 2, 2])
    proba = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.1, 0.3], [0, 0, 1]]
    )
    got = check_against_sklearn(y, proba, ovr_auc_over_present(y, proba))
    assert got["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=TOL)


@pytest.mark.parametrize("c", [2, 5])
def test_perfect_predictions(c: int) -> None:
    y = np.arange(40) % c
    proba = np.eye(c)[y]
    got = check_against_sklearn(y, proba, 1.0)
    for key in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert got[key] == 1.0
    assert 0.0 <= got["log_loss"] < 1e-12
    assert got["confusion_matrix"] == np.diag(np.bincount(y, minlength=c)).tolist()


def test_auc_with_tied_scores() -> None:
    rng = np.random.default_rng(5)
    p1 = np.round(rng.random(300), 1)  # 11 distinct scores: heavy ties
    proba = np.column_stack([1 - p1, p1])
    y = (rng.random(300) < p1).astype(int)
    got = check_against_sklearn(y, proba, sk.roc_auc_score(y, p1))
    assert 0.5 < got["roc_auc"] < 1.0


def test_auc_all_scores_tied_is_half() -> None:
    y = np.array([0, 1, 0, 1, 1])
    proba = np.full((5, 2), 0.5)
    got = check_against_sklearn(y, proba, 0.5)
    assert got["roc_auc"] == 0.5


def test_auc_hand_computed() -> None:
    # positives score 0.8 and 0.4; negatives 0.4 and 0.1: pairs won 1 + 1 + 0.5 + 1 of 4
    y = np.array([1, 1, 0, 0])
    p1 = np.array([0.8, 0.4, 0.4, 0.1])
    got = metrics.classification_metrics(y, np.column_stack([1 - p1, p1]), ["no", "yes"])
    assert got["roc_auc"] == pytest.approx(3.5 / 4, abs=TOL)


def test_single_class_in_truth_gives_no_auc() -> None:
    rng = np.random.default_rng(6)
    proba = random_proba(rng, 30, 3)
    y = np.ones(30, dtype=int)
    check_against_sklearn(y, proba, None)


def test_log_loss_clips_at_1e_15() -> None:
    y = np.array([0, 1])
    proba = np.array([[0.0, 1.0], [0.0, 1.0]])  # first row: true class has probability 0
    got = metrics.classification_metrics(y, proba, ["a", "b"])
    expected = (-math.log(1e-15) - math.log(1 - 1e-15)) / 2
    assert got["log_loss"] == pytest.approx(expected, rel=1e-12)


def test_classification_accepts_float_labels_and_rejects_bad_input() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert metrics.classification_metrics(np.array([0.0, 1.0]), proba, ["a", "b"])["accuracy"] == 1
    with pytest.raises(ValueError):
        metrics.classification_metrics(np.array([0, 2]), proba, ["a", "b"])
    with pytest.raises(ValueError):
        metrics.classification_metrics(np.array([0, 1, 1]), proba, ["a", "b"])
    with pytest.raises(ValueError):
        metrics.classification_metrics(np.array([0, 1]), proba, ["a", "b", "c"])
    with pytest.raises(ValueError):
        metrics.classification_metrics(np.array([0.5, 1]), proba, ["a", "b"])


# -------------------------------------------------------------------------- regression


def check_regression(y: np.ndarray, pred: np.ndarray) -> dict:
    got = metrics.regression_metrics(y, pred)
    assert set(got) == {"mae", "rmse", "mse", "r2", "n"}
    assert got["n"] == len(y) and type(got["n"]) is int
    expected = {
        "mae": sk.mean_absolute_error(y, pred),
        "mse": sk.mean_squared_error(y, pred),
        "rmse": sk.root_mean_squared_error(y, pred),
        "r2": sk.r2_score(y, pred),
    }
    for key, value in expected.items():
        assert type(got[key]) is float, key
        assert got[key] == pytest.approx(value, abs=TOL), key
    return got


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_1d_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(3.0, 2.0, 500)
    got = check_regression(y, y + rng.normal(0, 0.7, 500))
    assert got["rmse"] == pytest.approx(math.sqrt(got["mse"]), abs=TOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_2d_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(300, 3)) * np.array([1.0, 10.0, 0.1])
    pred = y + rng.normal(size=(300, 3)) * np.array([0.5, 2.0, 0.3])
    got = check_regression(y, pred)
    # uniform average of per-output RMSEs, which is not sqrt of the averaged MSE
    assert got["rmse"] != pytest.approx(math.sqrt(got["mse"]), abs=1e-3)


def test_regression_perfect_and_constant_targets() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    got = check_regression(y, y.copy())
    assert got == {"mae": 0.0, "rmse": 0.0, "mse": 0.0, "r2": 1.0, "n": 4}
    const = np.full((4, 2), 5.0)
    check_regression(const, const.copy())  # r2 1.0 when a constant target is hit exactly
    got = check_regression(const, const + np.array([[0.0, 1.0]]))  # and 0.0 when missed
    assert got["r2"] == pytest.approx(0.5)


def test_regression_column_vector_and_short_input() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(size=50)
    pred = y + 0.1
    assert metrics.regression_metrics(y, pred[:, None]) == metrics.regression_metrics(y, pred)
    single = metrics.regression_metrics(np.array([2.0]), np.array([3.0]))
    assert single["r2"] is None and single["mae"] == 1.0
    with pytest.raises(ValueError):
        metrics.regression_metrics(y, pred[:10])


def test_metrics_module_imports_only_numpy() -> None:
    tree = ast.parse(Path(metrics.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "collections", "numpy"}, imported


# ------------------------------------------------------------------------------ report


def test_report_imports_matplotlib_lazily() -> None:
    code = "import sys, dlcli.report; sys.exit('matplotlib' in sys.modules)"
    root = str(Path(report.__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


HISTORY = [
    {"epoch": 1, "train_loss": 1.2, "val_loss": 1.3, "lr": 1e-3, "seconds": 2.5},
    {"epoch": 2, "train_loss": 0.8, "val_loss": 0.9, "val_accuracy": 0.61, "lr": 1e-3},
    {"epoch": 3, "train_loss": 0.5, "val_loss": 0.7, "val_accuracy": 0.74, "lr": 5e-4},
]


def assert_png(path: Path, min_width: int, min_height: int) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
    assert width >= min_width and height >= min_height, (width, height)
    assert width <= 4000 and height <= 4000, (width, height)
    return width, height


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_history_csv(tmp_path: Path) -> None:
    target = tmp_path / "history.csv"
    report.write_history_csv(target, HISTORY)
    with target.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["epoch", "train_loss", "val_loss", "lr", "seconds", "val_accuracy"]
    assert len(rows) == 1 + len(HISTORY)
    assert rows[1] == ["1", "1.2", "1.3", "0.001", "2.5", ""]
    assert rows[3][0] == "3" and rows[3][-1] == "0.74"
    report.write_history_csv(target, HISTORY[:1])  # overwrite in place
    assert len(target.read_text(encoding="utf-8").splitlines()) == 2
    assert no_temp_files(tmp_path)


def test_learning_curve_png(tmp_path: Path) -> None:
    target = tmp_path / "learning_curve.png"
    report.plot_learning_curve(target, HISTORY, "accuracy")
    width, height = assert_png(target, 400, 200)
    assert width > height  # two panels side by side
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize(
    "history",
    [
        [{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0, "val_accuracy": 0.5}],
        [{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.4}],
        [{"train_loss": 0.9, "val_loss": None}],
        [],
    ],
    ids=["one-epoch", "no-val-keys", "none-values", "empty"],
)
def test_learning_curve_edge_cases(tmp_path: Path, history: list[dict]) -> None:
    target = tmp_path / "lc.png"
    report.plot_learning_curve(target, history)
    assert_png(target, 300, 150)


def test_confusion_matrix_png(tmp_path: Path) -> None:
    small = tmp_path / "cm3.png"
    report.plot_confusion_matrix(small, [[5, 1, 0], [2, 7, 1], [0, 0, 9]], ["cat", "dog", "bird"])
    small_size = assert_png(small, 250, 250)

    rng = np.random.default_rng(9)
    big = tmp_path / "cm30.png"
    matrix = (np.diag(rng.integers(50, 100, 30)) + rng.integers(0, 3, (30, 30))).tolist()
    report.plot_confusion_matrix(big, matrix, [f"category_{i}" for i in range(30)], title="30")
    big_size = assert_png(big, 800, 800)
    assert big_size[0] > small_size[0]

    empty_row = tmp_path / "cm_empty_row.png"
    report.plot_confusion_matrix(empty_row, [[3, 1], [0, 0]], ["a", "b"])
    assert_png(empty_row, 200, 200)
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize(
    "matrix",
    [[[1, 2, 3], [4, 5, 6]], [["x", "y"], ["z", "w"]], [[1, 2], [3]]],
    ids=["wrong-shape", "not-numbers", "ragged"],
)
def test_failed_plot_leaves_existing_file_untouched(tmp_path: Path, matrix: list) -> None:
    target = tmp_path / "confusion_matrix.png"
    report.plot_confusion_matrix(target, [[4, 1], [2, 3]], ["a", "b"])
    before = target.read_bytes()
    with pytest.raises((ValueError, TypeError)):
        report.plot_confusion_matrix(target, matrix, ["a", "b"])
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_matrix.png"]


def test_failed_learning_curve_leaves_existing_file_untouched(tmp_path: Path) -> None:
    target = tmp_path / "learning_curve.png"
    target.write_bytes(b"previous run")
    with pytest.raises(ValueError):
        report.plot_learning_curve(target, [{"epoch": 1, "train_loss": "not a number"}])
    assert target.read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning_curve.png"]
