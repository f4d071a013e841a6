"""Numerical precision of inference: exact fp32, or bf16 where the hardware multiplies it natively.

``precision="fp32"`` is the exact mode: the features match the original code to 1e-4 (on CUDA, TF32 matrix products
are switched off while the model runs, since they round inputs to 10 bits of mantissa). ``"bf16"`` runs the model
under :func:`torch.autocast` with ``torch.bfloat16`` (matrix products and attention in bf16, norms and softmax in
fp32): several times faster on CPUs with bf16 matrix units (``avx512_bf16``, AMX) and on GPUs of compute capability
8.0 or newer, with features within a cosine of about 0.9999 of fp32. Elsewhere bf16 is emulated and slower than
fp32. ``"auto"`` picks bf16 where it is native and fp32 elsewhere.

Every function that runs the model takes ``precision=`` and records the precision actually used in its outputs'
provenance (the ``precision`` attribute).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from anysat_core.errors import ConfigError, EmulatedPrecisionWarning

__all__ = [
    "PRECISIONS",
    "bf16_native",
    "cast_weights",
    "cpu_flags",
    "lowp_view",
    "native_bf16",
    "precision_context",
    "resolve_device",
    "resolve_precision",
]

#: accepted values of ``precision=``
PRECISIONS = ("fp32", "bf16", "auto")
_warned_emulated: set[str] = set()  # devices already warned about (EmulatedPrecisionWarning: once per device)


@functools.cache
def cpu_flags() -> str:
    """This machine's CPU feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags")), "")


def native_bf16(cpu_flags: str, cuda_capability: tuple[int, int] | None) -> bool:
    """Whether bf16 matrix products run natively: a CUDA device of compute capability 8.0 or newer, or (for the CPU,
    ``cuda_capability=None``) ``avx512_bf16`` or AMX (``amx_bf16``) among the CPU flags."""
    if cuda_capability is not None:
        return cuda_capability[0] >= 8
    return bool(set(cpu_flags.split()) & {"avx512_bf16", "amx_bf16"})


def resolve_device(device: Any) -> torch.device:
    """``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a torch.device; None: the CPU) as a torch.device of this machine.

    Raises:
        ConfigError: not a torch device, or a CUDA device this machine does not have.
    """
    try:
        dev = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:1'") from e
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(
                f"device={str(dev)!r} but this machine has no CUDA device (torch {torch.__version__}); use 'cpu'"
            )
        if dev.index is not None and dev.index >= n:
            raise ConfigError(
                f"device={str(dev)!r} but this machine has {n} CUDA device(s): use cuda:0 to cuda:{n - 1}"
            )
    return dev


def bf16_native(device: Any = "cpu") -> bool:
    """:func:`native_bf16` for a device of this machine (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a torch.device)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return native_bf16("", torch.cuda.get_device_capability(dev))
    if dev.type == "cpu":
        return native_bf16(cpu_flags(), None)
    return False


def resolve_precision(precision: str, device: Any = "cpu") -> str:
    """The precision ``"fp32"`` or ``"bf16"`` that ``precision`` means on ``device`` (``"auto"``: bf16 where native).

    ``"bf16"`` is honoured everywhere; where it is not native an :class:`~anysat_core.errors.EmulatedPrecisionWarning`
    says so, once per device and process (it runs several times slower than fp32 there: 0.13-0.22x of the original
    on an AVX2 CPU).

    Raises:
        ConfigError: ``precision`` is not one of :data:`PRECISIONS`, or ``device`` is not a torch device.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision={precision!r}; expected one of {', '.join(PRECISIONS)} "
            "('fp32' exact, 'bf16' faster where the hardware has bf16 units, 'auto' picks)"
        )
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    dev = resolve_device(device)
    emulated = precision == "bf16" and dev.type in ("cpu", "cuda") and not bf16_native(dev)
    if emulated and str(dev) not in _warned_emulated:
        _warned_emulated.add(str(dev))
        what = "this CPU has no avx512_bf16 or AMX" if dev.type == "cpu" else f"{dev} has no bf16 matrix units"
        warnings.warn(
            f"precision='bf16' on {dev}: {what}, so bf16 is emulated and runs several times slower than fp32 here "
            "(features still within a cosine of about 0.9999). Use precision='auto' (fp32 on this device) or 'fp32'",
            EmulatedPrecisionWarning,
            stacklevel=3,
        )
    return precision


@contextlib.contextmanager
def precision_context(precision: str, device: Any = "cpu") -> Iterator[str]:
    """Run the enclosed model calls in ``precision`` on ``device``; yields the precision used (``"fp32"``/``"bf16"``).

    ``"fp32"`` on CUDA switches TF32 off for the duration (and restores the previous settings), so that exact mode
    stays exact on Ampere and newer GPUs.
    """
    used = resolve_precision(precision, device)
    dev = resolve_device(device)
    if used == "bf16":
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            yield used
        return
    if dev.type != "cuda":
        yield used
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield used
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


#: layers whose weight and bias autocast casts to the low precision at every call
_CAST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Cast(NamedTuple):
    key: tuple[Any, ...]  # what the copies were made from: dtype, then (name, storage, version, dtype, device) each
    weights: dict[str, torch.Tensor]  # by parameter name
    paths: frozenset[str]  # prefixes ("", "a.", "a.b.") of the modules that hold or lead to a copy


_cast_cache: weakref.WeakKeyDictionary[nn.Module, _Cast] = weakref.WeakKeyDictionary()


def _cast(model: nn.Module, dtype: torch.dtype) -> _Cast:
    params = [
        (f"{name}.{pname}" if name else pname, p)
        for name, module in model.named_modules()
        if isinstance(module, _CAST_LAYERS) and not getattr(module, "keep_dtype", False)
        for pname, p in module.named_parameters(recurse=False)
    ]
    key = (dtype, *((n, p.data_ptr(), p._version, p.dtype, p.device) for n, p in params))
    hit = _cast_cache.get(model)
    if hit is not None and hit.key == key:
        return hit
    with torch.no_grad():
        weights = {n: p.detach().to(dtype) for n, p in params}
    paths = frozenset({n[: i + 1] for n in weights for i, ch in enumerate(n) if ch == "."} | {""})
    _cast_cache[model] = made = _Cast(key, weights, paths)
    return made


def cast_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """``dtype`` copies of the weights and biases of ``model``'s linear and convolution layers, by parameter name.

    Under autocast these are the tensors cast again at every call (autocast's own cache lasts one ``with`` block):
    for the base model 352 casts, 62 ms per call on 2 CPU cores. :func:`lowp_view` puts them in a view of the model:
    the same results as plain autocast, bit for bit, without the casts (a layer whose weights the model also reads
    outside its forward, in full-precision arithmetic, is marked ``keep_dtype = True`` and left out). The copies are
    kept for the model's lifetime (2 bytes per value in bf16: at most 16 MB for tiny, 250 MB for base) and made again
    when a parameter changes (training step, ``load_state_dict``, ``.to(device)``).
    """
    return _cast(model, dtype).weights


def lowp_view(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """A view of ``model`` whose linear and convolution layers hold the :func:`cast_weights` copies: run it under
    autocast for autocast's results without its per-call weight casts.

    The view is a new tree of module objects over the same submodules' state (every other parameter, buffer, hook
    and setting is shared, read at the time of the call), so ``model`` itself is never changed: other threads may
    use it meanwhile, in any precision. Only the modules on the way to a replaced weight are new objects; making the
    view (and checking that the copies are current) costs about 2 ms; use it for one call.
    """
    made = _cast(model, dtype)
    return _view(model, made.weights, made.paths, "")


def _view(module: nn.Module, weights: dict[str, torch.Tensor], paths: frozenset[str], prefix: str) -> nn.Module:
    """``module`` itself where nothing under it is replaced, else a new object over its state."""
    if prefix not in paths:
        return module
    view = object.__new__(type(module))
    state = module.__dict__.copy()
    params = dict(module._parameters)
    for name in params:
        if prefix + name in weights:
            params[name] = weights[prefix + name]  # type: ignore[assignment]
    state["_parameters"] = params
    state["_modules"] = {
        name: None if sub is None else _view(sub, weights, paths, f"{prefix}{name}.")
        for name, sub in module._modules.items()
    }
    view.__dict__ = state
    return view
