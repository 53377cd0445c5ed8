"""tools/unigram_ppl.py: the unigram perplexity of a run's masked validation tokens, against the same
number computed here by hand from the text files: each language's training-text frequencies (one </s>
per sentence), add-one smoothed, on the masks the original's evaluation rule draws (RandomState(0)).
The model's perplexity must be the run's own valid_*_mlm_ppl."""
import json
import math
from collections import Counter

import numpy as np
import pytest

from conftest import ROOT, load_script, python
from xlm.data.binarized import binarize
from xlm.data.dictionary import Dictionary

unigram_ppl = load_script(ROOT / "tools" / "unigram_ppl.py")

EOS, N_SPECIAL = 1, 14
BPTT, WORD_PRED, BATCH = 8, 0.3, 4
EN, FR = "the a file is not open could be".split(), "le un fichier est pas ouvert peut être".split()
PAIR = ("the file is open", "le fichier est ouvert")  # the valid pairs: 8 copies, so batch order is moot


def sentences(words, n, rng):
    """n sentences of 2-7 words drawn with Zipf-like frequencies."""
    p = 1 / np.arange(1, len(words) + 1)
    return [" ".join(rng.choice(words, size=rng.integers(2, 8), p=p / p.sum())) for _ in range(n)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny MLM+TLM run on hand-written corpora; returns (data folder, run folder, texts)."""
    data = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    texts = {"train.en": sentences(EN, 200, rng), "train.fr": sentences(FR, 150, rng),
             "valid.en": sentences(EN, 20, rng), "valid.fr": sentences(FR, 25, rng),
             "train.en-fr.en": sentences(EN, 40, rng), "train.en-fr.fr": sentences(FR, 40, rng),
             "valid.en-fr.en": [PAIR[0]] * 2 * BATCH, "valid.en-fr.fr": [PAIR[1]] * 2 * BATCH}
    for name in list(texts):
        if name.startswith("valid."):
            texts["test." + name[6:]] = texts[name]
    counts = Counter(w for name, lines in texts.items() if name.startswith("train.") for s in lines for w in s.split())
    (data / "vocab").write_text("".join(f"{w} {c}\n" for w, c in counts.most_common()))
    dico = Dictionary.read_vocab(data / "vocab")
    for name, lines in texts.items():
        (data / name).write_text("\n".join(lines) + "\n")
        binarize(data / name, dico, data / f"{name}.pth", 1)
    python("train.py", "--exp_name", "u", "--exp_id", "run", "--dump_path", data / "dump", "--data_path", data,
           "--lgs", "en-fr", "--mlm_steps", "en,fr,en-fr", "--emb_dim", "16", "--n_layers", "1", "--n_heads", "2",
           "--bptt", BPTT, "--batch_size", BATCH, "--word_pred", WORD_PRED, "--epoch_size", 60, "--max_epoch", 1,
           "--validation_metrics", "_valid_mlm_ppl")
    return data, data / "dump" / "u" / "run", texts, dico


def log_unigram(lines, dico):
    """log p(id) of a language's training text: word counts plus one </s> per sentence, add-one smoothed."""
    counts = np.ones(len(dico))
    for s in lines:
        for w in s.split():
            counts[dico.word2id[w]] += 1
    counts[EOS] += len(lines)
    return np.log(counts / counts.sum())


def eval_masks(rng, slen, bs, length):
    """The original's evaluation masks of a (slen, bs) batch of rows of `length` tokens, as (bs, slen)."""
    mask = (rng.rand(slen, bs) <= WORD_PRED).T
    mask[:, 0] = False
    mask[:, length - 1:] = False
    for row in mask:
        if not row.any():
            row[rng.randint(1, length - 1)] = True
    return mask


def mono_unigram_ppl(lines, table, dico):
    """The stream of `lines` (left-padded with </s> to whole bptt windows, one more </s> in front),
    evaluated one window at a time."""
    ids = [i for s in lines for i in [dico.word2id[w] for w in s.split()] + [EOS]]
    n_windows = math.ceil(len(ids) / BPTT)
    stream = np.array([EOS] * (1 + n_windows * BPTT - len(ids)) + ids)
    rng, xe, n = np.random.RandomState(0), 0.0, 0
    for i in range(n_windows):
        window = stream[i * BPTT:(i + 1) * BPTT]
        y = window[eval_masks(rng, BPTT, 1, BPTT)[0]]
        xe, n = xe - table[y].sum(), n + len(y)
    return math.exp(xe / n)


def pair_unigram_ppl(table_en, table_fr, dico):
    """`</s> en </s> </s> fr </s>`, the valid pair, in batches of BATCH identical rows."""
    en, fr = ([EOS] + [dico.word2id[w] for w in s.split()] + [EOS] for s in PAIR)
    row, tables = np.array(en + fr), [table_en] * len(en) + [table_fr] * len(fr)
    rng, xe, n = np.random.RandomState(0), 0.0, 0
    for _ in range(2):
        for mask in eval_masks(rng, len(row), BATCH, len(row)):
            xe, n = xe - sum(tables[t][row[t]] for t in np.flatnonzero(mask)), n + mask.sum()
    return math.exp(xe / n)


def test_unigram_ppl_of_the_runs_masks(run):
    data, dump, texts, dico = run
    rows = {name: (model, unigram) for name, model, unigram in
            unigram_ppl.compare(dump / "best-valid_mlm_ppl.pth", data_path=data)}
    assert list(rows) == ["valid_en_mlm", "valid_fr_mlm", "valid_en_fr_mlm", "valid_mlm"]
    en, fr = log_unigram(texts["train.en"], dico), log_unigram(texts["train.fr"], dico)
    assert rows["valid_en_mlm"][1] == pytest.approx(mono_unigram_ppl(texts["valid.en"], en, dico), rel=1e-9)
    assert rows["valid_fr_mlm"][1] == pytest.approx(mono_unigram_ppl(texts["valid.fr"], fr, dico), rel=1e-9)
    pair = pair_unigram_ppl(log_unigram(texts["train.en-fr.en"], dico),
                            log_unigram(texts["train.en-fr.fr"], dico), dico)
    assert rows["valid_en_fr_mlm"][1] == pytest.approx(pair, rel=1e-9)
    assert rows["valid_mlm"][1] == pytest.approx((rows["valid_en_mlm"][1] + rows["valid_fr_mlm"][1]) / 2)
    # the model's side is the run's own evaluation of the checkpoint
    logged = [json.loads(line.split("__log__:", 1)[1]) for line in (dump / "train.log").read_text().splitlines()
              if "__log__:" in line][-1]
    for name in rows:
        assert rows[name][0] == pytest.approx(logged[name + "_ppl"], rel=1e-4)


def test_command_line_prints_the_ratio(run):
    data, dump, _, _ = run
    out = python("tools/unigram_ppl.py", dump / "best-valid_mlm_ppl.pth", "--data_path", data).stdout.splitlines()
    assert out[0].split() == ["masked", "tokens", "of", "model", "ppl", "unigram", "ppl", "ratio"]
    name, model, unigram, ratio = out[-1].split()
    assert name == "valid_mlm_ppl" and float(ratio) == pytest.approx(float(model) / float(unigram), rel=0.02)


def test_data_of_another_vocabulary_is_refused(run, tmp_path):
    """Data binarized with two words swapped (or with another vocabulary) would be scored as other words:
    refused as train.py refuses it, naming the file and the first id that differs."""
    data, dump, texts, dico = run
    words = [dico.id2word[i] for i in range(N_SPECIAL, len(dico))]
    words[0], words[1] = words[1], words[0]
    swapped = Dictionary.from_words([(dico.id2word[i], 0) for i in range(N_SPECIAL)] +
                                    [(w, dico.counts[w]) for w in words])
    for name in texts:
        (tmp_path / name).write_text((data / name).read_text())
        binarize(tmp_path / name, swapped, tmp_path / f"{name}.pth", 1)
    proc = python("tools/unigram_ppl.py", dump / "best-valid_mlm_ppl.pth", "--data_path", tmp_path, check=False)
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path / 'valid.en.pth'}: {dump / 'best-valid_mlm_ppl.pth'}: the "
                                  f"checkpoint's vocabulary is not the data's: id {N_SPECIAL} is {dico[N_SPECIAL]!r} "
                                  f"in the checkpoint but {words[0]!r} in the data"), proc.stderr
