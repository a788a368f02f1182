"""Rich tables shared by train and evaluate."""

from __future__ import annotations

from typing import Any

NAMES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "precision_macro": "precision (macro)",
    "recall_macro": "recall (macro)",
    "f1_macro": "F1 (macro)",
    "log_loss": "log loss",
    "roc_auc": "ROC AUC",
    "mae": "MAE",
    "rmse": "RMSE",
    "mse": "MSE",
    "r2": "R²",
    "mape": "MAPE",
    # autoencoders (anomaly scores)
    "average_precision": "average precision",
    "precision_at_threshold": "precision at threshold",
    "recall_at_threshold": "recall at threshold",
    "f1_at_threshold": "F1 at threshold",
    "score_mean": "mean anomaly score",
    "score_median": "median anomaly score",
    "threshold": "anomaly threshold",
    "flagged_share": "share above threshold",
    # GANs
    "d_loss": "discriminator loss",
    "g_loss": "generator loss",
}


def metrics_table(metrics: dict, title: str) -> Any:
    """Known metrics in a fixed order; a forecast's naive last-value baseline side by side."""
    from rich.table import Table

    naive = any(k.startswith("naive_") for k in metrics)
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("model" if naive else "value", justify="right")
    if naive:
        table.add_column("naive last value", justify="right")
    for key, label in NAMES.items():
        v = metrics.get(key)
        if isinstance(v, (int, float)):
            row = [label, f"{v:.4f}"]
            if naive:
                b = metrics.get(f"naive_{key}")
                row.append(f"{b:.4f}" if isinstance(b, (int, float)) else "")
            table.add_row(*row)
    return table


def confusion_table(matrix: list[list[int]], classes: list[str]) -> Any:
    from rich.table import Table

    table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("")
    for c in classes:
        table.add_column(c, justify="right")
    for c, row in zip(classes, matrix, strict=False):
        table.add_row(c, *[str(v) for v in row])
    return table


def per_class_table(per_class: dict) -> Any:
    from rich.table import Table

    table = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, m in per_class.items():
        table.add_row(
            str(name),
            f"{m['precision']:.4f}",
            f"{m['recall']:.4f}",
            f"{m['f1']:.4f}",
            str(m["support"]),
        )
    return table
