"""Train minillm. Every flag is a field of minillm.training.TrainConfig; --config picks the preset defaults.

    python train.py                                    # small preset, data/sample.json, CPU or GPU
    python train.py --device cuda --config base        # ~100M parameters, bf16
    python train.py --data FILE --out runs/x --max-steps 2000 --time-budget 10
    python train.py --out runs/x --resume              # continue exactly where runs/x stopped
    torchrun --nproc_per_node=4 train.py --config base # one process per GPU (DistributedDataParallel)
"""
import argparse
import dataclasses
import sys

import torch

from minillm.machinery.run import TrainingAborted, resume_config, start_run
from minillm.training import CHOICES, TRAIN_PRESETS, TrainConfig


def _type(annotation: str):
    """The argparse type for a dataclass field annotation (a string under `from __future__ import annotations`)."""
    for name, t in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if name in str(annotation):
            return t
    raise TypeError(f"no flag type for annotation {annotation!r}")


def build_parser() -> argparse.ArgumentParser:
    # argument_default=SUPPRESS: only flags actually given appear in the result, so they can override a
    # preset or a resumed run's saved configuration without clobbering it with argparse defaults.
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", choices=list(TRAIN_PRESETS), default="small", help="preset (default: small)")
    p.add_argument("--resume", action="store_true", default=False,
                   help="continue from the newest state-*.pt in --out, with its saved configuration")
    help_text, defaults = TrainConfig.field_help(), TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag, kind = "--" + f.name.replace("_", "-"), _type(f.type)
        text = f"{help_text.get(f.name, '')} (small preset: {getattr(defaults, f.name)})".replace("%", "%%")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        else:
            p.add_argument(flag, type=kind, choices=CHOICES.get(f.name), help=text, metavar=None
                           if f.name in CHOICES else f.name.upper())
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))          # unknown flags and wrong types exit with a message here
    preset, resume = args.pop("config"), args.pop("resume")
    try:
        if resume:
            cfg = resume_config(args.get("out", TrainConfig.preset(preset).out), args)
        else:
            cfg = TrainConfig.preset(preset, **args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    try:
        try:
            run = start_run(cfg, resume=resume)
        except (ValueError, FileNotFoundError, FileExistsError) as e:   # the data or the run directory
            print(f"error: {e}", file=sys.stderr)
            return 2
        run.fit()
    except TrainingAborted as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
