"""recq stages as subprocesses (`recq worker`, `recq learner`, `recq serve`, ...) in
their own process group, each with a log file: for the closed loop, the benchmarks and
the tests that kill or restart a stage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def recq_command(stage: str, loglevel: str = "info") -> list[str]:
    return [str(Path(sys.executable).with_name("recq")), stage, "-l", loglevel]


class StageProcess:
    def __init__(self, env: dict[str, str], log_path: Path, cmd: list[str]) -> None:
        self.env = env
        self.log_path = log_path
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StageProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a clean shutdown: final checkpoint, commits), SIGKILL after timeout_s."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
