#!/usr/bin/env bash
# Accuracy of a checkpoint (default: the bundled model) on the real 320x320 samples in ../shared/data
# (5 CUHK-TE-1 + 5 DUT test images), paper protocol, side by side with the published AENet and EFENet maps.
#   benchmarks/bench_bundled_accuracy.sh [CHECKPOINT] [LABEL]
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-default}
LABEL=${2:-DFFNet-Lite2 (bundled)}
S=${DEFOCUS_SHARED:-../shared}/data
for set in CUHK DUT; do
  if [ $set = CUHK ]; then D=$S/CUHK/TE-1_btbnet320_samples; R=CUHK-TE-1_btbnet320; else D=$S/DUT/test_samples; R=DUT; fi
  echo "## $set samples (5 images, 320x320, paper protocol)"
  defocus evaluate --model "$CKPT" --label "$LABEL" --images $D/images --gt $D/masks --dataset "$set-5" --device cpu
  defocus evaluate --pred $S/results/AENet/$R --pred $S/results/EFENet/$R --label AENet --label EFENet --gt $D/masks --dataset "$set-5"
done
