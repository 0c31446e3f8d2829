"""What `demoset doctor` reports: findings with a severity and the demos and steps concerned."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SEVERITIES = ("error", "warning", "info")
"""error: training on this would quietly go wrong; warning: worth a look; info: a figure."""


@dataclass(frozen=True)
class Finding:
    """One thing the doctor noticed.

    `demos` are the demos concerned (empty for a dataset-wide figure); `start`/`stop` the
    steps (stop exclusive) when the finding is about a stretch of one demo; `key` the array.
    """

    check: str
    severity: str
    message: str
    demos: tuple[str, ...] = ()
    key: str | None = None
    start: int | None = None
    stop: int | None = None
    details: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["demos"] = list(self.demos)
        return out

    def where(self) -> str:
        """Demos and steps in a few words, for one-line output."""
        if not self.demos:
            return "dataset"
        names = ", ".join(self.demos[:5]) + (
            f" (+{len(self.demos) - 5})" if len(self.demos) > 5 else ""
        )
        if self.start is not None and self.stop is not None:
            names += f" steps {self.start}-{self.stop - 1}"
        return names


@dataclass
class DoctorReport:
    """Every finding, plus what was checked and how long it took."""

    path: str
    findings: list[Finding]
    checked: list[str]
    seconds: float = 0.0

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "ok": not self.has_errors,
            "counts": self.counts(),
            "checked": self.checked,
            "seconds": round(self.seconds, 3),
            "findings": [f.to_dict() for f in self.findings],
        }
