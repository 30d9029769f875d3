"""nginx from Debian, run with the production recipe's site file, for `make soak` and the tests.

The site file is ``deploy/nginx/ueoz-migration.conf`` as shipped; around it, a main
``nginx.conf`` that keeps everything (pid, logs, temporary files) in one folder, and the two
files a site writes for itself, ``ueoz-migration/upstream.conf`` and ``listen.conf``.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

SITE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "ueoz-migration.conf"
NGINX = "/usr/sbin/nginx"


class Nginx:
    """nginx with deploy/nginx/ueoz-migration.conf, this run's upstream and listen files."""

    def __init__(self, folder: Path, port: int, upstreams: list[str]) -> None:
        self.folder = folder
        site = folder / "ueoz-migration"
        site.mkdir(parents=True)
        (site / "upstream.conf").write_text(
            "".join(f"server {where} max_fails=1 fail_timeout=5s;\n" for where in upstreams)
        )
        (site / "listen.conf").write_text(f"listen 127.0.0.1:{port};\nserver_name localhost;\n")
        (folder / "nginx.conf").write_text(nginx_main(folder, SITE))
        folder.chmod(0o755)
        self.process = subprocess.Popen(
            [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"),
             "-e", str(folder / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def nginx_main(folder: Path, site_conf: Path) -> str:
    """A main nginx.conf around the shipped site file: this run's folder for everything."""
    return f"""daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {site_conf};
}}
"""
