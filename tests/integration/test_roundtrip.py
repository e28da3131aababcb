"""`recq roundtrip` against the session's broker: sample events round-trip, invalid ones land
on the dead-letter topic with their original bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from schemas.settings import stage_env

pytestmark = pytest.mark.integration


def test_roundtrip(kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    env = stage_env(
        RECQ_BOOTSTRAP_SERVERS=kafka_bootstrap,
        RECQ_TOPIC_PREFIX=f"d{unique}.",
        RECQ_DATA_DIR=tmp_path,
    )
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("recq")), "roundtrip", "--events", "3"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12/12 valid events decoded, 6/6 invalid ones dead-lettered" in result.stdout
    assert "round trip OK" in result.stdout
    for code in ("malformed_json", "wrong_type", "out_of_range", "unknown_type", "not_utf8"):
        assert code in result.stdout
