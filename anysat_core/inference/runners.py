"""Model runners of scene inference: a runner takes batches of window samples and returns their feature maps.

``runner(batches)`` gets a list of batches (each a list of samples) and returns, in the same order, one float32
array ``(B, h, w, D)`` per batch.  :func:`local_runner` runs them in this process; :func:`dask_runner` scatters the
model once to the workers of a ``distributed`` cluster (each keeps one rebuilt model, by weights hash) and gathers
the batches in submission order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch import nn

from anysat_core.data.collate import collate
from anysat_core.data.sample import Sample
from anysat_core.errors import ConfigError, OutputError, SchedulerUnreachableError
from anysat_core.features import run_model

#: ``runner(batches) -> [(B, h, w, D) float32 per batch]``.
Runner = Callable[[list[list[Sample]]], list[np.ndarray]]

_WORKER_MODELS: dict[str, nn.Module] = {}  # one model per worker process, by weights hash

#: Seconds a scheduler address is given to answer before :class:`~anysat_core.errors.SchedulerUnreachableError`
#: (distributed's own default is 30 s); change it here or with ``connect_timeout_s=``.
CONNECT_TIMEOUT_S = 5.0


def _run_batch(
    model: nn.Module, samples: list[Sample], patch_size_m: float, output: str, om: str, precision: str = "fp32"
) -> np.ndarray:
    """One batch of windows -> ``(B, h, w, D)`` float32."""
    return run_model(model, collate(samples), patch_size_m, output, om, precision).float().cpu().numpy()


def local_runner(model: nn.Module, patch_size_m: float, output: str, om: str, precision: str = "fp32") -> Runner:
    """Runs the batches one after the other in this process (in ``precision``: ``"fp32"`` or ``"bf16"``)."""

    def run(batches: list[list[Sample]]) -> list[np.ndarray]:
        return [_run_batch(model, b, patch_size_m, output, om, precision) for b in batches]

    return run


def _model_payload(model: nn.Module, sha: str) -> dict[str, Any]:
    """What a worker needs to rebuild the model: config + state dict for AnySat, the module itself otherwise."""
    from anysat_core.model.anysat import AnySat

    if type(model) is AnySat:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return {"sha": sha, "config": model.config.to_dict(), "state_dict": state}
    return {"sha": sha, "module": model}


def _worker_model(payload: dict[str, Any]) -> nn.Module:
    """The payload's model, rebuilt once per worker (a new weights hash replaces the cached model)."""
    sha = payload["sha"]
    model = _WORKER_MODELS.get(sha)
    if model is None:
        if "module" in payload:
            model = payload["module"]
        else:
            from anysat_core.config import AnySatConfig
            from anysat_core.model.anysat import AnySat

            model = AnySat(config=AnySatConfig.from_dict(payload["config"]))
            model.load_state_dict(payload["state_dict"])
        model.eval()
        _WORKER_MODELS.clear()  # keep one model per worker
        _WORKER_MODELS[sha] = model
    return model


def _worker_run(
    payload: dict[str, Any], samples: list[Sample], patch_size_m: float, output: str, om: str, precision: str = "fp32"
) -> np.ndarray:
    """Runs on a dask worker: one batch of windows -> ``(B, h, w, D)`` float32."""
    return _run_batch(_worker_model(payload), samples, patch_size_m, output, om, precision)


def connect_client(client: Any, timeout_s: float | None = None) -> tuple[Any, bool]:
    """``(distributed.Client, own)``: ``client`` as given (``own`` False), or connected to the scheduler address
    ``client`` (``own`` True: the caller closes it), waiting at most ``timeout_s`` seconds (default
    :data:`CONNECT_TIMEOUT_S`).

    Raises:
        SchedulerUnreachableError: nothing answers at the address within ``timeout_s`` (refused port, unroutable
            host, firewall), or what answers is not a Dask scheduler; the message names the address.
        ConfigError: ``client`` is neither an address string nor a ``distributed.Client``, or a bad ``timeout_s``.
    """
    if not isinstance(client, str):
        if all(callable(getattr(client, name, None)) for name in ("scatter", "submit", "gather")):
            return client, False
        raise ConfigError(
            f"client={client!r} ({type(client).__name__}); expected a distributed.Client or the address of a Dask "
            "scheduler such as 'tcp://10.0.0.5:8786', or None to run in this process"
        )
    timeout = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ConfigError(f"connect_timeout_s={timeout_s!r}; expected a positive number of seconds, e.g. 5")
    try:
        from distributed import Client
    except ImportError as e:  # pragma: no cover - distributed is a dependency of this feature
        raise OutputError("client= needs the 'distributed' package (pip install distributed)") from e
    try:
        return Client(client, timeout=timeout), True
    except Exception as e:  # timed out, refused, unresolvable, or a service that is not a scheduler (any error)
        first = str(e).splitlines()[0] if str(e) else ""
        raise SchedulerUnreachableError(
            f"no Dask scheduler answers at {client!r} within {timeout:g} s ({type(e).__name__}: {first}); start one "
            "there (dask scheduler) or check the address and port (the scheduler prints it, e.g. "
            "'tcp://10.0.0.5:8786'); pass client=None to run in this process"
        ) from e


@contextlib.contextmanager
def dask_runner(
    client: Any,
    model: nn.Module,
    sha: str,
    patch_size_m: float,
    output: str,
    om: str,
    *,
    precision: str = "fp32",
    connect_timeout_s: float | None = None,
) -> Iterator[Runner]:
    """A runner on a ``distributed.Client`` (or a scheduler address, then connected here, within
    ``connect_timeout_s`` seconds, and closed at the end: see :func:`connect_client`)."""
    cl, own = connect_client(client, connect_timeout_s)
    try:
        payload = cl.scatter(_model_payload(model, sha), broadcast=True)

        def run(batches: list[list[Sample]]) -> list[np.ndarray]:
            futs = [
                cl.submit(_worker_run, payload, b, patch_size_m, output, om, precision, pure=False) for b in batches
            ]
            return list(cl.gather(futs))  # in submission order

        yield run
    finally:
        if own:
            cl.close()
