"""aiokafka's retriable failures are warnings in recq's logs; real errors stay errors."""

from __future__ import annotations

import logging

import pytest
from aiokafka import errors

from kafkaio.connection import quiet_retriable_client_errors


class Remember(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    ("logger", "args", "level"),
    [
        ("aiokafka.consumer.fetcher", (1, errors.NotLeaderForPartitionError()), "WARNING"),
        ("aiokafka.consumer.group_coordinator", (errors.GroupCoordinatorNotAvailableError(),),
         "WARNING"),
        ("aiokafka.consumer.group_coordinator", (errors.GroupAuthorizationFailedError(),),
         "ERROR"),
    ],
)  # fmt: skip
def test_retriable_client_errors_are_warnings(
    logger: str, args: tuple[object, ...], level: str
) -> None:
    quiet_retriable_client_errors()
    quiet_retriable_client_errors()  # idempotent
    handler = Remember()
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        log.error("failed: " + " ".join(["%s"] * len(args)), *args)
    finally:
        log.removeHandler(handler)
    (record,) = handler.records
    assert record.levelname == level
    assert len(log.filters) == 1
