#!/usr/bin/env python
"""Pretrain a cross-lingual language model (CLM, MLM, TLM) with the original XLM's command line.

    python train.py --exp_name xlm_en_fr --dump_path ./dumped --data_path ./data/processed/en-fr \\
        --lgs 'en-fr' --mlm_steps 'en,fr,en-fr' --emb_dim 1024 --n_layers 6 --n_heads 8 ...

Several GPUs: torchrun --nproc_per_node N train.py ...; SLURM: srun (one task per GPU) with
--master_port. Rerunning a command with the same --exp_id resumes it exactly.
"""
from xlm.cli import run
from xlm.train.loop import main

if __name__ == "__main__":
    run(main, "lower --batch_size, --tokens_per_batch or --bptt, or the model's size; the last checkpoint is kept")
