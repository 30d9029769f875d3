"""The flow diagram: what a developer renders, and the copy in docs/ that must stay current."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from tests.conftest import TEST_KEY
from ueoz_migration.cli import main
from ueoz_migration.diagram import dot, mermaid, state_diagram_page
from ueoz_migration.flow import load_flow_file

REPO = Path(__file__).resolve().parents[2]
FLOW = load_flow_file()


def test_docs_state_diagram_is_what_the_diagram_command_writes_now():
    written = (REPO / "docs" / "state-diagram.md").read_text(encoding="utf-8")

    assert written == state_diagram_page(FLOW), (
        "docs/state-diagram.md is out of date with flows/migration.yaml: "
        "run `make diagram` (ueoz-migration diagram) and commit the result"
    )


def test_mermaid_shows_every_transition_with_its_event_and_the_initial_and_final_states():
    text = mermaid(FLOW)

    assert text.startswith("stateDiagram-v2\n")
    assert "    [*] --> searching\n" in text
    for (source, event), target in FLOW.transitions.items():
        assert f"    {source} --> {target} : {event}\n" in text
    for final in ("handed_off", "cancelled", "expired"):
        assert f"    {final} --> [*]\n" in text
    assert "    done --> [*]\n" not in text  # it waits for the hand-off


def test_dot_draws_final_states_with_a_double_border_and_labels_every_edge():
    text = dot(FLOW)

    assert text.startswith('digraph "migration" {')
    assert '"handed_off" [label="handed_off", peripheries=2];' in text
    assert '"done" [label="done"];' in text
    assert '"searching" [label="searching"];' in text
    assert '"__initial" -> "searching";' in text
    for (source, event), target in FLOW.transitions.items():
        assert f'"{source}" -> "{target}" [label="{event}"];' in text


def test_the_page_names_the_flow_version_and_lists_each_state():
    page = state_diagram_page(FLOW)

    assert f"version `{FLOW.version}`" in page
    assert "| `searching` | initial | `account_found` → `found`" in page
    assert "| `done` | closes the attempt | `hand_off` → `handed_off` |" in page
    assert "| `handed_off` | final | — |" in page


def cli_env(tmp_path: Path) -> dict[str, str]:
    return {
        "APP_ENV": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
        "INSTANCE_DIR": str(tmp_path / "instance"),
        "SECRET_KEY": "test-secret",
        "AUDIT_KEY": TEST_KEY,
    }


def test_diagram_command_rewrites_docs_state_diagram(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "state-diagram.md").write_text("stale")

    result = CliRunner().invoke(main, ["diagram"], env=cli_env(tmp_path))

    assert result.exit_code == 0, result.output
    assert (tmp_path / "docs" / "state-diagram.md").read_text() == state_diagram_page(FLOW)


def test_diagram_command_outside_the_repository_says_where_to_run_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(main, ["diagram"], env=cli_env(tmp_path))

    assert result.exit_code == 1
    assert "run this from the repository root" in result.output


def test_diagram_command_writes_dot_to_stdout(tmp_path):
    result = CliRunner().invoke(main, ["diagram", "--format", "dot"], env=cli_env(tmp_path))

    assert result.exit_code == 0
    assert result.output == dot(FLOW)


def test_diagram_command_renders_svg_with_graphviz(tmp_path):
    # `make test` installs Graphviz (scripts/system-deps.sh); without it this must fail.
    assert shutil.which("dot"), "Graphviz's `dot` is missing: run scripts/system-deps.sh"
    out = tmp_path / "flow.svg"

    result = CliRunner().invoke(
        main, ["diagram", "--format", "svg", "--output", str(out)], env=cli_env(tmp_path)
    )

    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert "<svg" in svg
    assert "awaiting_verification" in svg
    assert "change_email" in svg


def test_diagram_command_that_cannot_write_its_file_says_why_in_one_line(tmp_path):
    missing_folder = tmp_path / "nonexistent" / "d.svg"

    result = CliRunner().invoke(
        main,
        ["diagram", "--format", "svg", "--output", str(missing_folder)],
        env=cli_env(tmp_path),
    )

    assert result.exit_code == 1
    assert result.output == f"Error: cannot write {missing_folder}: No such file or directory\n"


def test_diagram_command_that_cannot_rewrite_docs_state_diagram_says_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs" / "state-diagram.md").mkdir(parents=True)  # a folder in its place

    result = CliRunner().invoke(main, ["diagram"], env=cli_env(tmp_path))

    assert result.exit_code == 1
    assert result.output == "Error: cannot write docs/state-diagram.md: Is a directory\n"
