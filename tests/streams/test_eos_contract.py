"""streams/eos.py against the installed faust-streaming and aiokafka themselves (no
stand-ins): every patched method exists with the signature its replacement was written
for, every private attribute a patch reads is still there, the installed releases are
the ones the patches were tested with, and an untested release is refused unless the
setting says otherwise."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest
from faust.stores.memory import Store as MemoryStore
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer, ThreadDelegateConsumer, TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Producer
from faust.transport.producer import ProducerBuffer
from mode.utils.queues import FlowControlEvent

from streams import eos

#: The names PATCHES' ``relies_on`` use, as imported from the installed libraries.
CLASSES: dict[str, type[Any]] = {
    "Consumer": Consumer, "ThreadDelegateConsumer": ThreadDelegateConsumer,
    "TransactionManager": TransactionManager, "AIOKafkaConsumerThread": AIOKafkaConsumerThread,
    "Producer": Producer, "ProducerBuffer": ProducerBuffer, "Recovery": Recovery,
    "MemoryStore": MemoryStore, "FlowControlEvent": FlowControlEvent,
}  # fmt: skip


def _parameters(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


@pytest.mark.parametrize("patch", eos.PATCHES, ids=lambda p: f"{p.owner.__name__}.{p.method}")
def test_each_patched_method_exists_with_the_signature_it_was_written_for(
    patch: eos.Patch,
) -> None:
    assert callable(patch.original), f"{patch.owner.__name__}.{patch.method} is gone"
    assert inspect.iscoroutinefunction(patch.original) == inspect.iscoroutinefunction(
        patch.replacement
    )
    replacement = _parameters(patch.replacement)
    if "args" not in replacement:  # a pass-through (*args, **kwargs) takes any signature
        assert replacement == _parameters(patch.original)


def _assigned_in_source(cls: type[Any], attribute: str) -> bool:
    """The attribute is set on instances somewhere in the class's hierarchy."""
    for klass in cls.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if f"self.{attribute} =" in source or f"self.{attribute}: " in source:
            return True
    return False


@pytest.mark.parametrize("patch", eos.PATCHES, ids=lambda p: f"{p.owner.__name__}.{p.method}")
def test_what_each_patch_relies_on_is_still_there(patch: eos.Patch) -> None:
    for name in patch.relies_on:
        owner, attribute = name.split(".")
        cls = CLASSES[owner]
        assert hasattr(cls, attribute) or _assigned_in_source(cls, attribute), (
            f"{name} (read by the patch for point {patch.point}) is not in the installed "
            "faust / aiokafka: re-check streams/eos.py against this release"
        )


def test_the_installed_releases_are_those_the_patches_were_tested_with() -> None:
    assert eos.untested_releases() == []


def test_an_untested_release_is_refused_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    versions = {"faust-streaming": "0.16.0", "aiokafka": "0.14.0"}
    monkeypatch.setattr(eos.importlib.metadata, "version", versions.__getitem__)
    assert eos.untested_releases() == ["faust-streaming 0.16.0"]
    with pytest.raises(
        eos.UntestedFaust, match=r"faust-streaming 0\.16\.0.*RECQ_STREAMS_EOS_UNTESTED"
    ):
        eos.install()
    with caplog.at_level(logging.WARNING, logger="streams.eos"):
        eos.install(allow_untested=True)
    assert "RECQ_STREAMS_EOS_UNTESTED=true" in caplog.text
    assert Consumer.commit is eos._commit_under_lock
