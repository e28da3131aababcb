"""The pinned Apache Kafka release: resolved from Maven Central by ``deploy/kafka/pom.xml``
into ``<cache_dir>/kafka-<version>/libs`` (outside git), once."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from recq.errors import RecqError

REPO_ROOT = Path(__file__).resolve().parents[1]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
_COMPLETE = ".complete"
MIN_JAVA = 17


def pinned_version(pom: Path = POM) -> str:
    """The Kafka version the pom pins (the single place it is written)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if match is None:
        raise RecqError(f"{pom} does not define <kafka.version>")
    return match.group(1)


@dataclass(frozen=True, slots=True)
class KafkaDistribution:
    """The jars of one Kafka release in the cache."""

    version: str
    home: Path

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")

    @property
    def is_complete(self) -> bool:
        return (self.home / _COMPLETE).is_file()

    @classmethod
    def in_cache(cls, cache_dir: Path, pom: Path = POM) -> KafkaDistribution:
        version = pinned_version(pom)
        return cls(version=version, home=cache_dir.expanduser() / f"kafka-{version}")

    def fetch(self, pom: Path = POM) -> KafkaDistribution:
        """Resolve the jars with Maven if they are not cached yet (idempotent)."""
        if self.is_complete:
            return self
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RecqError(
                "Maven (mvn) not found: it resolves the Kafka jars from Maven Central. "
                "Install it (e.g. `apt-get install maven`), or set RECQ_BOOTSTRAP_SERVERS "
                "to use an existing Kafka cluster."
            )
        staging = self.home.with_name(self.home.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging / 'libs'}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any((staging / "libs").glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            out = (proc.stdout + proc.stderr).strip()[-3000:]
            raise RecqError(
                f"resolving Kafka {self.version} with Maven failed (exit {proc.returncode}). "
                f"Check that Maven Central is reachable.\n{out}"
            )
        (staging / _COMPLETE).write_text(self.version + "\n")
        shutil.rmtree(self.home, ignore_errors=True)
        staging.rename(self.home)  # readers never see a half-copied libs/
        return self


def find_java() -> str:
    """Path of a ``java`` >= 17, or a RecqError saying how to get one."""
    java = shutil.which("java")
    if java is None:
        raise RecqError(
            f"Java not found: the embedded Kafka broker needs Java {MIN_JAVA}+ on PATH "
            "(e.g. `apt-get install openjdk-17-jre-headless`), or set RECQ_BOOTSTRAP_SERVERS "
            "to use an existing Kafka cluster."
        )
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if match is None:
        raise RecqError(f"could not read the Java version from `{java} -version`")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_..." style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise RecqError(f"{java} is Java {major}; the Kafka broker needs Java {MIN_JAVA}+")
    return java
