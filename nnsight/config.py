"""``nnsight.CONFIG``: nnsight 0.2's settings object (``CONFIG.set_default_api_key(...)``).

The settings are kept in the user's config directory, never in the installed package (0.2
wrote its ``config.yaml`` beside its code): ``$NNSIGHT_CONFIG_DIR/config.json``, else
``$XDG_CONFIG_HOME/nnsight/config.json``, else ``~/.config/nnsight/config.json``. They are
read once, when nnsight is imported; ``save()`` writes them back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any


def config_path() -> Path:
    """Where the settings are kept (see the module docs)."""
    directory = os.environ.get("NNSIGHT_CONFIG_DIR")
    if not directory:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        directory = os.path.join(base, "nnsight")
    return Path(directory) / "config.json"


@dataclasses.dataclass
class ApiConfig:
    """Remote execution's service: its host and the user's API key (0.2's names)."""

    HOST: str = "ndif.dev"
    APIKEY: str | None = None
    SSL: bool = True


@dataclasses.dataclass
class AppConfig:
    """Logging (0.2's names)."""

    LOGGING: bool = False
    REMOTE_LOGGING: bool = True


@dataclasses.dataclass
class ConfigModel:
    """All settings: ``CONFIG.API`` and ``CONFIG.APP``, as in nnsight 0.2."""

    API: ApiConfig = dataclasses.field(default_factory=ApiConfig)
    APP: AppConfig = dataclasses.field(default_factory=AppConfig)

    def set_default_api_key(self, apikey: str) -> None:
        """Sets the API key used for remote execution, and saves it for later sessions."""
        self.API.APIKEY = apikey
        self.save()

    def model_dump(self) -> dict[str, Any]:
        """The settings as a dict (pydantic's name, which 0.2's config had)."""
        return dataclasses.asdict(self)

    def save(self) -> Path:
        """Writes the settings to :func:`config_path` and returns it."""
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.model_dump(), indent=2) + "\n")
        temporary.replace(path)  # whole or not at all
        return path

    @classmethod
    def load(cls) -> ConfigModel:
        """The saved settings, or the defaults where there are none (or they do not parse)."""
        try:
            saved = json.loads(config_path().read_text())
        except (OSError, ValueError):
            return cls()
        config = cls()
        for section, values in saved.items() if isinstance(saved, dict) else ():
            target = getattr(config, section, None)
            if dataclasses.is_dataclass(target) and isinstance(values, dict):
                for key, value in values.items():
                    if key in {f.name for f in dataclasses.fields(target)}:
                        setattr(target, key, value)
        return config


CONFIG = ConfigModel.load()
