"""configure_logging keeps httpx (webhook deliveries) from logging a line per HTTP call."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from adapters.telemetry import configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("httpx").level)
    try:
        yield
    finally:
        root.handlers[:], level, httpx_level = saved
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(httpx_level)


@pytest.mark.parametrize("level", ["debug", "info"])
def test_httpx_info_lines_are_not_logged(restored_logging: None, level: str) -> None:
    configure_logging(level)
    assert logging.getLogger("umg").isEnabledFor(logging.INFO)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
