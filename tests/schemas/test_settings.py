from __future__ import annotations

from pathlib import Path

import pytest

from schemas.connection import BrokerNotConfigured, client_options, resolve_bootstrap
from schemas.settings import SettingsError, StageSettings, load_settings


def test_defaults_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(StageSettings)
    assert settings.partitions == 4
    assert settings.model_store_dir == Path("data/models")


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("RECQ_PARTITIONS", "0", "RECQ_PARTITIONS"),
        ("RECQ_PARTITIONS", "many", "RECQ_PARTITIONS"),
        ("RECQ_BOOTSTRAP_SERVERS", "localhost", "RECQ_BOOTSTRAP_SERVERS"),
        ("RECQ_SECURITY_PROTOCOL", "TLS", "RECQ_SECURITY_PROTOCOL"),
        ("RECQ_TOPIC_PREFIX", "bad prefix/", "RECQ_TOPIC_PREFIX"),
        ("RECQ_MAX_PAYLOAD_BYTES", "10", "RECQ_MAX_PAYLOAD_BYTES"),
        ("RECQ_SSL_CAFILE", "/nonexistent/ca.pem", "RECQ_SSL_CAFILE"),
    ],
)
def test_invalid_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str, value: str, named: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=named):
        load_settings(StageSettings)


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECQ_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RECQ_SASL_MECHANISM", "PLAIN")
    with pytest.raises(SettingsError, match="RECQ_SASL_USERNAME, RECQ_SASL_PASSWORD"):
        load_settings(StageSettings)


def test_password_is_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for key, value in {
        "RECQ_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "RECQ_SASL_MECHANISM": "SCRAM-SHA-512",
        "RECQ_SASL_USERNAME": "shop",
        "RECQ_SASL_PASSWORD": "hunter2",
    }.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(StageSettings)
    assert "hunter2" not in repr(settings)
    opts = client_options(settings)
    assert opts["sasl_plain_password"] == "hunter2"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"


def test_bootstrap_prefers_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BrokerNotConfigured, match="recq kafka start"):
        resolve_bootstrap(load_settings(StageSettings))
    monkeypatch.setenv("RECQ_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    assert resolve_bootstrap(load_settings(StageSettings)) == "k1:9092,k2:9092"
