"""``orchestrator flower``: Flower against the configured broker, with basic auth.

Flower builds its view from the workers' task events (the app enables them:
``worker_send_task_events``, ``task_send_sent_event``). Credentials are handed
to Flower through the ``FLOWER_BASIC_AUTH`` environment variable, never on its
command line, so that they do not show in ``ps``.

Flower reads *every* ``FLOWER_*`` environment variable as one of its options
and dies on one it does not know (``FLOWER_USER``, ``FLOWER_PASSWORD`` are ours,
not Flower's), so the child environment keeps only the ones Flower knows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from contract.errors import EscError
from contract.settings import Settings

LOCAL_ADDRESSES = frozenset({"127.0.0.1", "localhost", "::1"})
ENV_PREFIX = "FLOWER_"


class FlowerConfigError(EscError, ValueError):
    """The Flower configuration is unusable (e.g. malformed credentials)."""


@dataclass(frozen=True)
class FlowerLaunch:
    """What to exec: the command line (no secrets) and the child's environment."""

    argv: list[str]
    env: dict[str, str]
    auth_enabled: bool
    warning: str | None


def _flower_option_names() -> set[str]:
    """Names of Flower's options (tornado normalises ``_`` to ``-``)."""
    import flower.options  # noqa: F401  (defines Flower's options on import)
    from tornado.options import options

    return {name.replace("-", "_") for name in options._options}  # type: ignore[attr-defined]


def flower_env(
    env: Mapping[str, str], basic_auth: str | None, known: set[str] | None = None
) -> dict[str, str]:
    """``env`` with only the ``FLOWER_*`` variables Flower understands, plus the credentials."""
    known = _flower_option_names() if known is None else known
    child = {
        k: v
        for k, v in env.items()
        if not k.startswith(ENV_PREFIX) or k[len(ENV_PREFIX) :].lower() in known
    }
    # port and address are passed explicitly; don't let stale variables override them
    child.pop("FLOWER_PORT", None)
    child.pop("FLOWER_ADDRESS", None)
    child.pop("FLOWER_BASIC_AUTH", None)
    if basic_auth:
        child["FLOWER_BASIC_AUTH"] = basic_auth
    return child


def check_basic_auth(value: str | None) -> None:
    """Reject credentials Flower would silently misread."""
    if value is None:
        return
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise FlowerConfigError(
            "Flower credentials must look like user:password "
            "(FLOWER_BASIC_AUTH, or FLOWER_USER and FLOWER_PASSWORD)"
        )
    if "," in value:
        # Flower splits FLOWER_BASIC_AUTH on commas (several user:password pairs).
        raise FlowerConfigError("Flower credentials must not contain a comma")


def build_launch(
    settings: Settings,
    *,
    port: int | None = None,
    address: str | None = None,
    db: str | None = None,
    env: Mapping[str, str] | None = None,
) -> FlowerLaunch:
    """The Flower command for ``settings`` (nothing is started)."""
    port = settings.flower_port if port is None else port
    address = address or settings.flower_address
    check_basic_auth(settings.flower_basic_auth)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "flower",
        f"--port={port}",
        f"--address={address}",
    ]
    if db:
        argv += ["--persistent=True", f"--db={db}", "--state_save_interval=60000"]
    warning = None
    if not settings.flower_basic_auth and address not in LOCAL_ADDRESSES:
        warning = (
            f"Flower will listen on {address or 'all interfaces'}:{port} WITHOUT authentication: "
            "anyone who reaches it can see task arguments and revoke or kill tasks. "
            "Set FLOWER_BASIC_AUTH=user:password (or FLOWER_USER and FLOWER_PASSWORD)."
        )
    child_env = flower_env(os.environ if env is None else env, settings.flower_basic_auth)
    return FlowerLaunch(argv, child_env, bool(settings.flower_basic_auth), warning)
