"""--reload_emb: pretrained word vectors copied into a new model's embeddings, as the original.

A `.vec` file is fastText's text format: a header `N dim`, then `word v1 ... vd` per line; a `.bin` file is a
fastText model, read with the `fasttext` package. Each dictionary word found gets its vector as its row of
the input embeddings and, when the output projection is not tied to them, of the output projection too.
"""
import numpy as np
import torch

from ..fileio import DataError, check_file


def read_vec(path, dim, words, logger):
    """{word: float32 vector} for the `words` found in a .vec file. As the original: the first valid line of
    a word counts, and a line of a dictionary word whose vector is not `dim` numbers is skipped with a
    warning (a bad line stops nothing); the header's count of vectors may differ from the file's, as it
    does in a file cut with `head -n`. Lines of other words are not parsed beyond their word: a 2M-word
    file is read in seconds."""
    check_file(path)
    vectors, n_lines, n_twice, invalid = {}, 0, 0, []
    with open(path, "rb") as f:
        header = f.readline().split()
        try:
            n_file, dim_file = (int(v) for v in header)
        except ValueError:
            raise DataError(f"{path}, line 1: expected the header 'N dim' of a .vec file, got "
                            f"{b' '.join(header[:4]).decode('utf-8', 'replace')!r}") from None
        if dim_file != dim:
            raise DataError(f"{path}, line 1: vectors of dimension {dim_file}, the model's --emb_dim is {dim}")
        for line_no, raw in enumerate(f, 2):
            # as the original, a word is what precedes the first plain space; a byte that is not UTF-8
            # makes a word that no dictionary holds
            word, _, values = raw.decode("utf-8", "replace").rstrip().partition(" ")
            n_lines += bool(word)
            if word not in words:
                continue
            if word in vectors:
                n_twice += 1
                continue
            try:
                vector = np.array(values.split(), dtype=np.float32)
            except ValueError:
                vector = None
            if vector is None or vector.shape != (dim,) or not np.isfinite(vector).all():
                invalid.append(line_no)
                continue
            vectors[word] = vector
    if n_twice:
        logger.warning("%s: repeated words: %i lines skipped (the first vector of a word is used)", path, n_twice)
    if invalid:
        logger.warning("%s: %i lines skipped, their vectors not %i finite numbers (the first: line %i)", path,
                       len(invalid), dim, invalid[0])
    if n_lines != n_file:
        logger.warning("%s: the header announces %i vectors, the file has %i (cut short, or truncated)", path,
                       n_file, n_lines)
    return vectors


def read_fasttext_bin(path, dim, words, logger):
    """{word: vector} for the `words` in the vocabulary of a fastText binary model (no subword vectors
    for the others, as the original)."""
    check_file(path)
    try:
        import fasttext
    except ImportError:
        raise DataError(f"--reload_emb {path}: reading a fastText .bin file needs the fasttext package "
                        "(pip install fasttext); or give the .vec text file of the same vectors") from None
    try:
        model = fasttext.load_model(path)
    except ValueError as e:
        raise DataError(f"{path}: not a fastText model ({e})") from None
    if model.get_dimension() != dim:
        raise DataError(f"{path}: vectors of dimension {model.get_dimension()}, the model's --emb_dim is {dim}")
    return {w: model.get_word_vector(w).astype(np.float32) for w in model.words if w in words}


@torch.no_grad()
def set_word_vectors(model, dico, vectors):
    """Copy the vector of each dictionary word found into its rows of `model`; returns how many."""
    rows = [i for i in range(len(dico)) if dico[i] in vectors]
    if not rows:
        return 0
    index = torch.tensor(rows)
    table = torch.from_numpy(np.stack([vectors[dico[i]] for i in rows])).to(model.embeddings.weight)
    model.embeddings.weight[index] = table
    proj = model.pred_layer.proj
    # an adaptive softmax has no row per word to set
    if not model.config.asm and proj.weight is not model.embeddings.weight:
        proj.weight[index] = table
    return len(rows)


def reload_word_vectors(models, dico, path, logger):
    """--reload_emb: the vectors of `path` (.bin: fastText binary, else .vec text) into every model
    (encoder and decoder alike, as the original)."""
    dim = models[0].config.emb_dim
    read = read_fasttext_bin if path.endswith(".bin") else read_vec
    vectors = read(path, dim, dico.word2id, logger)
    if not vectors:  # the original stopped on an empty np.concatenate
        raise DataError(f"--reload_emb {path}: no valid vector of a word of the {len(dico)}-word dictionary "
                        "(vectors of another language, or of text without this run's BPE?)")
    for model in models:
        n_found = set_word_vectors(model, dico, vectors)
    logger.info("Pretrained %i/%i words (%.3f%%) from %s", n_found, len(dico), 100 * n_found / len(dico), path)
