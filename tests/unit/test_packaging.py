"""The package, installed from a wheel (not only editable), finds its flows and templates."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def listed_packages() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return set(parser["options"]["packages"].split())


def test_setup_cfg_lists_every_package_of_the_source_tree():
    source = ROOT / "src"
    found = {
        ".".join(init.parent.relative_to(source).parts) for init in source.rglob("__init__.py")
    }
    assert found <= listed_packages()


def test_an_installed_wheel_carries_the_flow_templates_and_migrations(tmp_path):
    # setuptools builds in the tree's build/ and takes what an earlier build left there: a
    # file the package data no longer names would still be found.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ueoz_migration-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ueoz_migration/flows/migration.yaml" in names
    # audit replay --export rebuilds every version shipped, from the package alone.
    history = {f"ueoz_migration/flows/history/{p.name}" for p in (ROOT / "flows/history").iterdir()}
    assert history and history <= names
    assert "ueoz_migration/templates/mail/verification.pl.txt" in names
    assert "ueoz_migration/migrations/script.py.mako" in names
    assert "ueoz_migration/migrations/versions/0001_initial_schema.py" in names

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = (
        "from ueoz_migration.resources import default_flow_path, templates_dir;"
        "from ueoz_migration.flow import load_flow_file;"
        "print(default_flow_path().parent.parent, templates_dir().is_dir(),"
        " load_flow_file().initial)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target)},
    )
    package_dir, templates_found, initial = result.stdout.split()
    assert Path(package_dir) == target / "ueoz_migration"
    assert (templates_found, initial) == ("True", "searching")
