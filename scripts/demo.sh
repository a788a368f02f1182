#!/usr/bin/env bash
# `make demo`: the whole tool on the shipped penguins table, in demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
DL="$PWD/.venv/bin/dl"
rm -rf demo_out && mkdir -p demo_out
cp sample_data/penguins/train.csv demo_out/data.csv
cp sample_data/penguins/test.csv demo_out/test.csv
cp sample_data/penguins/rows.csv demo_out/rows.csv
cd demo_out
set -x
"$DL" build --arch mlp --input-shape 30 --outputs 2
"$DL" train data.csv --arch mlp
"$DL" evaluate model.pt test.csv
"$DL" predict model.pt rows.csv --proba | head -5
cat rows.csv | "$DL" predict model.pt - > out.csv
"$DL" export --onnx
set +x
echo
echo "demo done: demo_out/ holds model.pt, model.onnx, out.csv and model.run/ (metrics.csv, learning_curve.png, confusion_matrix.png)"
