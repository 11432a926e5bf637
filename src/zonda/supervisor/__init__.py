"""Worker processes under a synchronous supervisor: ``--workers``, recycling, rolling restarts, ``--reload``,
systemd socket activation and notification, ``--pid``.

Only ``needs_supervisor`` is imported on every start; the supervisor itself loads when a run needs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from zonda.config import Config
from zonda.supervisor import systemd


def needs_supervisor(config: Config, env: Mapping[str, str] | None = None) -> bool:
    """Whether this run needs the supervisor; a plain ``--workers 1`` run serves in this process as before."""
    env = os.environ if env is None else env
    return (
        config.workers != 1
        or config.reload
        or config.reuse_port
        or config.max_requests is not None
        or config.max_worker_lifetime is not None
        or config.max_worker_memory is not None
        or config.pid is not None
        or bool(env.get("NOTIFY_SOCKET"))
        or bool(systemd.listen_fds(env))
    )


def run_supervisor(config: Config) -> int:
    """Run the supervisor and its workers until stopped; return the exit status."""
    from zonda.supervisor.supervisor import Supervisor

    return Supervisor(config).run()


__all__ = ["needs_supervisor", "run_supervisor"]
