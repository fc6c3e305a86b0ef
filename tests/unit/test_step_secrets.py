"""``secrets.NAME`` come from ``FLOW_STEP_SECRET_NAME``; the old ``FLOW_SECRET_NAME`` still works,
with a warning, and ``FLOW_SECRET_KEY`` (the session key) is never a step secret."""

from __future__ import annotations

import warnings

import pytest

from engine.settings import Settings


def test_step_secrets_come_from_the_new_prefix_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings = Settings.from_env({"FLOW_STEP_SECRET_STRIPE": "sk_1", "FLOW_SECRET_KEY": "session"})
    assert settings.secrets == {"STRIPE": "sk_1"}
    assert settings.secret_key == "session"


def test_the_old_prefix_still_works_with_a_warning_naming_the_new_spelling() -> None:
    with pytest.warns(FutureWarning, match="rename FLOW_SECRET_STRIPE -> FLOW_STEP_SECRET_STRIPE"):
        settings = Settings.from_env({"FLOW_SECRET_STRIPE": "old", "FLOW_SECRET_KEY": "session"})
    assert settings.secrets == {"STRIPE": "old"}


def test_the_new_spelling_wins_when_both_are_set() -> None:
    with pytest.warns(FutureWarning):
        settings = Settings.from_env({"FLOW_SECRET_TOKEN": "old", "FLOW_STEP_SECRET_TOKEN": "new"})
    assert settings.secrets == {"TOKEN": "new"}
