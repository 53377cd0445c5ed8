#!/usr/bin/env bash
# The GPU benchmarks of issue 11 on one GPU (H100/H200), in under 8 minutes, from the repository root:
#   bash bench/gpu.sh                 # writes every JSON and log under $OUT (default /tmp/xlm_gpu_bench)
#   bash bench/gpu.sh --cpu-smoke     # the same steps at toy sizes on the CPU (under 3 minutes), to check it runs
# Needs: python with torch (CUDA build) and numpy; xlm importable (`pip install -e . --no-deps` is tried
# if it is not); pytest for the sync test. Nothing is downloaded: the data are generated.
# Steps (each one's failure is recorded and the next one runs):
#   1. the mlm_tlm_xnli15_1024 size (12 x 1024, bptt 256, bf16): MLM and TLM steps eager, MLM compiled, MLM
#      with the multi-tensor Adam instead of the fused kernel; MFU
#   2. MT and BT steps of the same size (encoder-decoder)
#   3. beam-5 and greedy decoding (6 x 512 encoder-decoder), translate.py end to end
#   4. the CUDA tests (pytest -k 'sync or cuda': the sync tests, the varlen kernel against masked attention,
#      NCCL collectives and a DDP step in a one-rank process group)
#   5. torchrun --nproc_per_node 1 train.py: MLM + AE + BT, ~200 steps on toy languages, bf16 (one rank
#      runs without a process group, as the original; NCCL among ranks needs a GPU each)
# then $OUT/gpu_results.json gathers them all.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1
OUT=${OUT:-/tmp/xlm_gpu_bench}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s)
log() { echo "[gpu.sh $(( $(date +%s) - start ))s] $*" | tee -a "$OUT/gpu.log" >&2; }
# run NAME CMD...: stdout (the JSON) to $OUT/NAME.json, stderr to $OUT/NAME.err; status in $OUT/status.txt
run() {
  local name=$1; shift
  log "$name: $*"
  local t0=$(date +%s)
  "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  local rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 ))" >> "$OUT/status.txt"
  [ $rc = 0 ] || { log "$name FAILED (rc $rc):"; tail -5 "$OUT/$name.err" >&2; }
}
: > "$OUT/status.txt"

log "python $(python -c 'import sys; print(sys.version.split()[0])'), $(python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())')"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/nvidia-smi.txt" >&2
python -c "import xlm" 2> /dev/null || { log "xlm not importable: pip install -e . --no-deps"; pip install -q -e . --no-deps --no-build-isolation >&2; }
if [ $SMOKE = 0 ] && ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  log "no CUDA device: run with --cpu-smoke on a CPU machine"; exit 1
fi

if [ $SMOKE = 1 ]; then
  SIZE=(--size tiny --batch_size 8 --bptt 32 --max_len 30 --steps 2 --warmup 1)
  MTBT_STEPS=2
  DECODE=(--emb_dim 64 --n_layers 2 --n_words 2000 --sentences 16 --batch_size 8 --bt_steps 1)
  NCCL=(--emb_dim 32 --n_layers 1 --n_heads 4 --batch_size 16 --epoch_size 480 --bf16 false)
  N_MONO=2000
else
  SIZE=(--size mlm_tlm_xnli15_1024 --bf16 --batch_size 32 --bptt 256 --max_len 100 --steps 20 --warmup 3)
  MTBT_STEPS=5
  DECODE=(--emb_dim 512 --n_layers 6 --n_words 32000 --sentences 1024 --batch_size 128 --bt_steps 5 --bf16)
  NCCL=(--emb_dim 256 --n_layers 4 --n_heads 8 --batch_size 32 --epoch_size 6400 --bf16 true)
  N_MONO=20000
fi

run train_eager python -m bench.train "${SIZE[@]}" --objectives mlm,tlm --out "$OUT/train_eager.json"
run train_compiled python -m bench.train "${SIZE[@]}" --compile --objectives mlm --out "$OUT/train_compiled.json"
# the same MLM step with the multi-tensor Adam instead of the fused kernel: what the kernel saves
run train_multi_tensor_adam python -m bench.train "${SIZE[@]}" --steps 10 --multi_tensor_adam \
  --objectives mlm --out "$OUT/train_multi_tensor_adam.json"
run train_mt_bt python -m bench.train "${SIZE[@]}" --steps $MTBT_STEPS --objectives mt,bt --out "$OUT/train_mt_bt.json"
run translate python -m bench.translate "${DECODE[@]}" --out "$OUT/translate.json"

# the tests that only run with a GPU (the sync tests, the varlen kernel against masked attention), and the
# CPU sync test beside them
CUDA_FILES=$(grep -l "torch.cuda.is_available()" tests/test_*.py 2> /dev/null | tr '\n' ' ')
if [ -n "$CUDA_FILES" ]; then
  log "CUDA tests: $CUDA_FILES"
  t0=$(date +%s)
  python -m pytest -q -rs -k "sync or cuda" $CUDA_FILES > "$OUT/sync_tests.txt" 2>&1
  echo "sync_tests rc=$? seconds=$(( $(date +%s) - t0 ))" >> "$OUT/status.txt"
  tail -3 "$OUT/sync_tests.txt" >&2
else
  log "CUDA tests: no test file checks torch.cuda.is_available()"
  echo "sync_tests absent" >> "$OUT/status.txt"
fi

# a one-process torchrun of train.py on toy languages (NCCL itself is tested in step 4)
TOY=$OUT/toy
if [ ! -f "$TOY/data/test.la-lb.lb.pth" ]; then
  python tools/toy_languages.py --out "$TOY/raw" --langs la,lb --typology svo,svo --n_mono $N_MONO --n_para 0 \
    --n_valid 200 --n_test 200 --n_cls_train 0 --n_cls_eval 0 --vocab_size 100 --compound_rate 0 > /dev/null
  mkdir -p "$TOY/data"
  python tools/fastbpe getvocab "$TOY/raw/mono/train.la" "$TOY/raw/mono/train.lb" > "$TOY/data/vocab"
  for split in train valid test; do
    for lg in la lb; do
      python preprocess.py "$TOY/data/vocab" "$TOY/raw/mono/$split.$lg" "$TOY/data/$split.$lg.pth" > /dev/null 2>&1
      [ $split = train ] || python preprocess.py "$TOY/data/vocab" "$TOY/raw/para/$split.la-lb.$lg" \
        "$TOY/data/$split.la-lb.$lg.pth" > /dev/null 2>&1
    done
  done
fi
log "nccl_run: torchrun --nproc_per_node 1 train.py (one process, no process group)"
t0=$(date +%s)
rm -rf "$TOY/dump"
torchrun --standalone --nproc_per_node 1 train.py --exp_name nccl --exp_id run --dump_path "$TOY/dump" \
  --data_path "$TOY/data" --lgs la-lb --encoder_only false --mlm_steps la,lb --ae_steps la,lb --bt_steps la-lb-la \
  --word_shuffle 3 --word_dropout 0.1 --word_blank 0.1 --gelu_activation true --dropout 0.1 --bptt 64 \
  --optimizer adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.001,warmup_updates=100 --max_epoch 1 --log_interval 20 \
  "${NCCL[@]}" > "$OUT/nccl_run.txt" 2>&1
echo "nccl_run rc=$? seconds=$(( $(date +%s) - t0 ))" >> "$OUT/status.txt"
cp "$TOY/dump/nccl/run/train.log" "$OUT/nccl_train.log" 2> /dev/null
grep -E "words/s|__log__" "$OUT/nccl_run.txt" | tail -3 >&2

python - "$OUT" > "$OUT/gpu_results.json" <<'PY'
import json, os, re, sys
out = sys.argv[1]
combined = {"status": {}, "results": {}}
for line in open(os.path.join(out, "status.txt")):
    name, *rest = line.split()
    combined["status"][name] = " ".join(rest)
for name in ("train_eager", "train_compiled", "train_multi_tensor_adam", "train_mt_bt", "translate"):
    try:
        combined["results"][name] = json.load(open(os.path.join(out, name + ".json")))
    except (OSError, ValueError) as e:
        combined["results"][name] = {"error": str(e)}
sync = os.path.join(out, "sync_tests.txt")
combined["results"]["sync_tests"] = open(sync).read().strip().splitlines()[-1:] if os.path.exists(sync) else "absent"
log = open(os.path.join(out, "nccl_run.txt"), errors="replace").read() if os.path.exists(os.path.join(out, "nccl_run.txt")) else ""
progress = re.findall(r"(\d+) - +([\d.]+) sent/s - +([\d.]+) words/s", log)
scores = [json.loads(l.split("__log__:", 1)[1]) for l in log.splitlines() if "__log__:" in l]
combined["results"]["nccl_run"] = {"last_progress": progress[-1] if progress else None, "scores": scores,
                                   "tail": log.strip().splitlines()[-3:]}
print(json.dumps(combined, indent=1))
PY
log "done: $OUT/gpu_results.json"
cat "$OUT/status.txt" >&2
