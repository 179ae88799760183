#!/usr/bin/env bash
# docs/results.md "The same bench on a quiet machine, with compact's int8": every peer row and compact's default int8
# of the protocol's fine-tuned SST-2 model, in one `compact bench --task` run; nothing else may run meanwhile.
# FT: the fp32 model of `compact run recipes/glue/sst2.yaml` (seed 1); OUT: a folder for compact's int8 folder.
set -eu
GLUE=${GLUE:-../shared/data/glue_data}
FT=${FT:?set FT to RUN/seed-1/model}
OUT=${OUT:?set OUT to a scratch folder}
[ -f "$OUT/int8_default/model.ort" ] || compact quantize "$FT" "$OUT/int8_default" --task sst2 --glue-dir "$GLUE"
VARIANTS=(--variant "compact int8, its default (per-row FFN output scales)=$OUT/int8_default")
[ -n "${COMBINED:-}" ] && VARIANTS+=(--variant "compact combined: HAT 50% + token pruning + int8 QAT=$COMBINED")
compact bench --task sst2 --glue-dir "$GLUE" --fp32 "$FT" --threads 1 "${VARIANTS[@]}" \
  --out "bench/results/${NAME:-compare_sst2_quiet}"
