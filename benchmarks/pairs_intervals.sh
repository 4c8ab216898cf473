#!/usr/bin/env bash
# Bootstrap intervals for the real-photo benchmark table (docs/evaluation.md, "How sure a number is"): the maps that
# benchmarks/bench_pairs.py cached are scored again by `defocus evaluate --bootstrap`, every method paired against
# the first one named, on the whole photos of both sets and on their uniform crops.
#
#   benchmarks/pairs_intervals.sh ROOT CACHE SPLIT LABEL=METHOD_FOLDER [LABEL=METHOD_FOLDER ...]
#
# ROOT: the prepared data root (MFIFB/, DFD/); CACHE: bench_pairs.py's --cache; SPLIT: val or test;
# METHOD_FOLDER: a method's cached maps in one input mode, e.g. CACHE/bundled-7bbc578e8d/squash-no-upscale@512
# (bench_pairs.py must have scored that split in that mode first). Environment: RESAMPLES (default 2000).
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,12p "$0"; exit 2; }
root=$1 cache=$2 split=$3
shift 3
methods=("$@")
first=${methods[0]#*=}

# intervals NAME SUBFOLDER MASKS IGNORE LIST: every method's maps in METHOD_FOLDER/SUBFOLDER, scored with intervals
intervals() {
    local args=() spec
    for spec in "${methods[@]}"; do args+=(--label "${spec%%=*}" --pred "${spec#*=}/$2"); done
    echo "## $1"
    "${DEFOCUS:-defocus}" evaluate "${args[@]}" --gt "$3" --ignore "$4" --list "$5" --protocol standard \
        --dataset "$1" --bootstrap "${RESAMPLES:-2000}"
}

for set in mfifb dfd; do
    SET=$(echo "$set" | tr a-z A-Z)
    intervals "$set-$split" "$set" "$root/$SET/masks" "$root/$SET/ignore" "$first/$set/$set-$split.txt"
    crops=$cache/uniform/$set-$split
    for kind in blurred sharp; do
        [ -s "$crops/$kind.txt" ] || continue
        intervals "$set-$kind-$split" "$set-uniform" "$crops/masks" "$crops/ignore" "$crops/$kind.txt"
    done
done
