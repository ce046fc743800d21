"""``true`` and ``false`` are not numbers: pydantic reads ``True`` as 1 for an int or float field,
so ``--set steps=true`` trained one step. The models of run settings, budgets and task options
refuse them where a number is expected."""

from __future__ import annotations

from typing import Any, get_args


def _numeric(annotation: Any) -> bool:
    kinds = get_args(annotation) or (annotation,)
    return (int in kinds or float in kinds) and bool not in kinds


def numbers_not_booleans(model: Any, data: Any) -> Any:
    """``data`` as it is, or a ``ValueError`` naming the first number field given true/false
    (for a pydantic ``model_validator(mode="before")``)."""
    if not isinstance(data, dict):
        return data
    for name, field in model.model_fields.items():
        value = data.get(name)
        if isinstance(value, bool) and _numeric(field.annotation):
            raise ValueError(f"{name} is a number, not true/false (got {value}); give a number")
    return data
