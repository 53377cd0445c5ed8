#!/usr/bin/env bash
# Makes a copy of the original XLM (facebookresearch/XLM, last commit cd281d3) run on current PyTorch, for the
# side-by-side benches (bench.compare_original, compare_flags, compare_decoding, gpu.sh's steps 3 and 8). The copy
# stays outside the repository (or in the ignored .orig/); nothing of it is committed.
#   bash bench/patch_original.sh GIT_DIR_OR_FOLDER DEST   # e.g. a mirror's git dir and /work/orig-cpu
# Three changes, the least that makes it run; what is left to do at run time (no apex, `.cuda()` on a
# CPU, torch.load of its own pickles) is done by bench/run_original.py and compare_original.import_original:
# - its masks are uint8, which masked_scatter, masked_fill_ and indexing refuse since PyTorch 2: made bool
#   (the same positions);
# - `inspect.getargspec`, gone since Python 3.11: getfullargspec, whose first field is the same list;
# - --sinusoidal_embeddings wrote into the embedding weight in place, which autograd refuses now for a leaf
#   that requires grad: written through `.data` (the same values).
set -euo pipefail
src=${1:?usage: bash bench/patch_original.sh GIT_DIR_OR_FOLDER DEST}
dest=${2:?usage: bash bench/patch_original.sh GIT_DIR_OR_FOLDER DEST}
[ -e "$dest" ] && { echo "$dest exists: remove it first" >&2; exit 1; }
mkdir -p "$dest"
if [ -f "$src/HEAD" ] && git --git-dir="$src" rev-parse HEAD > /dev/null 2>&1; then
  git --git-dir="$src" archive HEAD | tar x -C "$dest"
else
  cp -r "$src"/. "$dest"
fi
cd "$dest"
[ -f xlm/trainer.py ] || { echo "$src: not the original XLM (no xlm/trainer.py)" >&2; exit 1; }
sed -i 's/astype(np\.uint8)/astype(bool)/' xlm/trainer.py xlm/evaluation/evaluator.py
sed -i 's/dtype=torch\.uint8/dtype=torch.bool/' xlm/trainer.py
sed -i 's/unfinished_sents\.byte()/unfinished_sents.bool()/' xlm/model/transformer.py
sed -i 's/inspect\.getargspec(/inspect.getfullargspec(/' xlm/optim.py
sed -i 's/^    out\[:, \([01]\)::2\] = torch/    out.data[:, \1::2] = torch/' xlm/model/transformer.py
left=$(grep -rn 'np\.uint8\|torch\.uint8\|\.byte()\|getargspec(\|^    out\[:' --include=*.py xlm || true)
[ -z "$left" ] || { echo "not patched (another version of the original?):" >&2; echo "$left" >&2; exit 1; }
echo "$dest: the original XLM, patched for current PyTorch"
