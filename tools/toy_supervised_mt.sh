#!/usr/bin/env bash
# Toy reproduction of the paper's supervised MT result (Lample & Conneau 2019, Table 3: initialising an
# encoder-decoder from a pretrained cross-lingual MLM(+TLM) helps supervised translation), on the bundled
# real English-French sample (data/sample, ~20k parallel sentences of software messages).
#
#   1. run-sample.sh with PRETRAIN=0: tokenize, joint BPE (8000 codes), vocabulary, binarize into $OUT/data
#   2. MLM+TLM pretraining on the same data (--mlm_steps en,fr,en-fr: the monolingual sides and the
#      parallel pairs) with run-sample.sh's flags: emb 64, 2 layers, 4 heads, batches of 64 x 8 tokens,
#      lr 0.005 with warm-up 500, 5,000 updates, which take it well off the early MLM plateau (README, "The
#      early MLM plateau"; the former 32 x 32 batches at lr 0.002 stayed on it: valid ppl 824 ± 31)
#   3. supervised en->fr translation training (--encoder_only false --mt_steps en-fr), twice, with the
#      same model size and schedule, concurrently (one thread each): from a random initialisation and
#      from the MLM+TLM model (--reload_model mlm.pth,mlm.pth)
#   4. a table of the tokenized BLEU logged by train.py (valid/test_en-fr_mt_bleu, multi-bleu on
#      BPE-merged tokenized text) and the valid perplexity at the last epoch.
#
# Each cell (the pretraining included) runs for seeds 1..SEEDS (train.py --seed); the data is the bundled
# sample, the same for every seed, so the spread is that of training alone. The table gives mean ± sd
# (sample sd) over the seeds; the per-seed values go to $OUT/results.json.
#
# Usage: bash tools/toy_supervised_mt.sh
# Env knobs: OUT (work folder, default /tmp/toy_supmt), SEEDS (default 3), N_CODES (BPE codes, default 8000:
#   run-sample.sh's), MLM_EPOCHS (pretraining epochs of 500 updates, default 10), MT_EPOCHS (translation
#   epochs, default 4), MLM_EPOCH_SIZE (default 32000 windows), MT_EPOCH_SIZE (sentences a translation
#   epoch, default 6400 = 200 updates), JOBS (runs at once, one thread each, default 2).
# Idempotent: every step whose output exists is skipped (a finished training run ends at once, an
# interrupted one resumes from its checkpoint).
#
# Measured with the defaults (SEEDS=3, 7 min 19 s wall on the 2 cores of a Zen 5, d83865a): MLM+TLM valid ppl
# 256 ± 4; at the last epoch, valid / test BLEU en->fr and valid ppl, mean ± sd: random 1.84 ± 0.38 / 1.74 ±
# 0.24 / 178.9 ± 8.4, MLM+TLM 4.65 ± 1.03 / 4.23 ± 1.01 / 71.2 ± 1.2 (README.md, "Toy reproductions").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/toy_supmt}
SEEDS=${SEEDS:-3}
MLM_EPOCHS=${MLM_EPOCHS:-10}
MT_EPOCHS=${MT_EPOCHS:-4}
MT_EPOCH_SIZE=${MT_EPOCH_SIZE:-6400}
MLM_EPOCH_SIZE=${MLM_EPOCH_SIZE:-32000}
source tools/jobs.sh  # run_job, wait_jobs: $JOBS (default 2) at a time
export OMP_NUM_THREADS=1
DATA=$OUT/data
mkdir -p "$OUT"
start=$(date +%s)

# 1. data (run-sample.sh skips what exists)
OUT=$DATA PRETRAIN=0 bash run-sample.sh | grep -vE "^(tokenize|learn)" || true
echo "data ready after $(( $(date +%s) - start )) s"

MODEL="--emb_dim 64 --n_layers 2 --n_heads 4 --gelu_activation true --dropout 0.1"
pretrain() {  # seed: 2. MLM+TLM pretraining
  local dump=$OUT/seed$1/dumped
  [ -f "$dump/sample_mlm_tlm/mlm_tlm/done" ] && return
  python train.py --exp_name sample_mlm_tlm --exp_id mlm_tlm --dump_path "$dump" --seed "$1" \
    --data_path "$DATA" --lgs en-fr --mlm_steps en,fr,en-fr $MODEL --attention_dropout 0.1 --batch_size 64 --bptt 8 --max_len 60 \
    --optimizer adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.005,warmup_updates=500 --epoch_size "$MLM_EPOCH_SIZE" \
    --max_epoch "$MLM_EPOCHS" --validation_metrics _valid_mlm_ppl --log_interval 50 > "$OUT/seed$1/mlm_tlm.out" 2>&1
  touch "$dump/sample_mlm_tlm/mlm_tlm/done"
}
# 3. supervised MT, from scratch and from the MLM+TLM (same architecture as the pretrained model)
MT="--lgs en-fr --encoder_only false --mt_steps en-fr --max_len 60 --tokens_per_batch 1500 --batch_size 32
  --optimizer adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.001,warmup_updates=200 --epoch_size $MT_EPOCH_SIZE
  --max_epoch $MT_EPOCHS --eval_bleu true --validation_metrics valid_en-fr_mt_bleu --log_interval 50"
mt() {  # seed, init (random or pretrained)
  local dump=$OUT/seed$1/dumped reload=""
  [ -f "$dump/sup_mt/$2/done" ] && return
  local mlm=$dump/sample_mlm_tlm/mlm_tlm/best-valid_mlm_ppl.pth
  [ "$2" = pretrained ] && reload="--reload_model $mlm,$mlm"
  python train.py --exp_name sup_mt --exp_id "$2" --dump_path "$dump" --data_path "$DATA" --seed "$1" \
    $MODEL --attention_dropout 0 $MT $reload > "$OUT/seed$1/mt_$2.out" 2>&1
  touch "$dump/sup_mt/$2/done"
}

# per seed, two jobs: the pretraining then MT from it, and MT from random weights
for seed in $(seq 1 "$SEEDS"); do
  mkdir -p "$OUT/seed$seed"
  for job in "pretrain $seed && mt $seed pretrained" "mt $seed random"; do
    run_job eval "$job"
  done
done
wait_jobs
echo "trained after $(( $(date +%s) - start )) s"

# 4. results, from the runs' logs
echo "MLM+TLM pretraining (best valid epoch), mean ± sd over $SEEDS seeds:"
python tools/seed_table.py --seeds "$SEEDS" --first model --best valid_mlm_ppl --lowest --columns valid_mlm_ppl \
  "MLM+TLM=$OUT/seed{seed}/dumped/sample_mlm_tlm/mlm_tlm/train.log"
echo "Tokenized BLEU en→fr (greedy) and valid perplexity at the last epoch ($(( MT_EPOCHS - 1 ))), mean ± sd over $SEEDS seeds:"
python tools/seed_table.py --seeds "$SEEDS" --first initialisation --json "$OUT/results.json" \
  --columns "valid_en-fr_mt_bleu=valid BLEU,test_en-fr_mt_bleu=test BLEU,valid_en-fr_mt_ppl=valid ppl" \
  "random=$OUT/seed{seed}/dumped/sup_mt/random/train.log" "MLM+TLM=$OUT/seed{seed}/dumped/sup_mt/pretrained/train.log"
echo "per-seed values: $OUT/results.json; total wall time: $(( $(date +%s) - start )) s"
