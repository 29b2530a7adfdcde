"""What the settings hand to uvicorn: the shutdown window and the log level."""

from __future__ import annotations

import pytest

from gateway.server import server_config
from gateway.settings import Settings, SettingsError, load_settings


def test_server_config_takes_the_graceful_shutdown_window_and_level() -> None:
    config = server_config(
        load_settings(env={"TOLLWAY_GRACEFUL_SHUTDOWN_S": "2.5", "TOLLWAY_LOG_LEVEL": "DEBUG"}), None
    )
    assert config.timeout_graceful_shutdown == 2.5
    assert config.log_level == "debug"
    assert server_config(Settings(), None).timeout_graceful_shutdown == 30.0


@pytest.mark.parametrize(("variable", "value"), [("TOLLWAY_LOG_LEVEL", "trace"), ("TOLLWAY_GRACEFUL_SHUTDOWN_S", "-1")])
def test_server_config_refuses_what_uvicorn_or_logging_cannot_take(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=r"log_level|GRACEFUL_SHUTDOWN_S"):
        load_settings(env={variable: value})
