"""A resumable iterator over any dataset of xlm.data.datasets, for one rank of a distributed run."""
import numpy as np

from ..fileio import DataError


class BatchIterator:
    """Batches of `dataset`, pass after pass (or one pass with repeat=False).

    The order of pass p depends only on (seed, p), so every rank computes the same sequence of global
    batches and reads its own part of each: its rows (`dataset.shard`: sentences), so that N ranks together
    see exactly the batches of one process with an N times larger batch; or, with own_batches, a whole batch
    of its own, N consecutive batches of the pass making a global batch (the pass's last N - 1 or fewer
    batches left out), so that each rank's batch is drawn as one process's is, as in the original, where
    every rank draws its own. The whole position is (pass, position), which `state_dict` returns: a
    resumed iterator yields exactly the batch the interrupted one would have.
    """

    def __init__(self, dataset, seed=0, rank=0, world_size=1, shuffle=True, repeat=True, min_rows=1,
                 own_batches=False):
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in [0, world_size={world_size})")
        self.dataset, self.seed, self.rank, self.world_size = dataset, seed, rank, world_size
        self.min_rows = min_rows  # the fewest sentences of a global batch each rank must get
        self.own_batches = own_batches
        self.shuffle, self.repeat = shuffle, repeat
        self.pass_index, self.position = 0, 0
        self._plan, self._plan_pass = None, None

    def _batches_of_pass(self, p):
        if self._plan_pass != p:
            rng = np.random.default_rng([self.seed, p]) if self.shuffle else None
            # a batch that would leave a rank fewer than min_rows sentences (the short end of a
            # --tokens_per_batch bucket, split among more ranks than it has sentences): every rank drops it alike
            n = self.world_size
            if self.own_batches:
                batches = [key for key in self.dataset.batches(rng) if self.dataset.splits(key, self.min_rows)]
                self._plan = [batches[i:i + n] for i in range(0, len(batches) - n + 1, n)]
            else:
                self._plan = [key for key in self.dataset.batches(rng) if self.dataset.splits(key, n * self.min_rows)]
            self._plan_pass = p
            if not self._plan:
                raise DataError("the dataset has no batch" + (f" for each of {n} ranks" if n > 1 else ""))
        return self._plan

    def __len__(self):
        """Batches per pass."""
        return len(self._batches_of_pass(self.pass_index))

    def __iter__(self):
        return self

    def __next__(self):
        key = self.next_global_key()
        if self.own_batches:
            own = key[self.rank]
        else:  # one process reads the whole batch (a stream has no shards: its ranks read their own batches)
            own = self.dataset.shard(key, self.rank, self.world_size) if self.world_size > 1 else key
        return self.dataset.collate(own)

    def start_pass(self):
        """Begin the next pass, unless at the start of one (a fine-tuning epoch reads at most one pass, each
        in an order of its own, as the original's iterator made afresh every epoch)."""
        if self.position:
            self.pass_index, self.position = self.pass_index + 1, 0

    def rows_left_in_pass(self):
        """The sentences (all ranks') of the batches the current pass has still to yield."""
        keys = self._batches_of_pass(self.pass_index)[self.position:]
        return sum(len(part) for key in keys for part in (key if self.own_batches else [key]))

    def next_global_key(self):
        """The key of the next global batch (all ranks' rows; with own_batches, a list of each rank's batch),
        for callers that need more than its collated tensors, e.g. which examples it holds."""
        plan = self._batches_of_pass(self.pass_index)
        if self.position >= len(plan):
            if not self.repeat:
                raise StopIteration
            self.pass_index, self.position = self.pass_index + 1, 0
            plan = self._batches_of_pass(self.pass_index)
        self.position += 1
        return plan[self.position - 1]

    def state_dict(self):
        return {"seed": self.seed, "world_size": self.world_size, "pass": self.pass_index, "position": self.position}

    def load_state_dict(self, state):
        if state["world_size"] != self.world_size:
            raise DataError(f"its data positions were saved by a run of {state['world_size']} process(es), and "
                            f"this one has {self.world_size}: resume it with {state['world_size']}")
        if state["seed"] != self.seed:
            raise DataError("its data order was drawn with another --seed: resume it with the run's own")
        self.pass_index, self.position = state["pass"], state["position"]
