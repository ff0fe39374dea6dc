"""Where inputs and outputs live: local paths and object-storage URLs."""

from tartok_tui.storage.errors import InputUnavailable
from tartok_tui.storage.urls import is_url

__all__ = ["InputUnavailable", "is_url"]
