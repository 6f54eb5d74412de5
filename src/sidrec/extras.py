"""Optional dependencies: code that needs one imports it through `require`, so a core install stops with
the command that adds it instead of a bare ModuleNotFoundError deep inside a stage."""

from __future__ import annotations

import importlib
from types import ModuleType

from sidrec.config import ConfigError


class MissingExtraError(ConfigError, ImportError):
    """An optional feature was asked for without its extra; a ConfigError so the CLI prints it plainly."""


def install_hint(extra: str) -> str:
    return f"pip install 'sidrec[{extra}]'"


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module` for `feature`, or raise MissingExtraError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{feature} needs the {module.split('.')[0]!r} package, which is not installed: "
                                f"{install_hint(extra)}") from exc
