"""Does pretraining on GeoPlex-mini learn something?  A report script (not a test).

``python -m training.report`` pretrains AnySat with the ``geoplex-mini-cpu`` recipe (:data:`RECIPE`, the values of
``training/configs/geoplex-mini-cpu.yaml``) on the train tiles of the GeoPlex-mini world of seed
``RECIPE["world_seed"]``, prints the loss curve, then fits the same probes on **held-out** tiles (every tile of the
world of seed ``--heldout-seed``, a different world than pretraining saw) with three feature sets:

(a) a randomly initialised AnySat of the same architecture and modalities;
(b) raw band statistics: per tile, the mean and standard deviation of every band of every modality over its valid
    pixels and dates (tile probe); per 10 m cell, the mean and standard deviation over valid dates of every band
    (pixel probe);
(c) the pretrained teacher encoder (the student with ``--set export='"student"'``; the other one is probed too, as
    (c'), for information); ``--checkpoint`` probes a saved one instead of pretraining, e.g.
    ``anysat_core/weights/anysat-tiny-geoplex-mini.pt``; ``--supervised STEPS`` trains (c) on the tile labels of the
    pretraining world instead (a supervised reference: how far this architecture's tile token goes on the probe).

Probes (the same settings for the three): :class:`anysat_core.TileProbe` (multilabel logistic regression on the
tile token, 5-fold cross-validation over the held-out tiles, macro F1) and :class:`anysat_core.PixelProbe`
(logistic regression per 10 m cell of the ``dense`` S2 map, fitted on the held-out world's train+val tiles and
evaluated on its test tiles, mIoU from :mod:`anysat_core.analysis.metrics`).

``--ship`` writes the teacher to ``anysat_core/weights/anysat-tiny-geoplex-mini.pt`` (half precision, only the
projectors it was trained with) and the JSON beside it (recipe, world, commit, command, curve, sha256, probe
figures and a feature checksum on a fixed held-out tile).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anysat_core import AnySat, PixelProbe, TileProbe
from anysat_core.analysis.metrics import confusion_matrix, miou
from anysat_core.data.collate import collate
from anysat_core.data.datasets import get_dataset
from anysat_core.data.geoplex_mini import CLASSES, GENERATOR_VERSION

__all__ = ["RECIPE", "encode", "heldout", "main", "pretrain", "probe", "raw_statistics"]

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "anysat_core" / "weights" / "anysat-tiny-geoplex-mini.pt"

#: The geoplex-mini-cpu recipe (kept equal to training/configs/geoplex-mini-cpu.yaml).
RECIPE: dict[str, Any] = {
    "size": "tiny",
    "modalities": ["s2", "s1-asc"],
    "world_seed": 0,
    "tiles": 24,
    "tile_m": 60.0,
    "scales_m": [10.0, 20.0],
    "batch_size": 8,
    "max_steps": 150,
    "seed": 0,
    "mask": {
        "n_targets": 4,
        "target_area": [0.1, 0.3],
        "target_aspect": [0.75, 1.5],
        "context_area": [0.85, 1.0],
        "min_keep": 4,
    },
    "lr": 5e-4,
    "warmup_steps": 10,
    "weight_decay": 0.05,
    "ema": [0.996, 1.0],
    "jepa_weight": 0.01,
    "contrastive_weight": 0.01,
    "tau": 0.2,
    "date_keep": 0.5,
    "modality_keep": 0.5,
    "predictor_depth": 2,
    "gradient_clip_val": 1.0,
    "tile_weight": 0.0,
    "contrastive_head": False,
    "variance_weight": 0.0,
    "tile_variance_weight": 0.0,
    "tile_contrastive_weight": 0.0,
    "tile_tau": 0.1,
    "tile_bow_weight": 1.0,
    "bow_words": 16,
    "bow_view": "context",
    "export": "teacher",
}
#: Probe settings, the same for (a), (b) and (c).
PROBE: dict[str, Any] = {"patch_size_m": 20.0, "C": 1.0, "cv": 5, "seed": 0, "max_pixels": 50_000}
HELDOUT_SEED = 1
HELDOUT_TILES = 16


# ------------------------------------------------------------------------------------------------ data
def heldout(
    modalities: Sequence[str], seed: int = HELDOUT_SEED, tiles: int = HELDOUT_TILES, cache_dir: str | None = None
) -> dict[str, Any]:
    """Every tile of the GeoPlex-mini world ``seed``: samples (normalised), multi-hot labels ``(N, K)``, class maps
    ``(N, 6, 6)`` on the 10 m grid and the split of each tile."""
    kw: dict[str, Any] = {"seed": seed, "modalities": tuple(modalities), "tiles": tiles, "split": "all"}
    ds = get_dataset("geoplex-mini", cache_dir=cache_dir, **kw)
    seg = get_dataset("geoplex-mini", task="segmentation", label_gsd_m=10.0, cache_dir=cache_dir, **kw)
    samples = [ds[i] for i in range(len(ds))]
    return {
        "samples": samples,
        "multilabel": np.stack([s["label"].numpy() for s in samples]),
        "segmentation": np.stack([seg[i]["label"].numpy() for i in range(len(seg))]),
        "split": np.array([s["meta"].split for s in samples]),
    }


def _valid_values(sample: Mapping[str, Any], m: str) -> np.ndarray:
    """``(T, C, H, W)`` values of a modality with NaN where its mask says invalid (a single image gets T = 1)."""
    x = sample[m].numpy().astype(np.float64)
    if x.ndim == 3:
        x = x[None]
    mask = sample.get(f"{m}_mask")
    if mask is not None:
        x = np.where(np.broadcast_to(mask.numpy().astype(bool), x.shape), x, np.nan)
    return x


def raw_statistics(samples: Sequence[Mapping[str, Any]], modalities: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Baseline (b): tile features ``(N, 2 * sum C)`` (per band mean/std over valid pixels and dates) and pixel
    features ``(N, 36, 2 * sum C)`` (per 10 m cell and band, mean/std over valid dates; coarser modalities are
    repeated onto the 10 m grid)."""
    tiles, cells = [], []
    for s in samples:
        tf, cf = [], []
        for m in modalities:
            x = _valid_values(s, m)
            C, H = x.shape[1:3]
            with np.errstate(all="ignore"):
                tf += [np.nanmean(x, axis=(0, 2, 3)), np.nanstd(x, axis=(0, 2, 3))]
                per_cell = np.concatenate([np.nanmean(x, 0), np.nanstd(x, 0)])  # (2C, H, W)
            r = max(1, 6 // H)
            per_cell = per_cell.repeat(r, 1).repeat(r, 2)[:, :6, :6]
            cf.append(per_cell.reshape(2 * C, -1).T)
        tiles.append(np.nan_to_num(np.concatenate(tf)))
        cells.append(np.nan_to_num(np.concatenate(cf, 1)))
    return np.stack(tiles), np.stack(cells)


@torch.inference_mode()
def encode(
    model: AnySat, samples: Sequence[Mapping[str, Any]], patch_size_m: float, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Tile tokens ``(N, D)`` and dense S2 features per 10 m cell ``(N, 36, 2D)`` of ``model`` (eval mode, fp32)."""
    model = model.float().eval()
    tiles, cells = [], []
    for i in range(0, len(samples), batch_size):
        b = collate([dict(s) for s in samples[i : i + batch_size]])
        tiles.append(model(b, patch_size_m=patch_size_m, output="tile").numpy())
        dense = model(b, patch_size_m=patch_size_m, output="dense", output_modality="s2")
        cells.append(dense.flatten(1, 2).numpy())
    return np.concatenate(tiles), np.concatenate(cells)


def probe(tile_x: np.ndarray, cell_x: np.ndarray, data: Mapping[str, Any]) -> dict[str, float]:
    """The tile probe (5-fold macro F1 over all held-out tiles) and the pixel probe (fitted on train+val tiles,
    mIoU on test tiles) of one feature set."""
    tp = TileProbe("multilabel", C=PROBE["C"], cv=PROBE["cv"], seed=PROBE["seed"])
    cv = tp.cross_validate(tile_x, data["multilabel"])
    fit = data["split"] != "test"
    K = len(CLASSES)
    pp = PixelProbe(K, C=PROBE["C"], max_pixels=PROBE["max_pixels"], seed=PROBE["seed"])
    D = cell_x.shape[-1]
    pp.fit_pixels(cell_x[fit].reshape(-1, D), data["segmentation"][fit].reshape(-1))
    pred = pp.predict_proba(cell_x[~fit].reshape(-1, D)).argmax(1)
    cm = confusion_matrix(data["segmentation"][~fit].reshape(-1), pred, K)
    return {
        "tile_F1_macro": float(cv["F1_macro"]),
        "tile_F1_macro_std": float(cv["F1_macro_std"]),
        "tile_F1_micro": float(cv["F1_micro"]),
        "pixel_mIoU": float(miou(cm)),
    }


# ------------------------------------------------------------------------------------------------ pretraining
def pretrain(recipe: Mapping[str, Any], cache_dir: str | None = None, log_every: int = 10) -> dict[str, Any]:
    """Pretrain with ``recipe`` on 1 CPU process; returns ``{"module", "curve", "wall_s", "s_per_step"}``.

    ``curve`` holds ``(step, seconds, loss, jepa, contrastive)`` after every optimiser step.
    """
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from training.data import PretrainDataModule
    from training.jepa import AnySatJEPA

    r = dict(recipe)
    options: dict[str, Any] = {"seed": r["world_seed"], "tiles": r["tiles"], "tile_m": r["tile_m"]}
    if cache_dir is not None:
        options["cache_dir"] = cache_dir
    data = PretrainDataModule(
        [
            {
                "name": "geoplex-mini",
                "modalities": list(r["modalities"]),
                "scales_m": list(r["scales_m"]),
                "batch_size": r["batch_size"],
                "options": options,
            }
        ],
        mask={k: tuple(v) if isinstance(v, list) else v for k, v in r["mask"].items()},
        seed=r["seed"],
        val_split=None,
    )
    module = AnySatJEPA(
        size=r["size"],
        modalities=list(r["modalities"]),
        predictor_depth=r["predictor_depth"],
        lr=r["lr"],
        warmup_steps=r["warmup_steps"],
        weight_decay=r["weight_decay"],
        total_steps=r["max_steps"],
        ema=tuple(r["ema"]),
        jepa_weight=r["jepa_weight"],
        contrastive_weight=r["contrastive_weight"],
        tau=r["tau"],
        date_keep=r["date_keep"],
        modality_keep=r["modality_keep"],
        seed=r["seed"],
        tile_weight=r.get("tile_weight", 0.0),
        contrastive_head=r.get("contrastive_head", False),
        variance_weight=r.get("variance_weight", 0.0),
        tile_variance_weight=r.get("tile_variance_weight", 0.0),
        tile_contrastive_weight=r.get("tile_contrastive_weight", 0.0),
        tile_tau=r.get("tile_tau", 0.1),
        tile_bow_weight=r.get("tile_bow_weight", 0.0),
        bow_words=r.get("bow_words", 32),
        bow_view=r.get("bow_view", "context"),
    )
    curve: list[tuple[int, float, float, float, float]] = []
    start = time.perf_counter()

    class _Curve(Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            m = trainer.callback_metrics
            row = (
                int(trainer.global_step),
                round(time.perf_counter() - start, 2),
                *(round(float(m[f"train/{k}"]), 5) for k in ("loss", "jepa", "contrastive")),
            )
            curve.append(row)  # type: ignore[arg-type]
            if row[0] % log_every == 0 or row[0] == 1:
                extra = "".join(
                    f"  {k} {float(m[f'train/{k}']):.4f}"
                    for k in ("tile", "variance", "tile_variance", "tile_contrastive", "tile_bow")
                    if f"train/{k}" in m
                )
                print(
                    f"  step {row[0]:4d}  {row[1]:7.1f} s  loss {row[2]:.4f}  jepa {row[3]:.4f}  con {row[4]:.4f}{extra}"
                )

    L.seed_everything(r["seed"], verbose=False)
    trainer = L.Trainer(
        max_steps=r["max_steps"],
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_Curve()],
        log_every_n_steps=1,
        gradient_clip_val=r["gradient_clip_val"],
    )
    trainer.fit(module, data)
    wall = time.perf_counter() - start
    return {"module": module, "curve": curve, "wall_s": wall, "s_per_step": wall / max(1, len(curve))}


def supervised(
    recipe: Mapping[str, Any],
    steps: int,
    lr: float = 5e-4,
    batch_size: int = 16,
    cache_dir: str | None = None,
    log_every: int = 25,
) -> dict[str, Any]:
    """A supervised reference, not pretraining: the recipe's architecture (random init, seed ``recipe["seed"]``)
    plus a linear head trained with binary cross-entropy on the **labels** (multi-label classes) of the train tiles
    of the pretraining world, on the tile token (patch size cycling through ``recipe["scales_m"]``), AdamW with
    warm-up + cosine.  Probing its encoder on the held-out world tells how far a tile token of this architecture
    can go on this probe when it is trained for the task (the room above random init that pretraining can aim at).

    Returns ``{"model", "curve", "wall_s", "s_per_step"}``; ``curve`` holds ``(step, seconds, bce)``.
    """
    from training.schedules import lr_factor

    r = dict(recipe)
    ds = get_dataset(
        "geoplex-mini",
        seed=r["world_seed"],
        modalities=tuple(r["modalities"]),
        tiles=r["tiles"],
        tile_m=r["tile_m"],
        split="train",
        cache_dir=cache_dir,
    )
    samples = [ds[i] for i in range(len(ds))]
    labels = torch.stack([s["label"] for s in samples]).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(r["seed"])
        model = AnySat(r["size"], modalities=tuple(r["modalities"]))
        head = torch.nn.Linear(model.embed_dim, labels.shape[1])
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=r["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: lr_factor(i, steps, warmup_steps=r["warmup_steps"], kind="cosine", min_ratio=0.0)
    )
    rng = np.random.default_rng(r["seed"])
    model.train()
    curve: list[tuple[int, float, float]] = []
    start = time.perf_counter()
    for step in range(steps):
        idx = rng.choice(len(samples), size=min(batch_size, len(samples)), replace=False)
        batch = collate([dict(samples[i]) for i in idx])
        ps = float(r["scales_m"][step % len(r["scales_m"])])
        logits = head(model(batch, patch_size_m=ps, output="tile"))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, r["gradient_clip_val"])
        opt.step()
        sched.step()
        curve.append((step + 1, round(time.perf_counter() - start, 2), round(float(loss.detach()), 5)))
        if (step + 1) % log_every == 0 or step == 0:
            print(f"  step {step + 1:4d}  {curve[-1][1]:7.1f} s  bce {curve[-1][2]:.4f}")
    wall = time.perf_counter() - start
    return {"model": model.eval(), "curve": curve, "wall_s": wall, "s_per_step": wall / max(1, steps)}


# ------------------------------------------------------------------------------------------------ shipping
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def feature_checksum(model: AnySat, sample: Mapping[str, Any], patch_size_m: float) -> dict[str, Any]:
    """Tile token and patch tokens of one sample (fp32 forward): their sum, sum of squares and first values."""
    with torch.inference_mode():
        out = model.float().eval()(collate([dict(sample)]), patch_size_m=patch_size_m, output="all")[0]
    return {
        "patch_size_m": patch_size_m,
        "shape": list(out.shape),
        "sum": float(out.double().sum()),
        "sum_sq": float((out.double() ** 2).sum()),
        "tile_first8": [float(v) for v in out[0, :8]],
    }


def ship(teacher: AnySat, record: dict[str, Any], path: Path = WEIGHTS) -> dict[str, Any]:
    """Write ``teacher`` in half precision (anysat_core format) at ``path`` and the JSON record beside it."""
    from anysat_core.model.checkpoint import sha256_file

    path.parent.mkdir(parents=True, exist_ok=True)
    half = AnySat(config=teacher.config)
    half.load_state_dict(teacher.state_dict())
    half = half.half()
    half.save(path, overwrite=True)
    record = dict(record)
    record["file"] = path.name
    record["bytes"] = path.stat().st_size
    record["sha256"] = sha256_file(path)
    record["dtype"] = "float16"
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


# ------------------------------------------------------------------------------------------------ main
def _row(name: str, r: Mapping[str, float]) -> str:
    return (
        f"| {name} | {100 * r['tile_F1_macro']:.1f} ± {100 * r['tile_F1_macro_std']:.1f} | "
        f"{100 * r['tile_F1_micro']:.1f} | {100 * r['pixel_mIoU']:.1f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.report", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="probe this saved AnySat instead of pretraining (e.g. the shipped file)")
    p.add_argument("--max-steps", type=int, help=f"override the recipe's steps ({RECIPE['max_steps']})")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="override recipe values, e.g. lr=1e-3")
    p.add_argument("--heldout-seed", type=int, default=HELDOUT_SEED)
    p.add_argument("--heldout-tiles", type=int, default=HELDOUT_TILES)
    p.add_argument("--cache-dir", default=None, help="GeoPlex-mini cache folder (default: none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ship", action="store_true", help=f"write the teacher to {WEIGHTS.relative_to(ROOT)} + JSON")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument(
        "--supervised",
        type=int,
        metavar="STEPS",
        help="instead of pretraining, train (c) for STEPS steps on the pretraining world's tile labels (a reference)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = dict(RECIPE)
    if args.max_steps:
        recipe["max_steps"] = args.max_steps
    for kv in args.set:
        k, v = kv.split("=", 1)
        if k not in recipe:
            p.error(f"unknown recipe key {k!r}; expected one of {', '.join(recipe)}")
        recipe[k] = json.loads(v)
    if recipe["world_seed"] == args.heldout_seed:
        p.error("the held-out world must differ from the pretraining world (--heldout-seed)")
    if recipe.get("export", "teacher") not in ("teacher", "student"):
        p.error(f'export={recipe["export"]!r}; expected "teacher" (the EMA encoder) or "student"')
    if args.supervised and (args.ship or args.checkpoint):
        p.error("--supervised trains a supervised reference: it cannot be shipped nor combined with --checkpoint")

    result: dict[str, Any] = {"recipe": recipe, "generator_version": GENERATOR_VERSION}
    if args.checkpoint:
        trained = AnySat.from_checkpoint(args.checkpoint).float()
        print(f"checkpoint {args.checkpoint}")
        meta = Path(args.checkpoint).with_suffix(".json")
        if meta.is_file():
            recipe = json.loads(meta.read_text()).get("recipe", recipe)
    elif args.supervised:
        print(f"supervised reference on the labels of world {recipe['world_seed']}: {json.dumps(recipe)}")
        run = supervised(recipe, args.supervised, cache_dir=args.cache_dir)
        trained = run["model"]
        print(f"wall {run['wall_s']:.0f} s, {run['s_per_step']:.2f} s/step")
        result.update(curve=run["curve"], wall_s=run["wall_s"], s_per_step=run["s_per_step"], supervised=True)
    else:
        print(f"pretraining: {json.dumps(recipe)}")
        run = pretrain(recipe, args.cache_dir)
        module = run["module"]
        trained = module.student_encoder() if recipe.get("export", "teacher") == "student" else module.teacher_encoder()
        curve = run["curve"]
        picks = sorted({0, *range(0, len(curve), max(1, len(curve) // 8)), len(curve) - 1})
        print("loss curve (step: loss / jepa / contrastive):")
        for i in picks:
            s, _, loss, j, c = curve[i]
            print(f"  {s:4d}: {loss:.4f} / {j:.4f} / {c:.4f}")
        print(f"wall {run['wall_s']:.0f} s, {run['s_per_step']:.2f} s/step")
        result.update(curve=curve, wall_s=run["wall_s"], s_per_step=run["s_per_step"])

    mods = list(recipe["modalities"])
    t0 = time.perf_counter()
    data = heldout(mods, args.heldout_seed, args.heldout_tiles, args.cache_dir)
    print(f"held-out: GeoPlex-mini world seed {args.heldout_seed}, {len(data['samples'])} tiles ({mods})")
    ps = PROBE["patch_size_m"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"] + 12345)
        random_model = AnySat(recipe["size"], modalities=tuple(mods))
    figures = {
        "(a) random init": probe(*encode(random_model, data["samples"], ps), data),
        "(b) raw band statistics": probe(*raw_statistics(data["samples"], mods), data),
        "(c) pretrained": probe(*encode(trained, data["samples"], ps), data),
    }
    other = None
    if not (args.checkpoint or args.supervised):  # for information (not part of the target): the other encoder
        student = recipe.get("export", "teacher") == "student"
        other = run["module"].teacher_encoder() if student else run["module"].student_encoder()
        name = "(c') pretrained teacher (EMA)" if student else "(c') pretrained student"
        figures[name] = probe(*encode(other, data["samples"], ps), data)
    print(f"probes in {time.perf_counter() - t0:.0f} s (patch {ps:g} m)")
    print("| features | tile macro F1 (%) | tile micro F1 (%) | pixel mIoU (%) |\n|---|---|---|---|")
    for k, v in figures.items():
        print(_row(k, v))
    a, b, c = (figures[k] for k in ("(a) random init", "(b) raw band statistics", "(c) pretrained"))
    gain = 100 * (c["tile_F1_macro"] - a["tile_F1_macro"])
    met = gain >= 10 and c["tile_F1_macro"] > b["tile_F1_macro"] and c["pixel_mIoU"] > b["pixel_mIoU"]
    print(f"(c) - (a) = {gain:+.1f} macro F1 points; target {'met' if met else 'NOT met'}")
    result["probes"] = figures
    result["heldout"] = {"world_seed": args.heldout_seed, "tiles": args.heldout_tiles, **PROBE}
    if args.ship and not args.checkpoint:
        record = {
            "name": "geoplex-mini",
            "config": trained.config.to_dict(),
            "modalities": mods,
            "recipe": recipe,
            "data": {
                "dataset": "geoplex-mini",
                "world_seed": recipe["world_seed"],
                "tiles": recipe["tiles"],
                "tile_m": recipe["tile_m"],
                "split": "train",
                "generator_version": GENERATOR_VERSION,
            },
            "git_commit": _git("rev-parse", "HEAD"),
            "command": "python -m training.report " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, no GPU",
            "wall_s": round(result["wall_s"], 1),
            "s_per_step": round(result["s_per_step"], 3),
            "curve": {"columns": ["step", "seconds", "loss", "jepa", "contrastive"], "rows": result["curve"]},
            "probes": figures,
            "heldout": result["heldout"],
        }
        half = AnySat(config=trained.config)
        half.load_state_dict(trained.state_dict())
        half = half.half().float()  # what loading the fp16 file gives
        one = collate([dict(data["samples"][0])])
        with torch.inference_mode():
            f32 = trained.float().eval()(one, patch_size_m=ps, output="all")[0]
            f16 = half.eval()(one, patch_size_m=ps, output="all")[0]
        diff = float((f32 - f16).abs().max())
        print(f"fp16 storage: features within {diff:.2e} of fp32 (max abs difference on held-out tile 0)")
        record["feature_check"] = {
            "world_seed": args.heldout_seed,
            "tiles": args.heldout_tiles,
            "index": 0,
            **feature_checksum(half, data["samples"][0], ps),
            "fp32_tile_first8": [float(v) for v in f32[0, :8]],
            "max_abs_diff_fp16_vs_fp32": diff,
        }
        rec = ship(trained, record)
        print(f"shipped {WEIGHTS} ({rec['bytes'] / 1e6:.2f} MB, sha256 {rec['sha256'][:12]}...)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0 if math.isfinite(a["tile_F1_macro"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
