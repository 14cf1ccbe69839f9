"""Train minillm. Every flag is a field of minillm.recipe.TrainConfig; --config picks the preset defaults.

    python train.py                                    # small preset, data/sample.json, CPU or GPU
    python train.py --device cuda --config base        # ~100M parameters, bf16
    python train.py --data FILE --out runs/x --max-steps 2000 --time-budget 10
    python train.py --out runs/x --resume              # continue exactly where runs/x stopped
    torchrun --nproc_per_node=4 train.py --config base # one process per GPU (DistributedDataParallel)

The first line says what the run will do. A mistake in a flag or a file is one line on stderr ("train.py:
error: ...") and exit status 2, and leaves nothing behind in --out; so is a run that cannot go on (it diverged,
or a file could not be written: the line names the newest good state). Ctrl-C (or SIGTERM) finishes the step
under way, saves it, says in one line how to resume, and exits 130; a second Ctrl-C stops at once.
"""
import argparse
import dataclasses
import sys

from minillm.machinery.cli import INTERRUPTED, OneLineParser, QuietInterrupts, fail, field_help

with QuietInterrupts("train.py"):          # Ctrl-C while torch loads: one line, not a traceback
    import torch

    from minillm.machinery.checkpoint import CheckpointError
    from minillm.machinery.run import RunInterrupted, TrainingAborted, start_run
    from minillm.machinery.rundir import check_link, link_latest, resume_config
    from minillm.recipe import CHOICES, TRAIN_PRESETS, TrainConfig

PROG = "train.py"


def _type(annotation: str):
    """The argparse type for a dataclass field annotation (a string under `from __future__ import annotations`)."""
    for name, t in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if name in str(annotation):
            return t
    raise TypeError(f"no flag type for annotation {annotation!r}")


def build_parser() -> argparse.ArgumentParser:
    # argument_default=SUPPRESS: only flags actually given appear in the result, so they can override a
    # preset or a resumed run's saved configuration without clobbering it with argparse defaults.
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                      argument_default=argparse.SUPPRESS)
    p.add_argument("--config", choices=list(TRAIN_PRESETS), default="small", help="preset (default: small)")
    p.add_argument("--resume", action="store_true", default=False,
                   help="continue from the newest state-*.pt in --out, with its saved configuration")
    p.add_argument("--link-latest", metavar="LINK", default=None,
                   help="when the run has finished, point the symbolic link LINK at --out (make train: runs/latest)")
    help_text, defaults = field_help(TrainConfig), TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag, kind = "--" + f.name.replace("_", "-"), _type(f.type)
        text = f"{help_text.get(f.name, '')} (small preset: {getattr(defaults, f.name)})".replace("%", "%%")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        else:
            p.add_argument(flag, type=kind, choices=CHOICES.get(f.name), help=text, metavar=None
                           if f.name in CHOICES else f.name.upper())
    return p


def fit_default_warmup(preset: str, flags: dict) -> str | None:
    """A short run (`--max-steps 5`) with the preset's warmup (60 steps) could never finish its warmup: scale
    the DEFAULT down to a tenth of the run and say so. A warmup the user gave stays an error if it does not fit."""
    default = TrainConfig.preset(preset)
    if "max_steps" in flags and "warmup_steps" not in flags and default.warmup_steps >= flags["max_steps"] >= 1:
        flags["warmup_steps"] = flags["max_steps"] // 10
        return (f"note: the {preset} preset's warmup of {default.warmup_steps} steps does not fit --max-steps "
                f"{flags['max_steps']}; using --warmup-steps {flags['warmup_steps']} (a tenth of the run)")
    return None


def main(argv=None) -> int:
    parser = build_parser()
    flags = vars(parser.parse_args(argv))          # unknown flags and wrong types exit with one line here
    preset, resume, link = flags.pop("config"), flags.pop("resume"), flags.pop("link_latest")
    try:
        notes = []                                    # said after the run's first line
        if link:
            check_link(link)                          # before the run, not after it has trained
        if resume:
            cfg = resume_config(flags.get("out", TrainConfig.preset(preset).out), flags, log=notes.append)
        else:
            notes = [note for note in [fit_default_warmup(preset, flags)] if note]
            cfg = TrainConfig.preset(preset, **flags)
        start_run(cfg, resume=resume, preset=preset, notes=notes).fit()
        if link and not (torch.distributed.is_initialized() and torch.distributed.get_rank() != 0):
            link_latest(link, cfg.out)
    except RunInterrupted as e:                        # Ctrl-C or SIGTERM: one line, the shell's code 130
        print(f"{PROG}: {e}", file=sys.stderr, flush=True)
        return INTERRUPTED
    except (ValueError, OSError, CheckpointError, TrainingAborted) as e:   # a flag, a file, a run that cannot go on
        return fail(PROG, e)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
