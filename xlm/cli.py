"""The top of the scripts that build a model (train.py, glue-xnli.py, translate.py): their command lines read
as the original's, and an error the user can mend is one line and exit status 1, not a traceback."""
import argparse
import sys

import torch

from .fileio import DataError


class OriginalFlagsFirst(argparse.ArgumentParser):
    """An ArgumentParser where an abbreviation that names one of the original's flags means that flag, though
    a flag of xlm's own (`own_flags`) starts the same: `--tokens 2000` is --tokens_per_batch as in the
    original, not ambiguous with --tokens_per_batch_padded."""

    def __init__(self, *args, own_flags=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.own_flags = set(own_flags)

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self.spelled_out(args), namespace)

    def spelled_out(self, args):
        flags = [flag for flag in self._option_string_actions if flag.startswith("--")]
        originals = [flag for flag in flags if flag not in self.own_flags]
        spelled = []
        for i, arg in enumerate(args):
            if arg == "--":  # the rest are values
                return spelled + args[i:]
            name, equals, value = arg.partition("=")
            if name.startswith("--") and name not in flags:
                meant = [flag for flag in originals if flag.startswith(name)]
                if len(meant) == 1:
                    arg = meant[0] + equals + value
            spelled.append(arg)
        return spelled


def out_of_memory(error):
    """Whether `error` is an allocation that failed, on a GPU (torch.OutOfMemoryError) or on the host."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(error))


def run(main, memory_hint):
    """main(); a DataError is one `error:` line, and so is running out of memory, with `memory_hint` (what to
    lower)."""
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
    except RuntimeError as e:
        if not out_of_memory(e):
            raise
        sys.exit(f"error: out of memory ({str(e).strip().splitlines()[0]}): {memory_hint}")
