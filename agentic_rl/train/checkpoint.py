"""Checkpoints with orbax: train state (params, optimizer, step, PRNG) + host state as JSON.

Layout: `workdir/checkpoints/<step>/{state,host}` (one orbax step directory, written
atomically). The state is saved as a flat {index: array} dict with the leaf paths listed in
the host JSON, so any pytree (nnx States, optax states) round-trips exactly and a restore
into a different structure fails with a message naming the mismatch. The frozen base
weights and the KL reference are not saved: they are rebuilt from the base model.

Retention: the `keep` most recent steps plus the best step by the eval metric; the
host JSON of every checkpoint carries `best` so `latest` and `best` both resolve.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from agentic_rl.train.state import TrainState


def _saved_tree(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
            "rng": state.rng}


def _flatten(tree) -> tuple[dict[str, Any], list[str], Any]:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [jax.tree_util.keystr(p) for p, _ in leaves_with_path]
    flat = {f"{i:06d}": leaf for i, (_, leaf) in enumerate(leaves_with_path)}
    return flat, names, treedef


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint of the requested kind in the directory."""


class Checkpointer:
    """Saves and restores `TrainState` + host state under `directory`."""

    def __init__(self, directory: str | Path, *, keep: int = 3, best_mode: str = "max"):
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.best_mode = best_mode
        options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "host"))

    def close(self) -> None:
        self.manager.close()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def is_better(self, value: float, best: dict | None) -> bool:
        if best is None or value is None or not np.isfinite(value):
            return best is None and value is not None and bool(np.isfinite(value))
        return value > best["value"] if self.best_mode == "max" else value < best["value"]

    def save(self, step: int, state: TrainState, host: dict[str, Any]) -> None:
        """Writes a checkpoint (overwriting one at the same step) and prunes old ones.

        `host["best"]`, when set, is {"step", "value", "metric"}; that step is kept."""
        flat, names, _ = _flatten(_saved_tree(state))
        host = {**host, "leaf_paths": names}
        if step in self.manager.all_steps():
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(flat), host=ocp.args.JsonSave(host)))
        self.manager.wait_until_finished()
        self._prune(host.get("best"))

    def _prune(self, best: dict | None) -> None:
        steps = self.steps()
        protected = set(steps[-self.keep:])
        if best is not None:
            protected.add(int(best["step"]))
        for s in steps:
            if s not in protected:
                self.manager.delete(s)

    def resolve(self, which: str | int = "latest") -> int:
        """A step number from 'latest', 'best' or an int."""
        latest = self.latest_step()
        if latest is None:
            raise CheckpointNotFoundError(f"no checkpoint in {self.directory}")
        if which == "latest":
            return latest
        if which == "best":
            best = self.read_host(latest).get("best")
            if best is None:
                raise CheckpointNotFoundError(
                    f"no best checkpoint in {self.directory}: no evaluation has run yet "
                    "(use --checkpoint latest)"
                )
            return int(best["step"])
        step = int(which)
        if step not in self.steps():
            raise CheckpointNotFoundError(f"no checkpoint at step {step}; have {self.steps()}")
        return step

    def read_host(self, step: int) -> dict[str, Any]:
        out = self.manager.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore()))
        return dict(out["host"])

    def restore(self, step: int, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """Restores into `state`'s structure and shardings; returns (state, host)."""
        flat, names, treedef = _flatten(_saved_tree(state))
        host = self.read_host(step)
        if host.get("leaf_paths") != names:
            saved = set(host.get("leaf_paths", []))
            diff = sorted(set(names) ^ saved)[:5]
            raise ValueError(
                f"checkpoint {self.directory / str(step)} does not match this model/optimizer "
                f"(differing leaves, e.g. {diff}); was it written with another config?"
            )
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), flat)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
        restored = out["state"]
        tree = jax.tree.unflatten(treedef, [restored[k] for k in sorted(restored)])
        state = state.replace(params=tree["params"], opt_state=tree["opt_state"],
                              step=tree["step"], rng=tree["rng"])
        return state, host


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def load_trained_policy(workdir: str | Path, which: str | int = "latest"):
    """The policy of a training run at a checkpoint: (BuiltPolicy, config, step).

    Rebuilds the model from the run's saved `config.json` and restores the trained params
    into it (LoRA adapters stay attached; the sampler handles them).
    """
    from agentic_rl.train import builders
    from agentic_rl.train.config import from_dict
    from agentic_rl.train.state import init_train_state, make_optimizer

    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise CheckpointNotFoundError(f"{workdir} is not a training run directory "
                                      "(no config.json)")
    cfg = from_dict(json.loads(config_path.read_text()))
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.checkpoint.keep,
                        best_mode=cfg.checkpoint.best_mode)
    try:
        step = ckpt.resolve(which)
        built = builders.build_policy(cfg)
        updates = cfg.train.max_steps * cfg.train.num_epochs * cfg.train.num_minibatches
        state = init_train_state(built.model, make_optimizer(cfg.optim, updates), seed=cfg.seed,
                                 need_ref_copy=False)
        state, _ = ckpt.restore(step, state)
    finally:
        ckpt.close()
    built.model = state.model()
    return built, cfg, step
