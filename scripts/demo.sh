#!/usr/bin/env bash
# The main job end to end on real photos: what `make demo` runs.
set -euo pipefail
MTL="${BIN:-.venv/bin}/mtl"
DATA="${DATA-../shared/data/hymenoptera/train}"
ALPHA="${MTL_ALPHA:-1.0}"
OUT="${OUT:-demo}"

if [ -z "$DATA" ] || { [ ! -d "$DATA" ] && [ "$DATA" = ../shared/data/hymenoptera/train ]; }; then
  # No local copy: the public set, downloaded once, verified and cached, copied under $OUT.
  echo "== 0/3 the hymenoptera photos (mtl fetch --dataset hymenoptera)"
  "$MTL" fetch --dataset hymenoptera --out "$OUT/data"
  DATA="$OUT/data/hymenoptera/train"
fi
if [ ! -d "$DATA" ]; then
  echo "demo: no dataset at $DATA; set DATA=folder-per-class photos (or run mtl fetch first)" >&2
  exit 2
fi
# awk, not head -1: it reads everything, so sort never dies of SIGPIPE under pipefail.
ant=$(find "$DATA" -type f -iname '*.jpg' -path '*ants*' | sort | awk 'NR == 1')
bee=$(find "$DATA" -type f -iname '*.jpg' -path '*bees*' | sort | awk 'NR == 1')

echo "== 1/3 ImageNet classification with a pretrained MobileNet (alpha $ALPHA)"
"$MTL" classify --alpha "$ALPHA" --top-k 3 "$ant" "$bee"

echo "== 2/3 transfer learning on $DATA (defaults; --no-refit keeps the validation photos unseen)"
"$MTL" train "$DATA" --alpha "$ALPHA" --no-refit --out "$OUT/run" --force

echo "== 3/3 predicting held-out photos (the run's validation split) with the trained model"
# split.csv's paths are relative to the run folder (absolute only across drives).
mapfile -t held_out < <(awk -F, -v run="$OUT/run" '$3 == "val" {print ($1 ~ /^\// ? $1 : run "/" $1)}' \
  "$OUT/run/split.csv" | sort | awk 'NR % 8 == 1')
"$MTL" predict "$OUT/run/model.keras" "${held_out[@]}"
echo "demo: done; the run folder is $OUT/run"
