"""`python -m agentic_rl.train --config experiments/<name>.py[:variant] --workdir DIR [overrides]`

Overrides use ml_collections' shell syntax, `--config.rl.kl_coef=0.01` (or
`--config.rl.kl_coef 0.01`); values are parsed to the type of the key they replace.
Unknown keys fail with the list of valid ones. Starting again with the same --workdir
resumes from its newest intact checkpoint (a corrupt or incomplete newer one is reported
and skipped).

Multi-process / multi-host: start the same command once per process, with
`--config.distributed.coordinator_address=HOST:PORT --config.distributed.num_processes=N
--config.distributed.process_id=I` (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID); see train/distributed.py and scripts/launch_multihost.py.

Bad input (a config file that does not load, a bad key, value, variant, model, env or
workdir, a workdir holding a checkpoint of another config or no intact checkpoint) is
reported in one `error:` line on stderr with exit status 2; a run stopped by non-finite
updates exits with 1.

Imports: agentic_rl.train and agentic_rl.models (the entry point may import any layer).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


class UsageError(ValueError):
    """Bad command-line input: reported in one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one `error:` line (exit 2), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="python -m agentic_rl.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True,
                    help="experiment config file, optionally with a variant: FILE.py[:VARIANT]")
    ap.add_argument("--workdir", required=True,
                    help="run directory (checkpoints, metrics, trajectories); resumes if present")
    ap.add_argument("--print-config", action="store_true",
                    help="print the resolved config as JSON and exit")
    return ap


def check_workdir(path: str) -> Path:
    """The run directory, created if needed; UsageError unless it is a writable directory."""
    workdir = Path(path).expanduser()
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"--workdir {workdir} is not a directory (it is a file); pass the "
                         "path of a run directory")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"--workdir {workdir} is not writable ({e.strerror or e}); pass a "
                         "directory you can write to") from None
    for sub in ("checkpoints", "trajectories"):
        if (workdir / sub).exists() and not (workdir / sub).is_dir():
            raise UsageError(f"--workdir {workdir} holds a file named {sub!r} where a "
                             "directory belongs; move it away or pass a fresh --workdir")
    return workdir


def _fail(e: BaseException | str) -> int:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from agentic_rl.train.config import ConfigError
    from agentic_rl.train.config_files import load_cli_config, split_overrides, to_json

    try:
        rest, overrides = split_overrides(argv)
    except ConfigError as e:
        return _fail(e)
    args = build_parser().parse_args(rest)
    try:
        cfg = load_cli_config(args.config, overrides)
    except ConfigError as e:
        return _fail(e)
    if args.print_config:
        print(to_json(cfg))
        return 0
    from agentic_rl.train import distributed

    try:  # before anything touches a device (config distributed.* or JAX_* variables)
        distributed.initialize(cfg.distributed)
    except (ValueError, TypeError) as e:
        return _fail(e)
    from agentic_rl import compile_cache
    from agentic_rl.models.loading import LOAD_ERRORS
    from agentic_rl.train import builders
    from agentic_rl.train.checkpoint import CheckpointNotFoundError, IncompatibleCheckpointError
    from agentic_rl.train.loop import NonFiniteError, Trainer
    from agentic_rl.train.progress import Progress

    compile_cache.enable()
    progress = Progress(enabled=bool(cfg.log.progress))
    try:
        workdir = check_workdir(args.workdir)
        try:
            suite = builders.build_suite(cfg)
        except (ValueError, LookupError, OSError) as e:
            raise UsageError(f"env {cfg.env.name!r} could not be built from env.kwargs="
                             f"{dict(cfg.env.kwargs)}: {type(e).__name__}: {e}") from None
        try:
            with progress.phase(f"loaded model {cfg.model.name!r}"):
                policy = builders.build_policy(cfg)
        except LOAD_ERRORS as e:
            raise UsageError(f"model.name={cfg.model.name!r}: {e}") from None
        trainer = Trainer(cfg, workdir, policy=policy, suite=suite, progress=progress)
        if trainer.resumed_from is not None:
            progress.say(f"resumed from the checkpoint of step {trainer.resumed_from}")
    except (UsageError, ConfigError, CheckpointNotFoundError, IncompatibleCheckpointError) as e:
        return _fail(e)
    try:
        trainer.train()
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    if not distributed.is_primary():
        return 0
    print(f"done: {trainer.step} steps; metrics in {workdir}/metrics.jsonl", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
