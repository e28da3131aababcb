from __future__ import annotations

from pathlib import Path

import pytest

from kafkaio.connection import BrokerNotConfigured, client_options, resolve_bootstrap
from schemas.reward import Reward
from schemas.settings import (
    KNOWN_VARIABLES,
    STAGES,
    LearnerSettings,
    RewardSettings,
    ServingSettings,
    SettingsError,
    StageSettings,
    StreamsSettings,
    load_settings,
    stage_env,
)


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


def test_each_stage_validates_only_its_own_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECQ_LEARNING_RATE", "-1")
    with pytest.raises(SettingsError, match="RECQ_LEARNING_RATE"):
        load_settings(LearnerSettings)
    assert load_settings(ServingSettings).epsilon == 0.1  # a serving member still starts
    monkeypatch.setenv("RECQ_REWARD_CART_REMOVE", "-1000")
    for stage in (StreamsSettings, RewardSettings):
        with pytest.raises(SettingsError, match="RECQ_REWARD_CART_REMOVE"):
            load_settings(stage)


def test_every_setting_has_one_description_and_names_stay_unique() -> None:
    for stage in STAGES:
        for name, field in stage.model_fields.items():
            assert field.description, f"{stage.__name__}.{name} has no description"
    assert "RECQ_EPSILON" in KNOWN_VARIABLES and "RECQ_REWARD_CART_REMOVE" in KNOWN_VARIABLES


def test_the_reward_settings_make_the_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECQ_REWARD_PURCHASE", "2.5")
    reward = load_settings(StreamsSettings).reward()
    assert reward == Reward(click=0.2, cart=0.5, purchase=2.5, cart_remove=-0.5)


def test_subprocess_environments_refuse_unknown_names() -> None:
    env = stage_env({"PATH": "/bin", "RECQ_EPSILON": "0.5"}, RECQ_PARTITIONS=2,
                    RECQ_TENSORBOARD=False)  # fmt: skip
    assert env == {"PATH": "/bin", "RECQ_PARTITIONS": "2", "RECQ_TENSORBOARD": "false"}
    with pytest.raises(SettingsError, match="RECQ_EPSILON\\?"):
        stage_env({}, RECQ_EPSILN=0.2)


def test_a_subprocess_environment_keeps_how_to_authenticate() -> None:
    """A child reaches the broker its parent reaches, with the same credentials; which
    broker and what the stage does come only from the keywords."""
    parent = {
        "RECQ_SECURITY_PROTOCOL": "SASL_SSL",
        "RECQ_SASL_MECHANISM": "SCRAM-SHA-512",
        "RECQ_SASL_USERNAME": "recq",
        "RECQ_SASL_PASSWORD": "s3cret",
        "RECQ_SSL_CAFILE": "/etc/recq/ca.pem",
        "RECQ_BOOTSTRAP_SERVERS": "parent:9092",
        "RECQ_EPSILON": "0.5",
    }
    env = stage_env(parent, RECQ_BOOTSTRAP_SERVERS="child:9093")
    assert env == {
        "RECQ_SECURITY_PROTOCOL": "SASL_SSL",
        "RECQ_SASL_MECHANISM": "SCRAM-SHA-512",
        "RECQ_SASL_USERNAME": "recq",
        "RECQ_SASL_PASSWORD": "s3cret",
        "RECQ_SSL_CAFILE": "/etc/recq/ca.pem",
        "RECQ_BOOTSTRAP_SERVERS": "child:9093",
    }


def test_an_unknown_variable_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    class Remember(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    handler = Remember()
    logging.getLogger("recq.settings").addHandler(handler)
    monkeypatch.setenv("RECQ_SERVE_MAX_WAITMS", "5")
    try:
        load_settings(ServingSettings)
    finally:
        logging.getLogger("recq.settings").removeHandler(handler)
    assert (
        "RECQ_SERVE_MAX_WAITMS is not a recq setting (did you mean RECQ_SERVE_MAX_WAIT_MS?)"
        in handler.messages
    )


def test_the_rules_and_the_reward_default_to_the_settings_defaults() -> None:
    from streams.session import Rules

    assert Rules.from_settings(StreamsSettings()) == Rules()
    assert RewardSettings().reward() == Reward()


def test_the_serving_process_imports_neither_torch_nor_the_learner() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, inference.service, inference.registry, recq.cli\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('learner'))\n"
        "sys.exit(f'imported {bad}' if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_a_secret_can_be_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import schemas.settings as module

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "recq_sasl_password").write_text("from-a-file")
    monkeypatch.setattr(module, "SECRETS_DIR", secrets)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECQ_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RECQ_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RECQ_SASL_USERNAME", "shop")
    settings = load_settings(StageSettings)
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(settings)
