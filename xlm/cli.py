"""The top of the scripts that build a model (train.py, glue-xnli.py, translate.py): an error the user can
mend is one line and exit status 1, not a traceback."""
import sys

import torch

from .fileio import DataError


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
