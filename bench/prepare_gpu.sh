#!/usr/bin/env bash
# Makes here what bench/gpu.sh needs on the project's device machine and the working tree lacks (that machine
# reaches no registry): sacremoses as a wheel in .whl/ (the tests' sample data need it; its own needs are
# in the device image), the original XLM patched for current PyTorch in .orig/ (gpu.sh's steps 3 and 8), and the
# compiled fastBPE (tools/fastBPE/). All three are ignored by git. Then the call, printed at the end:
#   bash bench/prepare_gpu.sh GIT_DIR   # GIT_DIR: what `fetch github:facebookresearch/XLM` returned
set -euo pipefail
cd "$(dirname "$0")/.."
original=${1:?usage: bash bench/prepare_gpu.sh GIT_DIR_OF_THE_ORIGINAL_XLM}
rm -rf .whl
python -m pip download -q --no-deps --only-binary=:all: sacremoses==0.2.0 -d .whl
rm -rf .orig
bash bench/patch_original.sh "$original" .orig
bash tools/install_fastbpe.sh
du -sh .whl .orig tools/fastBPE
echo 'ready: run(command="bash bench/gpu.sh", carry=[".whl", ".orig", "tools/fastBPE"], timeout_s=600)'
