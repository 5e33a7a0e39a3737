"""The model registry: the one map from a model name (``"vade"``) to its estimator class.

A model is one module whose estimator class subclasses ``LatentEstimator``, sets the class
attributes ``_registry_name`` (its name) and ``_aux_name`` (the name of its auxiliary
argument, ``"u"`` for IVAE; None for unsupervised models) and carries ``@register``.
``idvae.models`` imports every model module, so the registry is complete once any part of
``idvae.models`` has been imported. The CLI (``--model``), the executors
(``EstimatorSpec``) and ``load`` look models up here and nowhere else.

This module imports nothing from the rest of ``idvae.models``, so every part of the
package can use it without an import cycle.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REGISTRY", "aux_argument", "get_estimator", "model_name", "register"]

REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: add an estimator class to ``REGISTRY`` under ``cls._registry_name``.

    Raises:
        TypeError: the class has no name.
        ValueError: another class is registered under the same name.
    """
    name = getattr(cls, "_registry_name", "")
    if not isinstance(name, str) or not name:
        raise TypeError(f"Expected {cls.__name__} to set _registry_name but it is empty")
    previous = REGISTRY.get(name)
    # the same class defined again (a module reloaded) replaces itself
    if previous is not None and (previous.__module__, previous.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ValueError(
            f"Expected a new model name but {name!r} is already taken by "
            f"{previous.__module__}.{previous.__qualname__}"
        )
    REGISTRY[name] = cls
    return cls


def get_estimator(name: str) -> type:
    """The estimator class registered under ``name`` (``"vade"``, ``"vae"``, ...)."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Expected a model in {sorted(REGISTRY)} but got {name!r}") from None


def model_name(estimator: Any) -> str:
    """The registry name of an estimator or estimator class."""
    cls = estimator if isinstance(estimator, type) else type(estimator)
    return str(getattr(cls, "_registry_name", ""))


def aux_argument(estimator: Any) -> str | None:
    """The name of the auxiliary argument of ``fit``/``transform`` (``"u"``), or None."""
    cls = estimator if isinstance(estimator, type) else type(estimator)
    return getattr(cls, "_aux_name", None)
