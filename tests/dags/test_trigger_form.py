"""The trigger form of ``mur_training`` as Airflow 3's UI draws it from the serialized Params: a field is marked
required when its JSON-schema type has no "null"; an enum's null option is labelled by ``values_display``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

pytestmark = pytest.mark.fast


def schema_of(dagbag: Any, name: str) -> dict[str, Any]:
    return dict(dagbag.dags["mur_training"].params.get_param(name).schema)


def required_in_the_form(schema: dict[str, Any]) -> bool:
    """The UI's rule (airflow/ui FlexibleForm): a type without "null" marks the field required."""
    kind = schema.get("type")
    return bool(kind) and (not isinstance(kind, list) or "null" not in kind)


def test_no_field_is_marked_required_since_every_one_may_be_left_empty(dagbag: Any) -> None:
    params = dagbag.dags["mur_training"].params
    marked = [name for name in params if required_in_the_form(schema_of(dagbag, name))]
    assert marked == []


def test_empty_pairs_are_valid(dagbag: Any) -> None:
    empties: tuple[list[str] | None, ...] = (None, [])
    for empty in empties:
        params = copy.deepcopy(dagbag.dags["mur_training"].params)  # the session's DAG stays untouched
        params.update({"pairs": empty})
        assert params.validate()["pairs"] == empty


def test_architectures_empty_choice_is_labelled_not_null(dagbag: Any) -> None:
    from mur.settings import get_settings

    schema = schema_of(dagbag, "arch")
    assert schema["enum"] == [None, "lstm", "gru"]
    labels = schema["values_display"]
    # the UI labels null with values_display["null"] (else the literal "null")
    assert labels["null"] == f"default (MUR_ARCH: {get_settings().model.arch})"
    assert set(labels) == {"null", "lstm", "gru"}


def test_the_form_says_dates_are_market_times(dagbag: Any) -> None:
    description = dagbag.dags["mur_training"].params.get_param("end").description
    assert "Logical Date" in description and "market now" in description
