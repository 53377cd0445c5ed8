#!/usr/bin/env bash
# Toy reproduction of the paper's unsupervised MT result: two synthetic languages with one latent grammar
# (tools/toy_languages.py), an MLM pretraining on monolingual data only, then denoising auto-encoding +
# online back-translation initialised from it, against the same AE+BT from a random initialisation.
# Prints the valid BLEU of both. OUT=... sets the work folder; EPOCHS=... the AE+BT epochs.
# Status: a first attempt. With these settings (MLM 4 x 20,000 sentences in 6 min, AE+BT 35 s an epoch on
# 2 cores) the MLM reaches valid_mlm_ppl 107.9 and AE+BT is still degenerate after 2 epochs (BLEU 0): the
# sizes and schedules still have to be tuned before this shows the paper's effect.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-toy_unmt}
EPOCHS=${EPOCHS:-6}
DATA=$OUT/processed
mkdir -p "$DATA"
[ -f "$OUT/raw/README.txt" ] || python tools/toy_languages.py --out "$OUT/raw" --langs la,lb --typology svo,svo \
  --n_mono 30000 --n_para 0 --n_valid 300 --n_test 300 --n_cls_train 0 --n_cls_eval 0 --vocab_size 300 \
  --compound_rate 0 > /dev/null
# the toy words need no BPE: the vocabulary is the words themselves
[ -f "$DATA/vocab" ] || python tools/fastbpe getvocab "$OUT/raw/mono/train.la" "$OUT/raw/mono/train.lb" > "$DATA/vocab"
for split in train valid test; do
  for lg in la lb; do
    [ -f "$DATA/$split.$lg.pth" ] || python preprocess.py "$DATA/vocab" "$OUT/raw/mono/$split.$lg" "$DATA/$split.$lg.pth" > /dev/null
  done
  if [ $split != train ]; then
    for lg in la lb; do
      [ -f "$DATA/$split.la-lb.$lg.pth" ] || python preprocess.py "$DATA/vocab" "$OUT/raw/para/$split.la-lb.$lg" \
        "$DATA/$split.la-lb.$lg.pth" > /dev/null
    done
  fi
done
MODEL="--emb_dim 128 --n_layers 2 --n_heads 4 --gelu_activation true --dropout 0.1 --attention_dropout 0.1"
python train.py --exp_name toy_mlm --exp_id run --dump_path "$OUT/dumped" --data_path "$DATA" --lgs la-lb \
  --mlm_steps la,lb $MODEL --batch_size 32 --bptt 64 --optimizer adam_inverse_sqrt,lr=0.001,warmup_updates=300 \
  --epoch_size 20000 --max_epoch ${MLM_EPOCHS:-4} --log_interval 50 | grep -E "valid_mlm_ppl ->" || true
MLM=$OUT/dumped/toy_mlm/run/checkpoint.pth
AEBT="--lgs la-lb --encoder_only false --ae_steps la,lb --bt_steps la-lb-la,lb-la-lb --word_shuffle 3
  --word_dropout 0.1 --word_blank 0.1 --lambda_ae 0:1,1000:0.1 --tokens_per_batch 1000 --batch_size 32
  --optimizer adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.0005,warmup_updates=100 --epoch_size 4000
  --max_epoch $EPOCHS --eval_bleu true --log_interval 50"
for init in pretrained random; do
  reload=""
  [ $init = pretrained ] && reload="--reload_model $MLM,$MLM"
  python train.py --exp_name toy_unmt --exp_id $init --dump_path "$OUT/dumped" --data_path "$DATA" $MODEL $AEBT \
    $reload | grep -E "valid_la-lb_mt_bleu ->|valid_lb-la_mt_bleu ->" | sed "s/^/$init: /" || true
done
