"""What an audit found: how much it read, how long it took, and where each log first broke."""

from __future__ import annotations

from dataclasses import dataclass, field

# An audit of a badly damaged database keeps this many findings in full and counts the rest.
MAX_FINDINGS = 1000


@dataclass(frozen=True)
class Finding:
    """The first thing wrong in one attempt's log: where (attempt, seq) and what."""

    attempt_id: str
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"attempt {self.attempt_id}"
        if self.seq is not None:
            where += f", seq {self.seq}"
        return f"{where}: {self.problem}"


@dataclass
class AuditReport:
    """The outcome of ``verify`` or ``replay`` over one attempt or the whole log."""

    check: str  # "verify" | "replay"
    attempts: int = 0
    rows: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    broken_attempts: int = 0
    # verify: how many attempts fail at their first row's hash (a wrong key fails them all).
    first_rows_changed: int = 0
    # Lines said after the findings (what the findings taken together suggest).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken_attempts == 0

    @property
    def first(self) -> Finding | None:
        """The first broken link, in the order of attempts and sequence numbers."""
        return self.findings[0] if self.findings else None

    def add(self, finding: Finding) -> None:
        self.broken_attempts += 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(finding)

    def summary(self) -> str:
        rate = f"{self.rows / self.seconds:,.0f} rows/s" if self.seconds > 0 else "-"
        verdict = "OK" if self.ok else f"{self.broken_attempts} attempt(s) with a problem"
        return (
            f"{self.check}: {verdict}; {self.attempts} attempt(s), {self.rows} row(s) "
            f"in {self.seconds:.3f} s ({rate})"
        )
