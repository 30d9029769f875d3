"""Run the stand-in node: `python -m ueoz_migration.standin`.

`STANDIN_HOST` and `STANDIN_PORT` (default 127.0.0.1:5001) say where it listens,
`STANDIN_BASE_URL` how browsers reach it, `PUBLIC_BASE_URL` where the service is and
`INSTANCE_DIR` where development keys are kept.
"""

import logging
import os

from werkzeug.serving import run_simple

from ..config import ConfigError, Settings
from ..logs import configure_logging
from . import StandinSettings, create_standin_app


def main() -> None:
    """Start the stand-in node on its own port."""
    try:  # the service's log format, beside the service's own processes
        configure_logging(Settings.from_env())
    except ConfigError:
        logging.basicConfig(level=logging.INFO)  # StandinSettings below says what is wrong
    host = os.environ.get("STANDIN_HOST", "127.0.0.1")
    port = int(os.environ.get("STANDIN_PORT", "5001"))
    settings = StandinSettings.from_env(
        os.environ,
        base_url=os.environ.get("STANDIN_BASE_URL", f"http://{host}:{port}"),
        service_base_url=os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000"),
        # The service's default folder: the node's keys are where the service looks for them.
        instance_dir=os.environ.get("INSTANCE_DIR", "var"),
    )
    run_simple(host, port, create_standin_app(settings), threaded=True)


if __name__ == "__main__":
    main()
