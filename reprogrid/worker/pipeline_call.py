"""The record of a pipeline call: what the pipeline really received, read from the objects.

A batch's call record holds every argument of the pipeline class's
``__call__`` that can change pixels, by diffusers' own names: the value passed,
or the pipeline's default (read from its signature at run time) for those not
passed. The arguments that differ per image (``prompt``, ``negative_prompt``,
``generator``) are named in ``per_image`` with the recipe field each image's
value comes from. The sampler is recorded as built: its class and its whole
``config``, read from the instance the pipeline ran with. One record serves a
whole batch. ``reprogrid.models.calls`` reads and compares recorded calls.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from reprogrid.models.calls import PER_IMAGE_ARGUMENTS

# __call__ arguments that cannot change pixels: how the result is returned or watched.
NOT_PIXEL_ARGUMENTS = frozenset(
    {
        "return_dict",
        "callback",
        "callback_steps",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
    }
)


def call_record(
    pipeline: Any,
    passed: Mapping[str, Any],
    sampler: Mapping[str, Any],
    classifier_free_guidance: bool | None,
) -> dict[str, Any]:
    """The record of calling ``pipeline`` with ``passed`` (keyword arguments).

    ``sampler`` is the sampler as built, ``{"class", "config"}``, read from the
    instance before the call (some samplers rewrite their config while they
    set their timesteps); ``classifier_free_guidance`` whether the call ran it.
    """
    arguments: dict[str, Any] = {}
    defaults: list[str] = []
    for name, parameter in call_parameters(pipeline).items():
        if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        if name in NOT_PIXEL_ARGUMENTS or (name in PER_IMAGE_ARGUMENTS and name in passed):
            continue
        if name in passed:
            arguments[name] = jsonable(passed[name])
        else:
            arguments[name] = jsonable(parameter.default)
            defaults.append(name)
    for name, value in passed.items():  # taken by a **kwargs
        if name not in arguments and name not in PER_IMAGE_ARGUMENTS:
            arguments[name] = jsonable(value)
    return {
        "pipeline_class": type(pipeline).__name__,
        "arguments": arguments,
        "defaults": defaults,
        "per_image": {k: v for k, v in PER_IMAGE_ARGUMENTS.items() if k in passed},
        "sampler": dict(sampler),
        "classifier_free_guidance": classifier_free_guidance,
    }


def call_parameters(pipeline: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of the ``__call__`` that calling ``pipeline`` runs (its class's), ``self``
    left out: read from the function, once per function."""
    return _parameters_of(type(pipeline).__call__)


@functools.lru_cache(maxsize=64)
def _parameters_of(function: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    parameters = dict(inspect.signature(function).parameters)
    del parameters[next(iter(parameters))]  # self
    return MappingProxyType(parameters)


def sampler_record(sampler: Any) -> dict[str, Any]:
    """A sampler instance's class and whole config, without diffusers' bookkeeping keys."""
    config = {k: jsonable(v) for k, v in sampler.config.items() if not k.startswith("_")}
    return {"class": type(sampler).__name__, "config": config}


def jsonable(value: Any) -> Any:
    """``value`` as Python's JSON can hold it (non-finite floats as ``Infinity``, ``NaN``):
    tuples as lists, anything else not JSON as its repr."""
    if value is inspect.Parameter.empty:
        return {"required": True}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)  # -inf too (DPM-Solver's lambda_min_clipped): JSON as -Infinity
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return {"repr": repr(value)}
