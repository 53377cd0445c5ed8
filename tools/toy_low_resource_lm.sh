#!/usr/bin/env bash
# Toy reproduction of the paper's low-resource language modelling result (Lample & Conneau 2019, §5.5,
# Table 4: the CLM perplexity of Nepali falls when English data is added, more with Hindi, most with both).
#
# Three synthetic languages with one latent grammar (tools/toy_languages.py):
#   la  the low-resource language: a small corpus (N_LOW sentences), SVO
#   lb  related to la (the Hindi of the paper): SVO too, and keeps la's word for a share SHARE of the
#       concepts (--cognates lb=la:SHARE), N_MONO sentences
#   lc  less related (the English): verb-final with postpositions, no word shared beyond the anchors
#       (names, digits, "."), N_MONO sentences
# The same CLM (2 layers, 128 dimensions, one vocabulary for all cells) is trained with --clm_steps la,
# la+lc, la+lb and la+lb+lc, for the same number of updates (the languages share them); the table gives
# la's valid and test perplexity at the epoch of the lowest valid perplexity, mean ± sd over the seeds.
# Each seed draws new languages (toy_languages.py --seed SEED-1) and a new training run (train.py --seed
# SEED): the spread covers both, and the cells of one seed share their data.
#
#   bash tools/toy_low_resource_lm.sh              # OUT=/tmp/toy_lowres_lm, SEEDS=3
# Knobs: OUT, SEEDS, N_LOW, N_MONO, SHARE, VOCAB_SIZE (concepts), EPOCHS, EPOCH_SIZE (sentences an
# epoch), JOBS (runs at once, one thread each; default 2), CELLS (NAME:CLM_STEPS ..., default all four).
# Idempotent: steps whose outputs exist are skipped, a finished run ends at once.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/toy_lowres_lm}
SEEDS=${SEEDS:-3}
N_LOW=${N_LOW:-2000}
N_MONO=${N_MONO:-20000}
SHARE=${SHARE:-0.5}
VOCAB_SIZE=${VOCAB_SIZE:-200}
EPOCHS=${EPOCHS:-5}
EPOCH_SIZE=${EPOCH_SIZE:-12800}
source tools/jobs.sh  # run_job, wait_jobs: $JOBS (default 2) at a time
export OMP_NUM_THREADS=1
start=$(date +%s)

data() {  # seed: languages, vocabulary (all three languages, shared by the cells) and binarized files
  local raw=$OUT/seed$1/raw data=$OUT/seed$1/processed
  mkdir -p "$data"
  [ -f "$raw/README.txt" ] || python tools/toy_languages.py --out "$raw" --langs la,lb,lc --typology svo,svo,sov \
    --cognates "lb=la:$SHARE" --n_mono "$N_MONO" --n_para 0 --n_valid 500 --n_test 500 --n_cls_train 0 \
    --n_cls_eval 0 --vocab_size "$VOCAB_SIZE" --seed $(( $1 - 1 )) > /dev/null
  # the low-resource corpus: the first N_LOW sentences of la
  [ -f "$raw/low.la" ] || head -n "$N_LOW" "$raw/mono/train.la" > "$raw/low.la"
  [ -f "$data/vocab" ] || python tools/fastbpe getvocab "$raw/low.la" "$raw/mono/train.lb" "$raw/mono/train.lc" > "$data/vocab"
  for lg in la lb lc; do
    for split in train valid test; do
      local src=$raw/mono/$split.$lg
      [ $split$lg = trainla ] && src=$raw/low.la
      # quiet unless it fails
      [ -f "$data/$split.$lg.pth" ] || python preprocess.py "$data/vocab" "$src" "$data/$split.$lg.pth" > /dev/null 2>&1 \
        || python preprocess.py "$data/vocab" "$src" "$data/$split.$lg.pth"
    done
  done
}

MODEL="--emb_dim 128 --n_layers 2 --n_heads 4 --gelu_activation true --dropout 0.1 --attention_dropout 0"
cell() {  # seed, name, --clm_steps
  local dump=$OUT/seed$1/dumped
  [ -f "$dump/toy_lowres/$2/done" ] && return
  python train.py --exp_name toy_lowres --exp_id "$2" --dump_path "$dump" --data_path "$OUT/seed$1/processed" \
    --lgs la-lb-lc --clm_steps "$3" $MODEL --batch_size 64 --bptt 32 --seed "$1" \
    --optimizer adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.002,warmup_updates=100 --epoch_size "$EPOCH_SIZE" \
    --max_epoch "$EPOCHS" --validation_metrics _valid_la_clm_ppl --log_interval 100 > "$OUT/seed$1/lm_$2.out" 2>&1
  touch "$dump/toy_lowres/$2/done"
}

CELLS=${CELLS:-la:la la+lc:la,lc la+lb:la,lb la+lb+lc:la,lb,lc}  # NAME:CLM_STEPS
for seed in $(seq 1 "$SEEDS"); do
  data "$seed"
  for c in $CELLS; do
    run_job cell "$seed" "${c%%:*}" "${c#*:}"
  done
done
wait_jobs
echo "trained after $(( $(date +%s) - start )) s"

rows=()
for c in $CELLS; do rows+=("${c%%:*}=$OUT/seed{seed}/dumped/toy_lowres/${c%%:*}/train.log"); done
echo "la's CLM perplexity (lowest valid epoch), mean ± sd over $SEEDS seeds:"
python tools/seed_table.py --seeds "$SEEDS" --best valid_la_clm_ppl --lowest --first "training data" \
  --columns "valid_la_clm_ppl=valid ppl (la),test_la_clm_ppl=test ppl (la)" --json "$OUT/results.json" \
  "${rows[@]}"
echo "per-seed values: $OUT/results.json; total $(( $(date +%s) - start )) s"
