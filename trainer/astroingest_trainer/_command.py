"""``astroingest train`` and ``torchrun -m astroingest_trainer``: arguments and the run.

Imports torch only when a run starts, so that ``astroingest --help`` stays quick.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

HELP = "train the cube surrogate from train.toml (resumes from the latest checkpoint)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="path to train.toml")
    parser.add_argument(
        "--stop-after-steps",
        type=_positive,
        metavar="N",
        help="checkpoint and stop after N more steps (a time-boxed job; rerun to go on)",
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    """Configuration errors raise ConfigError (exit status 2 from the caller)."""
    os.environ.setdefault("ICECHUNK_LOG", "error")  # not its warning per worker on local disk
    from astroingest_trainer._config import load_train_config

    config = load_train_config(args.config)
    from astroingest_trainer._train import train

    result = train(config, stop_after=args.stop_after_steps)
    return EXIT_INTERRUPTED if result.status == "interrupted" else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """The torchrun entry point: one process of the job."""
    from astroingest._exceptions import AstroingestError, ConfigError

    parser = argparse.ArgumentParser(prog="python -m astroingest_trainer", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(levelname)s: %(message)s"))
    logger = logging.getLogger("astroingest")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        return run(args)
    except ConfigError as error:
        print(f"astroingest train: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except AstroingestError as error:
        print(f"astroingest train: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
