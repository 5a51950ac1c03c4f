"""The service config base: class keywords set the environment prefix and the HTTP port."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from common.config import ServiceConfig


class ExampleConfig(ServiceConfig, service="example", http_port=9199):
    """A service config declared the new way."""

    speed: int = Field(1, ge=1, le=10, description="Example setting.")


class OldWayConfig(ServiceConfig):
    """A service config that restates model_config and http_port (still supported)."""

    model_config = SettingsConfigDict(env_prefix="AGEGENDER_OLDWAY_", extra="forbid",
                                      validate_default=True)
    http_port: int = Field(9198, ge=0, le=65535, description="HTTP port; 0 disables it.")


def test_class_keywords_set_prefix_port_and_keep_strictness(monkeypatch):
    # given the class keywords / then prefix and default port follow them
    assert ExampleConfig.model_config["env_prefix"] == "AGEGENDER_EXAMPLE_"
    assert ExampleConfig().http_port == 9199
    # and the environment overrides with that prefix, a keyword argument overrides both
    monkeypatch.setenv("AGEGENDER_EXAMPLE_HTTP_PORT", "9300")
    monkeypatch.setenv("AGEGENDER_EXAMPLE_SPEED", "4")
    assert ExampleConfig().http_port == 9300 and ExampleConfig().speed == 4
    assert ExampleConfig(speed=2).speed == 2
    # and unknown keys and out-of-range values are still errors
    with pytest.raises(ValidationError):
        ExampleConfig(sped=2)
    with pytest.raises(ValidationError):
        ExampleConfig(http_port=70000)
    # and the base's own prefix is untouched
    assert ServiceConfig.model_config["env_prefix"] == "AGEGENDER_"
    assert ServiceConfig().http_port == 0


def test_the_old_way_still_works(monkeypatch):
    monkeypatch.setenv("AGEGENDER_OLDWAY_HTTP_PORT", "9400")
    assert OldWayConfig().http_port == 9400
    monkeypatch.delenv("AGEGENDER_OLDWAY_HTTP_PORT")
    assert OldWayConfig().http_port == 9198


def test_shipped_service_configs_use_their_prefix_and_port():
    from services.classifier.config import ClassifierConfig
    from services.detector.config import DetectorConfig

    assert DetectorConfig.model_config["env_prefix"] == "AGEGENDER_DETECTOR_"
    assert ClassifierConfig.model_config["env_prefix"] == "AGEGENDER_CLASSIFIER_"
    assert (DetectorConfig().http_port, ClassifierConfig().http_port) == (9102, 9103)
    assert DetectorConfig().payload == "frame"
