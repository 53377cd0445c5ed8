"""train.py's components made from its params: the models (with --reload_emb / --reload_model), their
optimizers, one resumable batch iterator per objective and languages; and the checks that the metrics
asked for are ones the run computes and that the backend can train what it is given."""
import zlib

from ..data.datasets import BatchingOptions, ParallelDataset, SentenceDataset, StreamDataset
from ..data.iterators import BatchIterator
from ..data.loader import check_fits
from ..evaluation.lm import metric_names
from ..fileio import DataError
from ..model.checkpoint import check_vocabulary, config_from_params, load_weights, read_checkpoint, \
    strip_module_prefix
from ..model.transformer import N_MAX_POSITIONS, TransformerModel
from ..model.word_vectors import reload_word_vectors
from .checkpointing import warn_of_other_flags
from .options import check_positions
from .schedules import build_optimizer


def global_batching(params, world_size):
    """--batch_size and --tokens_per_batch are per rank; a global batch holds every rank's rows."""
    return BatchingOptions(params.batch_size * world_size, params.tokens_per_batch * world_size
                           if params.tokens_per_batch > 0 else -1, params.max_batch_size * world_size,
                           params.group_by_size, getattr(params, "tokens_per_batch_padded", False))


# the steps on pairs, by their iterators' keys (the original's), as the log names them
PAIR_STEPS = {"causal": "CLM", "pred": "TLM", "align": "PC", "mt": "MT"}


def check_long_sentences(params, objective, dataset):
    """Where --max_len keeps training sentences longer than the model's positions (0, no limit, or a length
    past them, both the original's), one that is there is refused now, named, where the original fails in
    an embedding lookup once it is drawn. PC reads a pair as one sequence, `</s> x1 </s> x2 </s>`."""
    joined = objective == "align"
    longest = 2 * params.max_len + 3 if joined else params.max_len + 2
    if not params.max_len or longest > params.n_positions:
        corpora = [dataset.corpus] if isinstance(dataset, SentenceDataset) else [dataset.corpus1, dataset.corpus2]
        check_fits(corpora, dataset.indices, params.n_positions, joined=joined,
                   note=f" (--max_len {params.max_len} keeps it)")


def build_iterators(params, data, info, logger=None):
    """One resumable iterator per (objective, languages), keyed like the original (causal / pred / align /
    ae / bt / mt, a pair in the step's direction). Each draws its own order, as the original's do: AE and
    BT on one language, MLM and MT on one pair, or the two directions of a pair (`--mt_steps en-fr,fr-en`:
    a pass of the pairs each) must not see the same batches in lockstep."""
    iterators, pair_sets = {}, {}
    world = info.world_size
    # each rank a batch of its own, as each of the original's ranks draws its own: --batch_size (or
    # --tokens_per_batch) sentences or pairs, or a window of the stream laid out in --batch_size rows. (A
    # global batch cut from one length bucket and split among the ranks trained TLM 3-6% worse per step on 2
    # ranks; each rank's rows of a window of a stream laid out in N x --batch_size rows, 4.4% on 4 ranks.)
    batching = global_batching(params, 1)

    def add(key, dataset, alone=False, min_rows=1):
        """alone: the dataset is this rank's own shard file (the original's train.<lang>.<rank>.pth), all of
        it read by this rank."""
        if key not in iterators:
            seed = zlib.crc32("|".join(map(str, (params.seed,) + key)).encode())  # the same on every rank
            rank, world_size = (0, 1) if alone else (info.rank, world)
            iterators[key] = BatchIterator(dataset, seed, rank, world_size, min_rows=min_rows, own_batches=True)

    def log_removed(what, dataset):
        if logger and dataset.n_removed:  # the original logs it too
            logger.info("%s: removed %i of %i, empty%s", what, dataset.n_removed,
                        dataset.n_removed + len(dataset.indices),
                        f" or longer than --max_len {params.max_len}" if params.max_len else "")

    def add_pair(objective, l1, l2, min_rows=1):
        """The step l1-l2's iterator, over the pair's dataset, which both directions share."""
        a, b = sorted((l1, l2))
        if (objective, a, b) not in pair_sets:
            dataset = ParallelDataset(*data.para[(a, b)]["train"], batching, params.max_len, data.n_words)
            check_long_sentences(params, objective, dataset)
            log_removed(f"{PAIR_STEPS[objective]} training sentences of {a}-{b}", dataset)
            pair_sets[(objective, a, b)] = dataset
        add((objective, l1, l2), pair_sets[(objective, a, b)], min_rows=min_rows)

    for objective, steps in (("causal", params.clm_steps), ("pred", params.mlm_steps)):
        for l1, l2 in steps:
            if l2 is None:
                stream = StreamDataset(data.mono[l1]["train"], params.batch_size, params.bptt, data.n_words)
                add((objective, l1), stream, alone=l1 in data.sharded)
            else:
                add_pair(objective, l1, l2)
    for objective, langs in (("ae", params.ae_steps), ("bt", [l1 for l1, _, _ in params.bt_steps])):
        for lang in langs:
            dataset = SentenceDataset(data.mono[lang]["train"], batching, params.max_len, data.n_words)
            check_long_sentences(params, objective, dataset)
            log_removed(f"{objective.upper()} training sentences of {lang}", dataset)
            add((objective, lang), dataset, alone=lang in data.sharded)
    for objective, steps in (("align", params.pc_steps), ("mt", params.mt_steps)):
        for l1, l2 in steps:
            # a PC step skips a batch of one pair (its negatives come from the other pairs), as the original;
            # with several ranks, each must skip or train alike: no batch leaves any of them fewer than two
            add_pair(objective, l1, l2, min_rows=2 if objective == "align" and world > 1 else 1)
    return iterators


def build_models(params, dico, device, logger):
    """{'model': encoder} for pretraining, {'encoder', 'decoder'} for translation, with --reload_emb and
    --reload_model (which, read last as in the original, overrides the word vectors).

    The original has no flag for the position table (512 rows) and the LayerNorm eps (1e-12): a reloaded
    model (a converted Hugging Face one may differ) sets them, and params carries them into this run's
    checkpoints."""
    names = ["model"] if params.encoder_only else ["encoder", "decoder"]
    paths = {name: path for name, path in zip(names, params.reload_model_paths) if path}
    files = {path: read_checkpoint(path) for path in paths.values()}  # encoder and decoder often share one
    for path, data in files.items():
        check_vocabulary(data, dico, path)
        if isinstance(data.get("params"), dict):
            warn_of_other_flags(params, data["params"], path, logger)
    source = next(iter(files), "")
    reloaded_params = (files[source].get("params") or {}) if source else {}
    params.n_positions = reloaded_params.get("n_positions", N_MAX_POSITIONS)
    params.layer_norm_eps = reloaded_params.get("layer_norm_eps", 1e-12)
    check_positions(params, params.n_positions, f" ({source})" if source else "")
    if params.asm and int(params.asm_cutoffs.split(",")[-1]) >= len(dico):
        raise DataError(f"--asm_cutoffs {params.asm_cutoffs}: each cutoff must be below the {len(dico)} words of "
                        "the vocabulary")
    models = {name: TransformerModel(config_from_params(vars(params), len(dico), is_decoder=name == "decoder"))
              for name in names}
    if params.reload_emb:
        reload_word_vectors(list(models.values()), dico, params.reload_emb, logger)
    for name, path in paths.items():
        model, data = models[name], files[path]
        # a pretrained file has 'model'; a translation file 'encoder' and 'decoder'
        state = strip_module_prefix(data.get("model", data.get(name, data.get("encoder", {}))), f"{path} ({name})")
        if name == "decoder":
            # a decoder initialised from a pretrained encoder keeps its fresh cross-attention, as the original
            fresh = model.state_dict()
            missing = [k for k in fresh if k not in state and k.startswith(("encoder_attn.", "layer_norm15."))]
            if missing:
                logger.warning("%s: %i decoder-only parameters (cross-attention) keep their initialisation",
                               path, len(missing))
                state = {**state, **{k: fresh[k] for k in missing}}
        load_weights(model, state, f"{path} ({name})")
        logger.info("Reloaded the %s from %s", name, path)
    if not params.encoder_only and not params.mlm_steps:
        # the encoder's output layer is never used in translation: frozen, so that distributed training does
        # not wait for its gradients (its weight, tied to the input embeddings, stays trained)
        encoder = models["encoder"]
        for p in encoder.pred_layer.parameters():
            if p is not encoder.embeddings.weight:
                p.requires_grad = False
    for name, model in models.items():
        logger.info("%s: %i parameters", name, sum(p.numel() for p in model.parameters()))
    return {k: m.to(device) for k, m in models.items()}


def build_optimizers(models, params):
    """The model's optimizer, and the memory values' (--mem_values_optimizer) when there are any; with the
    parameter sets that are clipped apart."""
    named = [(n, p) for m in models.values() for n, p in m.named_parameters() if p.requires_grad]
    memory_values = [p for n, p in named if n.endswith(".values.weight")]
    others = [p for n, p in named if not n.endswith(".values.weight")]
    optimizers = {"model": build_optimizer(others, params.optimizer)}
    if memory_values:
        optimizers["memory"] = build_optimizer(memory_values, params.mem_values_optimizer, "mem_values_optimizer")
    return optimizers, {"model": others, "memory": memory_values}


def check_backend(params, info):
    """What NCCL cannot do, refused before the data are loaded."""
    if getattr(params, "mem_sparse", False) and info.multi and info.device.type == "cuda":
        raise DataError("--mem_sparse true: NCCL cannot all-reduce the sparse gradients of the memory values; "
                        "use --mem_sparse false with several GPUs (or train on one)")


def check_metrics(params, logger):
    """Refuse a --stopping_criterion the run does not compute (the original fails at the end of the first
    epoch); warn of --validation_metrics it does not compute (the original runs on, warning at each
    evaluation and saving no best model for them, as here), of a perplexity taken as better when higher (a name
    without the leading '_' that marks smaller as better), or an accuracy or BLEU when lower: either keeps
    the worst model as the best."""
    known = metric_names(params)
    by_flag = {"--validation_metrics": list(filter(None, params.validation_metrics.split(","))),
               "--stopping_criterion": [params.stopping_criterion.split(",")[0]] if params.stopping_criterion else []}
    for flag, given in by_flag.items():
        unknown = list(dict.fromkeys(m.lstrip("_") for m in given if m.lstrip("_") not in known))
        if not unknown:
            continue
        bleu = " (BLEU needs --eval_bleu true)" if any(m.endswith("_mt_bleu") for m in unknown) and \
            not getattr(params, "eval_bleu", False) else ""
        computed = f"this run computes {', '.join(known)}"
        if flag == "--stopping_criterion":
            raise DataError(f"{flag}: unknown metrics {', '.join(unknown)}{bleu}; {computed}")
        logger.warning("%s: unknown metrics %s%s, for which no best model is saved; %s", flag, ", ".join(unknown),
                       bleu, computed)
    for metric in by_flag["--validation_metrics"] + by_flag["--stopping_criterion"]:
        if metric.endswith("_ppl") and not metric.startswith("_"):
            logger.warning("%s: a higher perplexity is taken as better; write _%s to keep the lowest",
                           metric, metric)
        elif metric.startswith("_") and metric.endswith(("_acc", "_bleu")):
            logger.warning("%s: the leading '_' takes a lower score as better; write %s to keep the highest",
                           metric, metric[1:])
