"""Reading, checking and writing AnySat checkpoints; fetching the released weights.

Formats read by :func:`load_checkpoint` (always with ``torch.load(weights_only=True)``):

* **official**: ``{'state_dict': AnyModule.state_dict()}`` as released (``AnySat.pth`` on the Hugging Face
  repo ``g-astruc/AnySat``) and as written by the original code; size inferred from shapes if not given.
* **anysat_core**: ``{'format': 'anysat_core', 'format_version': 1, 'config': {...}, 'state_dict': ...}`` as
  written by :func:`save_checkpoint`; the embedded config rebuilds the model.
* a bare state dict, or a training checkpoint whose keys carry a prefix (``model.``, ``target_encoder.``...):
  :func:`checkpoint_filter_fn` strips the prefix in front of the top-level ``cls_token``.

Parameter names are the official ones (``AnySat.state_dict()`` can be loaded by the original code), so
:func:`checkpoint_filter_fn` is the only conversion; every missing, unexpected or mis-shaped key is reported at
once in a :class:`~anysat_core.errors.CheckpointMismatchError`.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from anysat_core.config import SIZES, AnySatConfig, config_for_size
from anysat_core.errors import CheckpointError, CheckpointMismatchError, PretrainedWeightsError
from anysat_core.memory import check_memory, format_bytes
from anysat_core.modalities import MODALITIES
from anysat_core.writers import check_destination, save_torch

if TYPE_CHECKING:
    from anysat_core.model.anysat import AnySat

__all__ = [
    "ENV_VAR",
    "FORMAT",
    "HF_FILENAME",
    "HF_REPO",
    "checkpoint_filter_fn",
    "load_checkpoint",
    "model_bytes",
    "pretrained_path",
    "read_state_dict",
    "save_checkpoint",
    "shipped_path",
]

FORMAT = "anysat_core"
FORMAT_VERSION = 1
HF_REPO = "g-astruc/AnySat"
HF_FILENAME = "models/AnySat.pth"
HF_URL = f"https://huggingface.co/{HF_REPO}/resolve/main/{HF_FILENAME}"
#: Environment variable naming a local copy of ``AnySat.pth``; it takes precedence over downloading.
ENV_VAR = "ANYSAT_WEIGHTS"
_MAX_LISTED = 30


def _read(path: str | os.PathLike[str], map_location: str | torch.device) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist or is not a file; pass the path of a .pth file")
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {str(p)!r} ({e}); check its permissions") from e
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch.save's zip nor a (legacy) pickle
        raise CheckpointError(
            f"checkpoint {str(p)!r} ({p.stat().st_size} bytes, starting with {head!r}) is not a PyTorch file; "
            "expected a file written by torch.save holding {'state_dict': ...} (a .pth file). Check the path; if the "
            "file is empty or truncated, download or save it again"
        )
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle with code objects, not a torch file...
        raise CheckpointError(
            f"cannot read checkpoint {str(p)!r} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "expected a file written by torch.save holding {'state_dict': ...}. If it is truncated, download it again."
        ) from e


def read_state_dict(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], AnySatConfig | None]:
    """Split a loaded checkpoint object into ``(state_dict, config or None)``; strips key prefixes."""
    config = None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        version = obj.get("format_version", 1)
        if not isinstance(obj.get("config"), dict) or not isinstance(obj.get("state_dict"), dict):
            raise CheckpointError(
                f"{source} is marked {FORMAT!r} but lacks a 'config' or 'state_dict' dict; it is damaged. "
                "Save the model again with AnySat.save()"
            )
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source} has format_version {version!r}; this anysat_core reads up to "
                f"{FORMAT_VERSION}. Upgrade anysat_core."
            )
        config = AnySatConfig.from_dict(obj["config"])
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        kind = f"a dict with keys {sorted(map(str, obj))[:10]}" if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{source} holds {kind}; expected {{'state_dict': {{name: tensor}}}} (official AnySat format) or a "
            "file written by AnySat.save()"
        )
    return checkpoint_filter_fn(sd), config


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a foreign state dict to this model's keys (the one place that does it, as in timm).

    A training checkpoint nests the encoder under a prefix (``model.``, ``model.target_encoder.``...): the keys
    under the prefix of the top-level ``cls_token`` are kept without it, the rest (predictor, optimiser state) is
    dropped.  Keys of the released checkpoint are already this model's.
    """
    top = [k for k in state_dict if k.endswith("cls_token") and not k.endswith("spatial_encoder.cls_token")]
    if len(top) == 1 and top[0] != "cls_token":
        prefix = top[0][: -len("cls_token")]
        return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return dict(state_dict)


def _projector_modalities(sd: dict[str, torch.Tensor]) -> tuple[str, ...] | None:
    """The modalities whose ``projector_<m>.`` keys the state dict holds (registry order), None if it holds none."""
    found = {m.group(1) for k in sd if (m := re.match(r"projector_([^.]+)\.", k))}
    mods = tuple(m for m in MODALITIES if m in found)
    return mods or None


def _infer_config(sd: dict[str, torch.Tensor], size: str | None) -> AnySatConfig:
    """The config of a state dict without one: ``size`` (else the size its shapes match) with the modalities whose
    projectors it holds (a model trained on a subset of the modalities has only theirs)."""
    mods = _projector_modalities(sd)
    extra = {"modalities": mods} if mods is not None else {}
    if size is not None:
        return config_for_size(size, **extra)
    if "cls_token" not in sd:
        raise CheckpointMismatchError(
            "checkpoint has no 'cls_token'; it is not an AnySat state dict (pass size= to see every missing key)",
            missing=["cls_token"],
        )
    dim = int(sd["cls_token"].shape[-1])
    depth = len({m.group(1) for k in sd if (m := re.match(r"spatial_encoder\.predictor_blocks\.(\d+)\.", k))})
    for name, hp in SIZES.items():
        if hp["embed_dim"] == dim and hp["depth"] == depth:
            return config_for_size(name, **extra)
    custom = AnySatConfig(size="custom", embed_dim=dim, depth=max(depth, 1), num_heads=max(1, dim // 64))
    return custom.replace(**extra) if extra else custom


def model_bytes(config: AnySatConfig) -> int:
    """Bytes of the float32 parameters of an AnySat model of ``config``, estimated from below from the config alone
    (nothing is built): its transformer blocks (``depth`` main and ``depth`` spatial-encoder blocks and the combiner,
    about 3/4 of every released size; the projectors are left out).

    Each block holds the attention projections (``4 D^2``) and the MLP (``2 D H`` with ``H = int(D * mlp_ratio)``).
    """
    D, H = config.embed_dim, int(config.embed_dim * config.mlp_ratio)
    block = 4 * D * D + 2 * D * H + 11 * D + H  # qkv + proj (or wk, wv, proj + query), fc1 + fc2, biases and norms
    return 4 * (2 * config.depth + 1) * block


def _tensor_bytes(sd: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in sd.values())


def _signature(config: AnySatConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the state-dict keys that follow directly from ``config`` (width, depth, MLP width): a check of a file
    against a config without building the model (the full check is :func:`check_state_dict`)."""
    D, H, depth = config.embed_dim, int(config.embed_dim * config.mlp_ratio), config.depth
    shapes: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, D), "spatial_encoder.cls_token": (1, 1, D)}
    for i in range(depth):
        for prefix in (f"blocks.{i}.", f"spatial_encoder.predictor_blocks.{i}."):
            shapes[prefix + "attn.qkv.weight"] = (3 * D, D)
            shapes[prefix + "mlp.fc1.weight"] = (H, D)
    shapes[f"blocks.{depth}.attn.wk.weight"] = (D, D)  # the combiner
    shapes[f"blocks.{depth}.mlp.fc1.weight"] = (H, D)
    return shapes


def _differs(config: AnySatConfig, sd: dict[str, torch.Tensor]) -> bool:
    """True when the file's tensors cannot be those of a model of ``config``: a key of :func:`_signature` missing or
    of another shape, blocks beyond ``depth``, or projectors of other modalities."""
    for k, shape in _signature(config).items():
        if k not in sd or tuple(sd[k].shape) != shape:
            return True
    extra_block = re.compile(r"(blocks\.(\d+)|spatial_encoder\.predictor_blocks\.(\d+))\.")
    projectors = set()
    for k in sd:
        m = extra_block.match(k)
        if m and (int(m.group(2)) > config.depth if m.group(2) else int(m.group(3)) >= config.depth):
            return True
        if k.startswith("projector_"):
            projectors.add(k[len("projector_") :].split(".", 1)[0])
    return projectors != set(config.modalities)


def check_state_dict(
    model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint", *, fix: str | None = None
) -> None:
    """Raise :class:`CheckpointMismatchError` listing every missing, unexpected and mis-shaped key; ``fix`` replaces
    the default advice (pass the size the checkpoint was trained with)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = [
        (k, tuple(sd[k].shape), tuple(own[k].shape)) for k in sorted(set(own) & set(sd)) if sd[k].shape != own[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return

    def listing(title: str, items: list[str]) -> str:
        more = f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(items[:_MAX_LISTED]) + more

    cfg = getattr(model, "config", None)
    what = f"an AnySat {cfg.size} model (embed_dim {cfg.embed_dim}, depth {cfg.depth})" if cfg else "the model"
    msg = f"{source} does not match {what}:"
    if missing:
        msg += listing("missing keys", missing)
    if unexpected:
        msg += listing("unexpected keys", unexpected)
    if mismatched:
        msg += listing("mis-shaped keys", [f"{k} checkpoint {s} vs model {m}" for k, s, m in mismatched])
    sizes = "|".join(repr(name) for name in SIZES)
    msg += "\n" + (fix or f"Pass the size the checkpoint was trained with (size={sizes}), or check the file.")
    raise CheckpointMismatchError(msg, missing=missing, unexpected=unexpected, mismatched=mismatched)


def load_checkpoint(
    cls: type[AnySat],
    path: str | os.PathLike[str],
    *,
    size: str | None = None,
    map_location: str | torch.device = "cpu",
) -> AnySat:
    """Build a model from ``path`` (see the module doc for formats); returned in eval mode.

    Before the model is built, the config (embedded, inferred or given by ``size``) is checked against the memory
    limit (:func:`~anysat_core.memory.check_memory`, with :func:`model_bytes`) and against the file's tensors (a
    mismatch lists every key, from a model of meta tensors that allocates nothing).

    Raises:
        CheckpointError: unreadable file or unknown format.
        CheckpointMismatchError: a config or ``size`` whose keys or shapes differ from the file's tensors.
        MemoryLimitError: a config whose model would not fit in the allowed share of this machine's memory.
    """
    source = f"checkpoint {str(path)!r}"
    sd, config = read_state_dict(_read(path, map_location), source)
    if config is not None and size is not None and config.size != size:
        raise CheckpointMismatchError(
            f"{source} holds an AnySat {config.size!r} model but size={size!r} was requested; "
            f"pass size={config.size!r} or omit size"
        )
    fix = (
        "The config stored in the file does not describe its tensors: the file is damaged or was edited; save the "
        "model again with AnySat.save()."
        if config is not None
        else None
    )
    config = config or _infer_config(sd, size)
    c = config
    check_memory(
        model_bytes(c),
        f"the AnySat model that {source} declares (embed_dim {c.embed_dim}, depth {c.depth}, mlp_ratio {c.mlp_ratio:g})",
        f"the file's tensors hold {format_bytes(_tensor_bytes(sd))}: a config that declares more than its tensors is "
        "damaged or edited (save the model again with AnySat.save()); if the model is really this large, use a "
        "machine with more memory or a larger ANYSAT_MEMORY_SHARE",
    )
    if _differs(config, sd):  # refused before the real model is built: a model of meta tensors lists every key
        with torch.device("meta"):
            shell = cls(config=config)
        check_state_dict(shell, sd, source, fix=fix)
    model = cls(config=config)
    check_state_dict(model, sd, source, fix=fix)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def save_checkpoint(model: AnySat, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write ``model`` in the anysat_core format, atomically (temporary file in the same folder, then rename).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False, or is a folder.
        CheckpointError: the folder of ``path`` does not exist.
        OutputWriteError: the file cannot be written (read-only folder, full disk, file size limit); an existing
            ``path`` is then left unchanged and no temporary file remains.
    """
    from anysat_core import __version__

    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    check_destination(path, overwrite, ".pth file")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "anysat_core_version": __version__,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    save_torch(payload, path)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _help(extra: str = "") -> str:
    return (
        f"{extra}Fetch {HF_FILENAME} from the Hugging Face repo {HF_REPO} ({HF_URL}) on a machine with internet, "
        f"then pass it with AnySat.from_pretrained('base', path='/path/to/AnySat.pth') or "
        f"AnySat.from_checkpoint('/path/to/AnySat.pth'), or set {ENV_VAR}=/path/to/AnySat.pth."
    )


def verify_download(path: str | os.PathLike[str]) -> None:
    """Check a file from the Hugging Face cache against its content hash.

    Large (LFS) files live in the cache as ``blobs/<sha256>``: the file's SHA-256 must equal its blob name.
    """
    blob = Path(os.path.realpath(path))
    if re.fullmatch(r"[0-9a-f]{64}", blob.name) and sha256_file(blob) != blob.name:
        raise PretrainedWeightsError(
            f"{str(path)!r} is corrupt (its SHA-256 differs from the published hash {blob.name}); delete "
            f"{str(blob)!r} and call from_pretrained again to download it anew. " + _help()
        )


#: Weights shipped inside the package (name -> file under ``anysat_core/weights/``), loaded offline.
SHIPPED = {"geoplex-mini": "anysat-tiny-geoplex-mini.pt"}
#: Names :func:`pretrained_path` knows: the released weights (downloaded) and the shipped ones.
PRETRAINED = ("base", *SHIPPED)


def shipped_path(name: str = "geoplex-mini", *, verify: bool = True) -> str:
    """Path of weights shipped with the package (``anysat_core/weights/``), checked against the SHA-256 recorded in
    the JSON beside them.

    Raises:
        PretrainedWeightsError: an unknown name, a missing file or record, or a file whose SHA-256 differs.
    """
    import json

    if name not in SHIPPED:
        raise PretrainedWeightsError(f"no shipped weights named {name!r}; shipped: {', '.join(SHIPPED)}")
    weights = Path(__file__).resolve().parent.parent / "weights" / SHIPPED[name]
    record = weights.with_suffix(".json")
    if not weights.is_file() or not record.is_file():
        raise PretrainedWeightsError(
            f"the shipped weights {name!r} are missing ({str(weights)!r} or its .json record); the installation is "
            "incomplete: reinstall anysat-explorer, or rebuild them with `python -m training.report --ship`"
        )
    if verify:
        try:
            expected = json.loads(record.read_text())["sha256"]
        except (OSError, ValueError, KeyError) as e:
            raise PretrainedWeightsError(f"cannot read the SHA-256 of {name!r} from {str(record)!r} ({e})") from e
        got = sha256_file(weights)
        if got != expected:
            raise PretrainedWeightsError(
                f"the shipped weights {str(weights)!r} are corrupt or were changed (SHA-256 {got[:16]}..., recorded "
                f"{str(expected)[:16]}...); reinstall anysat-explorer or rebuild them with "
                "`python -m training.report --ship`"
            )
    return str(weights)


def pretrained_path(
    size: str = "base",
    *,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    verify: bool = True,
) -> str:
    """Local path of named pretrained weights: ``"base"``, the released weights, downloaded once through
    ``huggingface_hub``; ``"geoplex-mini"``, the tiny model shipped with the package (offline, :func:`shipped_path`).

    For ``"base"``, the order is: ``path`` argument, then the ``ANYSAT_WEIGHTS`` environment variable, then the
    Hugging Face cache (``cache_dir`` or the default ``HF_HOME``), downloading if missing unless ``local_files_only``
    or ``HF_HUB_OFFLINE=1``.  Downloads are checked against their published SHA-256, shipped weights against the
    SHA-256 recorded beside them.

    Raises:
        PretrainedWeightsError: an unknown name (the message lists the names), file missing, offline without a
            cached copy, or a corrupt file; the message says which file to fetch and how to pass it.
    """
    if size in SHIPPED:
        return shipped_path(size, verify=verify)
    if size != "base":
        raise PretrainedWeightsError(
            f"no pretrained weights named {size!r}; expected 'base' (the released GeoPlex weights, downloaded; only "
            "'base' was published) or 'geoplex-mini' (a tiny model pretrained on GeoPlex-mini, shipped with the "
            f"package). Use AnySat(size={size!r}) for a randomly initialised model or AnySat.from_checkpoint(path) "
            "for your own weights."
        )
    for given, origin in ((path, "path argument"), (os.environ.get(ENV_VAR) or None, f"{ENV_VAR} variable")):
        if given:
            if not Path(given).is_file():
                raise PretrainedWeightsError(f"{origin} points to {str(given)!r}, which is not a file. " + _help())
            return str(given)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise PretrainedWeightsError(
            "huggingface_hub is not installed (pip install huggingface_hub). " + _help()
        ) from e
    try:
        local = hf_hub_download(
            repo_id=HF_REPO,
            filename=HF_FILENAME,
            revision=revision,
            cache_dir=None if cache_dir is None else str(cache_dir),
            local_files_only=local_files_only,
        )
    except Exception as e:  # offline, DNS failure, HTTP error, missing cache entry...
        raise PretrainedWeightsError(
            f"could not get the AnySat weights ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            + _help()
        ) from e
    if verify:
        verify_download(local)
    return local
