"""gunicorn's hooks for the metrics: ``gunicorn -c python:ueoz_migration.gunicorn_config``.

Each worker process of a web instance counts its requests and transitions in files of
prometheus_client's multiprocess mode, in the folder ``PROMETHEUS_MULTIPROC_DIR`` names; the
master process sums them for Prometheus on ``METRICS_BIND`` (``HOST:PORT``; unset: no metrics
served). See :mod:`ueoz_migration.metrics`.

- The folder is the instance's own: the one ``PROMETHEUS_MULTIPROC_DIR`` names (systemd's
  ``RuntimeDirectory=``, say), emptied when the instance starts, since a previous run's files
  would be added to this one's; or else a new temporary folder, removed when the instance
  stops. Two instances on a machine must not share one.
- prometheus_client decides on import whether it counts in files, from that variable: so it
  is set here, as gunicorn reads this module, before anything in the master imports it, and
  the workers inherit it.
- When a worker exits (a restart, ``--max-requests``, a kill), its live gauges (requests in
  progress) go with it (``child_exit``); its counters stay, as Prometheus expects of counters.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _prepare_folder() -> bool:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty folder; True when it is ours to remove."""
    configured = os.environ.get(MULTIPROC_DIR, "").strip()
    if not configured:
        os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="ueoz-metrics-")
        return True
    folder = Path(configured)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    return False


_MADE_HERE = _prepare_folder()


def when_ready(server: Any) -> None:
    """Serve the workers' summed metrics, and the queues', on ``METRICS_BIND``."""
    bind = os.environ.get("METRICS_BIND", "").strip()
    if not bind:
        return
    from sqlalchemy.pool import NullPool

    from .config import Settings
    from .db.engine import make_engine
    from .metrics import QueueCollector, serve

    # A connection per scrape, none kept: the workers this process forks later must not
    # inherit pooled connections.
    engine = make_engine(Settings.from_env().database_url, poolclass=NullPool)
    try:
        serve(bind, [QueueCollector(engine)], multiprocess=True)
    except (ValueError, OSError) as error:
        # Said once, as the logger class says a bad setting, instead of a traceback.
        raise SystemExit(f"Error: METRICS_BIND={bind!r} cannot be served: {error}") from None
    server.log.info(f"Serving metrics at http://{bind}/metrics")


def child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(_server: Any) -> None:
    if _MADE_HERE:
        shutil.rmtree(os.environ[MULTIPROC_DIR], ignore_errors=True)
