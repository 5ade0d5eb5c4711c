"""One process of a (possibly multi-process) tiny training run, for test_multiprocess.py.

    python -m tests.train.multiprocess_worker WORKDIR OUT.npz MAX_STEPS FSDP [OVERRIDES...]

Multi-process settings come from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID, the device count from XLA_FLAGS (both set by the test). Process 0 writes
the final trainable params to OUT.npz, keyed by leaf path.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    workdir, out, max_steps, fsdp, *overrides = argv
    from agentic_rl import compile_cache
    from agentic_rl.train import distributed
    from agentic_rl.train.config_files import load_cli_config, split_overrides
    from tests.train.conftest import TINY

    _, over = split_overrides([
        f"--config.train.max_steps={max_steps}", f"--config.train.fsdp={fsdp}",
        "--config.eval.every=0", "--config.checkpoint.keep=3", "--config.log.tensorboard=False",
        *overrides])
    cfg = load_cli_config(f"{TINY}:grpo", over)
    distributed.initialize(cfg.distributed)  # before any device use
    compile_cache.enable(min_compile_secs=0)

    import jax
    import numpy as np

    from agentic_rl.train.loop import Trainer

    trainer = Trainer(cfg, workdir)
    try:
        trainer.train()
        params = distributed.to_host(trainer.state.params)
    finally:
        trainer.close()
    flat = {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    if distributed.is_primary():
        np.savez(out, **flat)
        with open(out + ".json", "w") as f:
            json.dump({"step": trainer.step, "resumed_from": trainer.resumed_from,
                       "processes": jax.process_count(), "devices": len(jax.devices())}, f)
    print(f"process {jax.process_index()}/{jax.process_count()} devices "
          f"{len(jax.devices())} step {trainer.step} resumed {trainer.resumed_from}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
