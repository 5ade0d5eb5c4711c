"""Reading a config from the shell: experiment files, `--config.KEY=VALUE` overrides,
type checks against the schema, and JSON round-trips (the copy saved in a run's workdir).

`agentic_rl.train.config` holds the schema (`default_config`) and the consistency rules
(`validate`); this module is everything between a command line and that schema. Each
problem is one `ConfigError` line that names the file, the key or the value, with the
closest valid key for a typo, so a run never starts on a config it misread.

Imports: the standard library, ml_collections and agentic_rl.train.config; the model
registry (`agentic_rl.models`) only inside `check_model_name`.
"""

from __future__ import annotations

import ast
import difflib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from agentic_rl.train.config import (
    OPEN_KEYS,
    ConfigError,
    _choice,
    _is_map,
    _keys,
    _unknown_key_error,
    check_keys,
    default_config,
    validate,
)


def _literal(text: str) -> Any:
    """A Python literal, or raises ValueError (also for pathological input)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(text) from None


def _type_name(current: Any) -> str:
    if isinstance(current, bool):
        return "a bool (true/false)"
    if isinstance(current, int):
        return "an int"
    if isinstance(current, float):
        return "a number"
    return "a string" if isinstance(current, str) else type(current).__name__


def _parse_value(text: str, current: Any, key: str) -> Any:
    """A shell string as the type of the current value (bools accept true/false/1/0)."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key} expects a bool (true/false), got {text!r}")
    if isinstance(current, (int, float)):
        bad = ConfigError(f"--config.{key} expects {_type_name(current)} (like {current!r}), "
                          f"got {text!r}")
        try:
            value = _literal(text)
        except ValueError:
            if not isinstance(current, float):
                raise bad from None
            try:  # inf, nan, -inf
                value = float(text)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if isinstance(current, int) and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"--config.{key} expects an int, got {text!r}")
        try:
            return type(current)(value)
        except (OverflowError, ValueError):
            raise bad from None
    if isinstance(current, str):
        return text
    if isinstance(current, tuple):
        try:
            value = _literal(text)
        except ValueError:  # not a literal: the text itself is the one string
            value = text
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"--config.{key} expects a tuple of strings like {current!r}, "
                              f"got {text!r}")
        return tuple(value)
    try:  # new keys (env.kwargs) take Python literals; anything else stays a string
        return _literal(text)
    except ValueError:
        return text


def _env_param_default(cfg: ml_collections.ConfigDict, name: str) -> Any:
    """The default of env factory keyword `name` for cfg's env (None if unknown)."""
    from agentic_rl.envs import ENVS

    try:
        factory = ENVS.get(cfg.env.name)
        p = inspect.signature(factory).parameters.get(name)
    except Exception:  # noqa: BLE001 - an unknown env is reported by validate
        return None
    return None if p is None or p.default is inspect.Parameter.empty else p.default


OVERRIDE_PREFIX = "--config."


def split_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Separates `--config.a.b=value` / `--config.a.b value` pairs from other arguments.

    The one override syntax of every entry point (train, evaluate, ablate, the
    benchmarks, kill/resume); `AgentTrainer(overrides={"a.b": value})` takes the same keys.
    """
    rest: list[str] = []
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(OVERRIDE_PREFIX):
            key, eq, value = arg[len(OVERRIDE_PREFIX):].partition("=")
            if not key:
                raise ConfigError(f"{arg}: a config key is missing (--config.a.b=VALUE)")
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg} needs a value ({arg}=VALUE or {arg} VALUE)")
                value = argv[i + 1]
                i += 1
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]):
    """Sets dotted keys ("rl.kl_coef" -> value); string values are parsed to the key's type.

    Unknown keys raise ConfigError listing the valid ones; keys under env.kwargs are
    free-form here and checked against the env factory by `validate`. String values for
    env.kwargs are parsed to the type of the factory's default for that keyword (a
    string parameter keeps the text), otherwise as Python literals.
    """
    valid = _keys(default_config())
    # env.name first, so env.kwargs values are parsed for the env they configure
    ordered = sorted(overrides.items(), key=lambda kv: kv[0] != "env.name")
    for key, value in ordered:
        open_parent = next((p for p in OPEN_KEYS if key.startswith(p + ".")), None)
        if open_parent is None and key not in valid:
            check_keys(_nest({key: None}), where="overrides")
            raise _unknown_key_error(key, valid, "overrides")  # a group name, not a leaf
        *parents, leaf = key.split(".")
        node = cfg
        for i, p in enumerate(parents):
            try:
                node = node[p]
            except (KeyError, TypeError, AttributeError):
                node = None
            if not _is_map(node):
                raise ConfigError(f"cannot set {key}: {'.'.join(parents[:i + 1])} is not a "
                                  "mapping")
        if isinstance(value, str):
            current = node[leaf] if leaf in node else None
            if current is None and open_parent == "env.kwargs" and len(parents) == 2:
                current = _env_param_default(cfg, leaf)
            value = _parse_value(value, current, key)
        try:
            with node.unlocked():
                node[leaf] = value
        except (TypeError, ValueError) as e:
            current = node[leaf] if leaf in node else None
            raise ConfigError(f"{key} expects {_type_name(current)}, got {value!r} "
                              f"({_one_line(e)})") from None
    return cfg


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(e).__name__)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _split_spec(spec: str) -> tuple[Path, str]:
    path_str, _, variant = str(spec).partition(":")
    return Path(path_str), variant


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/file.py[:variant]` by calling its `get_config(variant)`.

    Errors raised by the file's own code propagate unchanged (`load_cli_config` turns
    them into one-line ConfigErrors for the command line)."""
    path, variant = _split_spec(spec)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass an experiment file, "
                          "e.g. experiments/tiny_learning.py")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    name = f"_agentic_rl_config_{path.stem}"
    loader = importlib.machinery.SourceFileLoader(name, str(path))  # any file name
    module_spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"{path} defines no get_config(variant) function")
    variants = getattr(module, "VARIANTS", None)
    if (variant and isinstance(variants, (tuple, list))
            and all(isinstance(v, str) for v in variants) and variant not in variants):
        raise ConfigError(f"unknown variant {variant!r} of {path}; valid variants: "
                          f"{', '.join(variants)} (FILE.py:VARIANT)")
    params = inspect.signature(get_config).parameters
    if variant and not params:
        raise ConfigError(f"{path} has no variants (its get_config takes no argument); "
                          f"drop ':{variant}'")
    cfg = get_config(variant or None) if params else get_config()
    return cfg


def _raised_at(e: BaseException, path: Path) -> str:
    """' at line N' of the innermost traceback frame in `path` ('' if none)."""
    line = None
    tb = e.__traceback__
    target = str(path.resolve())
    while tb is not None:
        try:
            same = str(Path(tb.tb_frame.f_code.co_filename).resolve()) == target
        except OSError:
            same = False
        if same:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line else ""


def check_types(cfg: ml_collections.ConfigDict, where: str = "config") -> None:
    """Raises ConfigError when a key holds a value of another type than its default
    (ints are accepted for float keys), or when the schema's keys are missing."""
    defaults = default_config()
    have = set(_keys(cfg))
    missing = [k for k in _keys(defaults) if k not in have]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ConfigError(
            f"{where} is missing keys {', '.join(missing[:5])}{more}; start it from "
            "agentic_rl.train.config.default_config() and change values")
    for key in _keys(defaults):
        if key in OPEN_KEYS:
            value = _get(cfg, key)
            if not _is_map(value):
                raise ConfigError(f"{key} in {where} must be a mapping of keyword arguments, "
                                  f"got {value!r}")
            continue
        want, value = _get(defaults, key), _get(cfg, key)
        if isinstance(want, bool):
            ok = isinstance(value, bool)
        elif isinstance(want, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(want, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(want, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ConfigError(f"{key} in {where} must be {_type_name(want)} (like {want!r}), "
                              f"got {value!r}")


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _runtime_types(hint: Any) -> tuple[type, ...] | None:
    """The classes a value of type hint `hint` may have (None: do not check)."""
    import types
    import typing

    if hint is Any:
        return None
    if hint is type(None) or hint is None:
        return (type(None),)
    if hint is float:
        return (int, float)
    if hint in (bool, int, str):
        return (hint,)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(hint):
            sub = _runtime_types(arg)
            if sub is None:
                return None
            out.extend(sub)
        return tuple(out)
    if origin in (tuple, list):
        return (tuple, list)
    if origin is dict or hint is dict:
        return (dict, Mapping, ml_collections.ConfigDict)
    if isinstance(hint, type) and hint.__module__ == "os" and hint.__name__ == "PathLike":
        return (os.PathLike,)
    return None


def check_env_kwarg_types(cfg: ml_collections.ConfigDict) -> None:
    """Raises ConfigError when an env.kwargs value does not fit the factory's annotation
    (or, without one, the type of its default)."""
    import typing

    from agentic_rl.envs import ENVS

    factory = ENVS.get(cfg.env.name)
    params = inspect.signature(factory).parameters
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 - unresolvable annotations: use the defaults only
        hints = {}
    for key, value in cfg.env.kwargs.items():
        p = params.get(key)
        if p is None:
            continue
        allowed = _runtime_types(hints[key]) if key in hints else None
        if allowed is None and p.default is not inspect.Parameter.empty:
            d = p.default
            allowed = ({bool: (bool,), int: (int,), float: (int, float), str: (str,)}
                       .get(type(d)))
        if allowed is None:
            continue
        is_bool = isinstance(value, bool)
        ok = isinstance(value, allowed) and not (is_bool and bool not in allowed)
        if not ok:
            want = hints.get(key, type(p.default).__name__)
            want = getattr(want, "__name__", None) or str(want).replace("typing.", "")
            raise ConfigError(f"env.kwargs.{key} of env {cfg.env.name!r} must be {want}, got "
                              f"{value!r}")


def check_model_name(cfg: ml_collections.ConfigDict) -> None:
    """Raises ConfigError unless model.name is 'tiny', an embedded model or an existing path,
    and model.dtype / param_dtype are known dtype names."""
    from agentic_rl.models.config import _DTYPES
    from agentic_rl.models.loading import EMBEDDED_MODELS

    for key in ("dtype", "param_dtype"):
        _choice(f"model.{key}", cfg.model[key], sorted(_DTYPES))
    name = cfg.model.name
    known = ["tiny", *EMBEDDED_MODELS]
    if name == "tiny" or name.lower() in EMBEDDED_MODELS:
        return
    if not Path(name).expanduser().exists():
        raise ConfigError(
            f"model.name={name!r} is neither a known model name ({', '.join(known)}) nor an "
            "existing path; pass one of those names, a local Hugging Face model directory "
            "(config.json + *.safetensors + tokenizer files) or a .gguf file")


def load_cli_config(spec: str, overrides: Mapping[str, Any] | None = None
                    ) -> ml_collections.ConfigDict:
    """The validated config of `FILE.py[:variant]` plus shell overrides, for command-line
    entry points: every problem with the file, a value or a name is a one-line
    ConfigError (the file's own exceptions included, with the line they came from)."""
    path, variant = _split_spec(spec)
    try:
        cfg = load_config_file(spec)
    except ConfigError:
        raise
    except SyntaxError as e:
        where = f" (line {e.lineno})" if e.lineno else ""
        raise ConfigError(f"config file {path} is not valid Python{where}: {e.msg}; a config "
                          "is a Python file defining get_config(variant)") from None
    except (UnicodeDecodeError, ValueError) as e:
        if isinstance(e, UnicodeDecodeError) or "null bytes" in str(e):
            raise ConfigError(f"config file {path} is not valid Python (it looks binary); a "
                              "config is a Python file defining get_config(variant)") from None
        raise _file_raised(e, path, variant) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the file's own code failed
        raise _file_raised(e, path, variant) from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() of {path} returned {type(cfg).__name__ if cfg is not None else 'None'}"
            ", not an ml_collections.ConfigDict; return "
            "agentic_rl.train.config.default_config() with your changes")
    check_keys(cfg, where=str(path))
    check_types(cfg, where=str(path))
    cfg = apply_overrides(cfg, dict(overrides or {}))
    check_types(cfg, where="the overridden config")
    cfg = validate(cfg)
    check_env_kwarg_types(cfg)
    check_model_name(cfg)
    return cfg


def _file_raised(e: BaseException, path: Path, variant: str) -> ConfigError:
    at = _raised_at(e, path)
    tb = e.__traceback__
    in_get_config = False
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "get_config":
            in_get_config = True
        tb = tb.tb_next
    who = f"get_config({variant or None!r})" if in_get_config else "loading it"
    locked = re.search(r'Key "([^"]+)" does not exist and cannot be added', str(e))
    if locked:  # a typo against the locked schema
        leaves = sorted({k.rsplit(".", 1)[-1] for k in _keys(default_config())})
        close = difflib.get_close_matches(locked.group(1), leaves, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"config file {path}: {who} sets the unknown key "
                           f"{locked.group(1)!r}{at} (the config schema is locked){hint}")
    return ConfigError(f"config file {path}: {who} raised {type(e).__name__}{at}: "
                       f"{_one_line(e)}")


def to_json(cfg: ml_collections.ConfigDict) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


def from_dict(d: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A full config from a (possibly partial) nested dict over the defaults."""
    cfg = default_config()
    flat: dict[str, Any] = {}

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            if _is_map(v) and name not in OPEN_KEYS:
                walk(v, name + ".")
            elif _is_map(v):
                for kk, vv in v.items():
                    flat[f"{name}.{kk}"] = vv
            else:
                flat[name] = v

    walk(d, "")
    return apply_overrides(cfg, {k: v for k, v in flat.items()})
