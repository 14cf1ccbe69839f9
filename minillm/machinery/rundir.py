"""A run directory: never overwrite a run, one training process at a time, no leftovers.

    run_dir = RunDirectory(out, resume)     # read-only checks: --out is not a file, a fresh run finds no run
    run_dir.acquire(log)                    # create it, lock it, delete temporaries a killed write left behind
    ...                                     # a fresh run that fails now calls run_dir.discard()
    run_dir.release()
    cfg = resume_config(out, flags)          # --resume: the saved configuration, with the flags that may change

The lock is an advisory lock (fcntl.flock) on <out>/.lock held while the run lives: the kernel drops it when the
process ends, even by kill -9, so a crash never leaves a stale lock. A run that ends (done, stopped, failed)
deletes the file too. Where fcntl does not exist (Windows) the run says so and goes on unlocked.

A fresh run needs a new or empty directory: one that holds a state is a run to --resume, and one with other
files (those of a run stopped before its first save, or anything else) is refused rather than reused.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from minillm.files import remove_temporaries
from minillm.machinery import checkpoint as ckpt
from minillm.machinery import runlog
from minillm.recipe import TrainConfig

try:
    import fcntl
except ImportError:        # Windows
    fcntl = None

LOCK_FILE = ".lock"


def check_resumable(out) -> None:
    """FileNotFoundError unless `out` is a run directory holding a state-*.pt file, said without repeating it."""
    if not Path(out).is_dir():
        raise FileNotFoundError(f"--resume: no such run directory: {out}" if not Path(out).exists() else
                                f"--resume: {out} is not a directory")
    if not ckpt.state_files(out):
        raise FileNotFoundError(f"--resume: no state-*.pt checkpoint in {out}: nothing to resume (a run that "
                                f"stopped before its first save)")


class RunDirectory:
    def __init__(self, out, resume: bool):
        self.path, self.resume = Path(out), resume
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"--out {self.path} is a file; expected a directory for the run")
        if resume:
            check_resumable(self.path)
        elif ckpt.state_files(self.path):
            raise FileExistsError(f"--out {self.path} already holds a run; pass --resume to continue it or choose "
                                  f"another --out")
        self.created = not self.path.exists()       # a fresh run removes what it made if it fails to start
        self._existing = set() if self.created else {p.name for p in self.path.iterdir()}
        # never reuse a directory silently: its files would be overwritten or mixed in (a stale .lock, the
        # temporaries of a killed write, a .DS_Store: hidden files are not the user's work)
        others = sorted(n for n in self._existing if not n.startswith("."))
        if not resume and others:
            raise FileExistsError(f"--out {self.path} is not empty ({', '.join(others[:4])}"
                                  f"{', ...' if len(others) > 4 else ''}) and holds no saved state to resume; "
                                  f"remove it or choose another --out")
        self._fd = None

    def acquire(self, log=print) -> None:
        """Create the directory, take its lock, and remove temporaries of a killed write."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if fcntl is None:
                log("warning: no file locking on this system: do not start two runs on one --out")
            else:
                self._lock()
        except PermissionError as e:
            raise PermissionError(f"--out {self.path}: cannot write there ({e.strerror})") from None
        removed = remove_temporaries(self.path)
        if removed:
            log(f"removed {len(removed)} temporary file(s) left by an interrupted write: {', '.join(removed)}")
        if not self.resume:
            (self.path / runlog.LOG_FILE).unlink(missing_ok=True)   # a fresh run starts a fresh log

    def _lock(self) -> None:
        for _ in range(10):
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise FileExistsError(f"--out {self.path} is in use by another training process (pid {holder}); "
                                      f"wait for it to end or choose another --out") from None
            # subtle: the holder deletes the file when it ends (release); a lock won on the deleted file's inode
            # would lock nothing, so it counts only if the name still leads to the file that was locked.
            if self._is_lock_file(fd):
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode("ascii"))
                self._fd = fd
                return
            os.close(fd)
        raise FileExistsError(f"--out {self.path}: the lock file keeps changing; is another run starting there?")

    def _is_lock_file(self, fd) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path / LOCK_FILE))
        except FileNotFoundError:               # deleted (or the directory moved away) since it was opened
            return False

    def release(self) -> None:
        """Drop the lock and delete the lock file: a finished run leaves no .lock behind (a killed one does,
        unlocked: the kernel drops a dead process's locks, and the next run takes it over)."""
        if self._fd is not None:
            if self._is_lock_file(self._fd):
                (self.path / LOCK_FILE).unlink(missing_ok=True)   # while still locked: see _lock
            os.close(self._fd)                      # closing the descriptor drops the lock
            self._fd = None

    def discard(self) -> None:
        """A fresh run failed before its first step: remove what it wrote, and the directory if it made it."""
        self.release()
        if self.resume or not self.path.is_dir():
            return
        for p in self.path.iterdir():
            if p.name not in self._existing and p.is_file():
                p.unlink(missing_ok=True)
        if self.created and not any(self.path.iterdir()):
            self.path.rmdir()


# What may change when a run is resumed: its length, its evaluation and logging, where and how it runs.
# Everything else (data, sizes, optimiser, seed) shaped the saved state and is refused by name.
RESUMABLE = ("max_steps", "time_budget", "eval_every", "eval_generate", "eval_max_new_tokens", "print_samples",
             "log_every", "save_every", "keep_last", "select_by", "threads", "max_bad_steps", "device", "precision",
             "compile", "out")


def resume_config(out, overrides: dict, log=print) -> TrainConfig:
    """The TrainConfig saved in the newest usable state of run directory `out`, with `overrides` (the flags
    given on the command line) on top: those in RESUMABLE are applied and said; any other that differs from
    the saved value is a ValueError naming it. Fields this code no longer has are dropped."""
    check_resumable(out)
    state = ckpt.latest_state(out, log=lambda *a: None)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in state["train_config"].items() if k in known}
    saved.setdefault("corpus", "")      # a run saved before retrieval existed read no corpus: it still reads none
    refused = [k for k, v in overrides.items() if k not in RESUMABLE and saved.get(k) != v]
    if refused:
        raise ValueError("--resume continues the saved run, whose " + ", ".join(
            f"--{k.replace('_', '-')} is {saved.get(k)!r}" for k in refused) + "; drop those flags, or start a "
            "new run with another --out")
    for k, v in overrides.items():
        if saved.get(k) != v:
            log(f"resume: --{k.replace('_', '-')} {saved.get(k)!r} -> {v!r}")
    return TrainConfig(**{**saved, **overrides})


def check_link(link) -> None:
    """OSError, one line, unless `link` is absent or a symbolic link (train.py checks before it trains)."""
    if Path(link).exists() and not Path(link).is_symlink():
        raise OSError(f"--link-latest {link}: exists and is not a symbolic link; expected a link to replace")


def link_latest(link, out) -> None:
    """Point the symbolic link `link` at the run directory `out` (`make train`: runs/latest, which generate.py
    reads by default), replacing the link an earlier run left; relative when both sit in one folder. OSError,
    one line, when `link` is something other than a link."""
    link, out = Path(link), Path(out)
    check_link(link)
    target = os.path.relpath(out.resolve(), link.parent.resolve())
    temporary = link.with_name(f".{link.name}.new")
    if temporary.is_symlink():
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, link)          # atomic: a reader sees the old run or the new one, never no link
