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
from . import StandinRefused, StandinSettings, create_standin_app


def main() -> None:
    """Start the stand-in node on its own port; a setting it cannot run with is one line."""
    try:  # the service's log format, beside the service's own processes
        configure_logging(Settings.from_env())
    except ConfigError:
        logging.basicConfig(level=logging.INFO)  # StandinSettings below says what is wrong
    host = os.environ.get("STANDIN_HOST", "").strip() or "127.0.0.1"
    port_text = os.environ.get("STANDIN_PORT", "").strip() or "5001"
    if not port_text.isdecimal() or not 1 <= int(port_text) <= 65535:
        raise SystemExit(f"Error: STANDIN_PORT must be a port from 1 to 65535, got {port_text!r}")
    port = int(port_text)
    try:
        settings = StandinSettings.from_env(
            os.environ,
            base_url=os.environ.get("STANDIN_BASE_URL", "").strip() or f"http://{host}:{port}",
            service_base_url=os.environ.get("PUBLIC_BASE_URL", "").strip()
            or "http://127.0.0.1:5000",
            # The service's default folder: the node's keys are where the service looks.
            instance_dir=os.environ.get("INSTANCE_DIR", "").strip() or "var",
        )
    except (ConfigError, StandinRefused) as error:
        raise SystemExit(f"Error: {error}") from None
    run_simple(host, port, create_standin_app(settings), threaded=True)


if __name__ == "__main__":
    main()
