"""`python -m agentic_rl.train --config experiments/<name>.py[:variant] --workdir DIR [overrides]`

Overrides use ml_collections' shell syntax, `--config.rl.kl_coef=0.01` (or
`--config.rl.kl_coef 0.01`); values are parsed to the type of the key they replace.
Unknown keys fail with the list of valid ones. Starting again with the same --workdir
resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import sys

PREFIX = "--config."


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separates `--config.a.b=value` / `--config.a.b value` pairs from other arguments."""
    rest: list[str] = []
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(PREFIX):
            key, eq, value = arg[len(PREFIX):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise SystemExit(f"error: {arg} needs a value")
                value = argv[i + 1]
                i += 1
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agentic_rl.train",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True,
                    help="experiment config file, optionally with a variant: FILE.py[:VARIANT]")
    ap.add_argument("--workdir", required=True,
                    help="run directory (checkpoints, metrics, trajectories); resumes if present")
    ap.add_argument("--print-config", action="store_true",
                    help="print the resolved config as JSON and exit")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = split_overrides(argv)
    args = build_parser().parse_args(rest)
    from agentic_rl.train.config import (
        ConfigError,
        apply_overrides,
        load_config_file,
        to_json,
        validate,
    )

    try:
        cfg = load_config_file(args.config)
        cfg = validate(apply_overrides(cfg, overrides))
    except (ConfigError, AttributeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_json(cfg))
        return 0
    from agentic_rl.train.loop import NonFiniteError, Trainer

    trainer = Trainer(cfg, args.workdir)
    try:
        trainer.train()
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    print(f"done: {trainer.step} steps; metrics in {args.workdir}/metrics.jsonl", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
