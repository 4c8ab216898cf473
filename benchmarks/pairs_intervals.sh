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
defocus=${DEFOCUS:-defocus}
resamples=${RESAMPLES:-2000}
first=${1#*=}
for set in mfifb dfd; do
    SET=$(echo "$set" | tr a-z A-Z)
    args=()
    for spec in "$@"; do args+=(--label "${spec%%=*}" --pred "${spec#*=}/$set"); done
    echo "## $set-$split"
    "$defocus" evaluate "${args[@]}" --gt "$root/$SET/masks" --ignore "$root/$SET/ignore" \
        --list "$first/$set/$set-$split.txt" --protocol standard --dataset "$set-$split" --bootstrap "$resamples"
    crops=$cache/uniform/$set-$split
    for kind in blurred sharp; do
        [ -s "$crops/$kind.txt" ] || continue
        args=()
        for spec in "$@"; do args+=(--label "${spec%%=*}" --pred "${spec#*=}/$set-uniform"); done
        echo "## $set-$kind-$split (crops)"
        "$defocus" evaluate "${args[@]}" --gt "$crops/masks" --ignore "$crops/ignore" --list "$crops/$kind.txt" \
            --protocol standard --dataset "$set-$kind-$split" --bootstrap "$resamples"
    done
done
