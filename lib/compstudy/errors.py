"""User-facing errors: one line that names the bad value and the valid choices."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A request that cannot be served (unknown name, impossible value).

    Raised before any training starts; the command-line entry points print its message as
    one line and exit with status 2.
    """


def unknown_choice(kind: str, name: object, choices: Iterable[object]) -> ConfigError:
    """Build the standard "unknown <kind>" error listing the valid choices."""
    valid = ", ".join(str(c) for c in choices)
    return ConfigError(f"unknown {kind} {name!r}; valid choices: {valid}")
