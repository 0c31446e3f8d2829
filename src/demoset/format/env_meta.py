"""The `env_args` attribute: which environment made a dataset, parsed safely as JSON.

robomimic's code reads the key `type` while its docs call it `env_type`; demoset writes
`type` and accepts either. Raw robosuite files (before conversion) name their environment
in `env` and `env_info` instead (`env_meta_from_raw_attrs`). `attr_text` and `attr_int`
read attribute values the way every reader of the layout does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demoset.errors import ConversionError, LayoutError
from demoset.format.constants import ENV_TYPE_NAMES, ENV_TYPE_ROBOSUITE


@dataclass
class EnvMeta:
    """Parsed `env_args`: environment name, robomimic env type (1/2/3) and its kwargs."""

    env_name: str
    env_type: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return ENV_TYPE_NAMES.get(self.env_type, f"unknown ({self.env_type})")

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update(
            {"env_name": self.env_name, "type": self.env_type, "env_kwargs": self.env_kwargs}
        )
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)


def _as_text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    if hasattr(raw, "item") and not isinstance(raw, str):
        try:
            raw = raw.item()
        except (ValueError, TypeError):
            pass
        if isinstance(raw, bytes):
            return raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        raise TypeError(f"expected text, found {type(raw).__name__}")
    return raw


def parse_env_args(
    raw: Any, path: str | None = None, h5path: str = "/data.attrs[env_args]"
) -> EnvMeta:
    """Parse an `env_args` attribute value (JSON text) into an EnvMeta.

    Raises LayoutError naming the file and attribute when it is not JSON or lacks a field.
    """
    try:
        text = _as_text(raw)
        data = json.loads(text)
    except RecursionError:
        raise LayoutError("env_args is not JSON (nested too deeply)", path, h5path) from None
    except (TypeError, ValueError) as exc:
        raise LayoutError(f"env_args is not JSON ({exc})", path, h5path) from None
    if not isinstance(data, dict):
        raise LayoutError("env_args is not a JSON object", path, h5path)
    return env_meta_from_dict(data, path, h5path)


def env_meta_from_dict(
    data: dict, path: str | None = None, h5path: str = "/data.attrs[env_args]"
) -> EnvMeta:
    """Build an EnvMeta from a dict with env_name, type (or env_type) and env_kwargs."""
    missing = [k for k in ("env_name", "env_kwargs") if k not in data]
    if "type" not in data and "env_type" not in data:
        missing.append("type")
    if missing:
        raise LayoutError(f"env_args lacks {', '.join(missing)}", path, h5path)
    env_type = data.get("type", data.get("env_type"))
    if isinstance(env_type, bool) or not isinstance(env_type, int):
        raise LayoutError(f"env_args type must be an integer, found {env_type!r}", path, h5path)
    if not isinstance(data["env_kwargs"], dict):
        raise LayoutError("env_args env_kwargs must be a JSON object", path, h5path)
    if not isinstance(data["env_name"], str):
        raise LayoutError("env_args env_name must be text", path, h5path)
    extra = {
        k: v for k, v in data.items() if k not in ("env_name", "type", "env_type", "env_kwargs")
    }
    return EnvMeta(data["env_name"], int(env_type), dict(data["env_kwargs"]), extra)


def env_meta_from_raw_attrs(attrs: Mapping[str, Any], path: str | None = None) -> EnvMeta:
    """env_args from a raw file's `env` and `env_info` attributes (env_info parsed as JSON)."""
    if "env" not in attrs:
        raise ConversionError(
            "no 'env' attribute: not a raw robosuite file", path, "/data.attrs[env]"
        )
    if "env_info" not in attrs:
        raise ConversionError(
            "no 'env_info' attribute: not a raw robosuite file", path, "/data.attrs[env_info]"
        )
    try:
        env_info = json.loads(attr_text(attrs["env_info"]))
    except ValueError as exc:
        raise ConversionError(
            f"env_info is not JSON ({exc})", path, "/data.attrs[env_info]"
        ) from None
    if not isinstance(env_info, dict):
        raise ConversionError("env_info is not a JSON object", path, "/data.attrs[env_info]")
    extra = {}
    if "repository_version" in attrs:
        extra["env_version"] = attr_text(attrs["repository_version"])
    return EnvMeta(
        env_name=attr_text(attrs["env"]),
        env_type=ENV_TYPE_ROBOSUITE,
        env_kwargs=env_info,
        extra=extra,
    )


def attr_text(value: Any) -> str:
    """An attribute value as text (bytes decoded as UTF-8, 0-d arrays unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
    return str(value)


def attr_int(value: Any) -> int | None:
    """An attribute value as an int; None when it is not one whole number (bools included)."""
    try:
        if isinstance(value, np.ndarray):
            if value.size != 1:
                return None
            value = value.reshape(()).item()
        if isinstance(value, (bool, np.bool_)):
            return None
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return None
