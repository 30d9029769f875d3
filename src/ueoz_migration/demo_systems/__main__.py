"""Run the demo domain systems: `python -m ueoz_migration.demo_systems` (``make run`` does).

They listen at ``DEMO_SYSTEMS_URL`` (default http://127.0.0.1:5002) and sign in through the
service at ``BASE_URL``, with the credentials ``make run`` registered them with (in
``INSTANCE_DIR``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from werkzeug.serving import run_simple

from ..config import ConfigError, Settings, dev_secret
from ..logs import configure_logging
from . import DEMO_SYSTEMS, credentials, credentials_folder
from .app import create_demo_systems_app


def main() -> None:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        raise SystemExit(f"Error: {error}") from None
    if settings.production:
        raise SystemExit("Error: the demo domain systems never run with APP_ENV=production")
    configure_logging(settings)
    folder = credentials_folder(settings.instance_dir)
    app = create_demo_systems_app(
        issuer=settings.base_url,
        base_url=settings.demo_systems_url,
        credentials={system.id: credentials(system, folder) for system in DEMO_SYSTEMS},
        secret_key=dev_secret(settings.instance_dir, "demo_systems_secret_key"),
    )
    where = urlsplit(settings.demo_systems_url)
    run_simple(where.hostname or "127.0.0.1", where.port or 80, app, threaded=True)


if __name__ == "__main__":
    main()
