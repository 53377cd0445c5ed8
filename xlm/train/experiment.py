"""What train.py and glue-xnli.py share before they train: ranks and devices, the experiment folder
(dump_path/exp_name/exp_id, as the original names it) with its params and logger, and the seeds."""
import fcntl
import glob
import json
import logging
import os
import pickle
import random
import re
import shutil
from contextlib import contextmanager

import numpy as np
import torch

from ..fileio import DataError, atomic_write, check_output, remove_stale_tmp
from .distributed import broadcast_from_master, init_distributed
from .logging import LOGGER, MetricsWriter, create_logger


def experiment_folder(params):
    return os.path.join(params.dump_path, params.exp_name, params.exp_id)


def prepare_dump(params, info):
    """dump_path/exp_name/exp_id, and params.pkl (as the original) and params.json in it, rewritten by every
    run, so that they hold the flags of the run that wrote the folder's latest checkpoint; a folder that
    cannot be written is an error now, not at the first save an epoch later."""
    dump = experiment_folder(params)
    try:
        os.makedirs(dump, exist_ok=True)
        check_output(os.path.join(dump, "checkpoint.pth"))
    except (OSError, DataError) as e:
        raise DataError(f"--dump_path: cannot write the experiment folder {dump} "
                        f"({e.strerror if isinstance(e, OSError) else e})") from None
    params.dump_path = dump
    # rank 0 holds the folder; the other ranks learn whether it could before they write there (a log of
    # their own, or the removal of a folder they thought they made)
    in_use = None
    if info.is_master:
        try:
            hold_folder(dump)
        except FolderInUse as e:
            in_use = str(e)
    in_use = broadcast_from_master(in_use, info)
    if in_use:
        raise FolderInUse(in_use)
    if info.is_master:
        with atomic_write(os.path.join(dump, "params.pkl")) as f:
            pickle.dump(params, f)
        with atomic_write(os.path.join(dump, "params.json"), "w") as f:
            json.dump(vars(params), f, indent=1, default=str)
    return dump


class FolderInUse(DataError):
    """Another run holds the experiment folder: this one fails and leaves the folder alone."""


_held = {}  # experiment folder -> the open folder this process locks, until it ends or `release_folders`


def hold_folder(dump):
    """Refuse a second run in an experiment folder while a first one runs there (the two would write one
    train.log and one checkpoint.pth in turns, and a second run failing in its set-up would remove the
    folder it thought it made): rank 0 locks the folder (flock), a lock the system releases when the
    process ends, however it ends, so that a rerun after a kill resumes. A file system without locks
    goes without."""
    if dump in _held:  # this process's earlier run (train.py's main called again)
        return
    fd = os.open(dump, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderInUse(f"{dump}: another run is using this experiment folder; wait for it to end, or give "
                          "another --exp_id") from None
    except OSError:
        os.close(fd)
        return
    _held[dump] = fd


def release_folders():
    """Unlock the folders this process holds (at the end of train.py's and glue-xnli.py's main)."""
    while _held:
        os.close(_held.popitem()[1])


@contextmanager
def removed_on_failure(params):
    """A run that fails during its set-up leaves no experiment folder behind, if it made it: nothing in
    it is worth keeping, and a rerun would otherwise look like a resume. Every rank decides before any
    of them has made the folder (they meet in init_distributed first)."""
    folder = os.path.abspath(experiment_folder(params))
    fresh = not os.path.lexists(folder)
    parents, top = [], folder  # the missing dump_path and exp_name folders, which the run also makes
    while fresh and not os.path.lexists(os.path.dirname(top)):
        top = os.path.dirname(top)
        parents.append(top)
    try:
        yield
    except FolderInUse:
        raise
    except BaseException as e:
        if not fresh:  # a resumed run's log says why it went no further (its console said it once already)
            file_only_error(folder, f"Stopped in the set-up by {stop_reason(e)}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
            # innermost first, and only while empty: runs started beside this one (a sweep's other exp_ids)
            # may have made their folders there since
            for parent in parents:
                try:
                    os.rmdir(parent)
                except OSError:
                    break
        raise


def resume_command(params):
    """What resumes a stopped run: the same command, and with an exp_id drawn at random, that id."""
    return f"the same command with --exp_id {params.exp_id}" if getattr(params, "exp_id_drawn", False) else \
        "the same command"


def stop_reason(e):
    """An exception as one line of a log: its type and the first line of its message, without the source
    location that gloo's errors start with."""
    if isinstance(e, KeyboardInterrupt):
        return "a second Ctrl-C"
    gist = re.sub(r"^\[[^\]]*\]\s*", "", next((line.strip() for line in str(e).splitlines() if line.strip()), ""))
    return f"{type(e).__name__}: {gist[:300]}"


def file_only_error(folder, message):
    """`message` as an error line of the run's log files in `folder` alone, if the logger writes there yet."""
    logger = logging.getLogger(LOGGER)
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and os.path.dirname(handler.baseFilename) == folder:
            handler.handle(record)


@contextmanager
def failure_logged(logger, params):
    """A run that fails once started writes in its log why it stopped, and where the same command would
    resume (a rank whose peer died fails in a collective, "Connection closed by peer"); SIGKILL leaves no
    line."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as e:
        why = stop_reason(e)
        saved = sorted(glob.glob(os.path.join(params.dump_path, "checkpoint*.pth")))
        logger.error("Stopped by %s; %s", why, f"{resume_command(params)} resumes from {', '.join(saved)}"
                     if saved else "no checkpoint was saved: the same command starts over")
        raise


def start_experiment(params):
    """Ranks and devices, the dump folder (without the temporary files of a killed save), the logger (the
    original's train.log) and the metrics file."""
    info = init_distributed(params)
    # rank 0's folder for every rank: without --exp_id (and outside SLURM) each drew its own random id
    params.exp_id = broadcast_from_master(params.exp_id, info)
    dump = prepare_dump(params, info)
    logger = create_logger(os.path.join(dump, "train.log"), info.rank)
    logger.info("============ Initialized logger ============")
    logger.info("\n".join(f"{k}: {v}" for k, v in sorted(vars(params).items())))
    logger.info("The experiment will be stored in %s\nRunning command: %s", dump, params.command)
    warn_if_emulated(params, info.device, logger)
    for path in remove_stale_tmp(os.path.join(dump, "*.pth")) if info.is_master else []:
        logger.warning("Removed %s, left by a save that was killed", path)
    return info, logger, MetricsWriter(dump, info.is_master)


def cpu_has_arithmetic(dtype):
    """Whether this CPU computes in dtype natively, as oneDNN finds it (float16: AVX512-FP16 or AMX-FP16;
    bfloat16: AVX-512 and later); where it does not, torch's CPU kernels emulate it."""
    check = {torch.float16: "_is_mkldnn_fp16_supported", torch.bfloat16: "_is_mkldnn_bf16_supported"}[dtype]
    try:
        return bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def warn_if_emulated(params, device, logger):
    """--fp16 or --bf16 on a device without that arithmetic runs, emulated, slower than float32: the run
    goes on (a command line written for other machines), with a warning naming the faster choice. On
    the CPU, float16 is the usual case (12x slower than float32 for train.py's MLM step on a Zen 5), as
    the original, whose float16 came from apex, never ran it there."""
    if getattr(params, "bf16", False) and device.type == "cuda" and \
            not torch.cuda.is_bf16_supported(including_emulation=False):
        logger.warning("--bf16 true: %s has no bfloat16 arithmetic (it came with Ampere GPUs); torch emulates "
                       "it, slowly: --fp16 true is the faster choice here", torch.cuda.get_device_name(device))
    if device.type != "cpu":
        return
    if getattr(params, "fp16", False) and not cpu_has_arithmetic(torch.float16):
        logger.warning("--fp16 true: this CPU has no float16 arithmetic; torch emulates it, many times slower than "
                       "float32: drop --fp16 (float32, the original's arithmetic on the CPU)%s",
                       ", or use --bf16 true, which this CPU computes" if cpu_has_arithmetic(torch.bfloat16) else "")
    if getattr(params, "bf16", False) and not cpu_has_arithmetic(torch.bfloat16):
        logger.warning("--bf16 true: this CPU has no bfloat16 arithmetic; torch emulates it, slower than float32: "
                       "drop --bf16")


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

