"""Precision of inference: fp32 (exact) / bf16 / auto, through extract_features, embed_dataset and infer_scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anysat_core as ac
from anysat_core import precision as prec
from anysat_core.embeddings import embed_dataset


@pytest.mark.parametrize(
    ("flags", "cap", "expected"),
    [
        ("fpu sse avx2 avx512f avx512_vnni", None, False),  # AVX-512 without bf16 units: emulated, slower
        ("fpu avx512f avx512_bf16", None, True),  # Cooper Lake, Zen 4
        ("fpu avx512f amx_bf16 amx_tile", None, True),  # Sapphire Rapids (AMX)
        ("", (7, 5), False),  # Turing
        ("", (8, 0), True),  # A100
        ("", (9, 0), True),  # H100
    ],
)
def test_native_bf16_rule(flags, cap, expected):
    assert prec.native_bf16(flags, cap) is expected


def _two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_picks_bf16_exactly_where_it_is_native(monkeypatch):
    _two_gpus(monkeypatch)
    monkeypatch.setattr(prec, "cpu_flags", lambda: "fpu avx512f avx512_bf16")
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(prec, "cpu_flags", lambda: "fpu avx2")
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert prec.resolve_precision("auto", "cuda:0") == "bf16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert prec.resolve_precision("auto", "cuda") == "fp32"
    assert prec.resolve_precision("fp32", "cuda") == "fp32"


def test_bf16_where_it_is_emulated_runs_but_warns(monkeypatch):
    import warnings

    _two_gpus(monkeypatch)
    monkeypatch.setattr(prec, "_warned_emulated", set())
    monkeypatch.setattr(prec, "cpu_flags", lambda: "fpu avx2 fma")
    with pytest.warns(
        ac.EmulatedPrecisionWarning, match=r"precision='bf16' on cpu: this CPU has no avx512_bf16.*'auto'"
    ):
        assert prec.resolve_precision("bf16", "cpu") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prec.resolve_precision("bf16", "cpu") == "bf16"  # once per device, not at every call
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.warns(ac.EmulatedPrecisionWarning, match=r"cuda:1 has no bf16 matrix units"):
        assert prec.resolve_precision("bf16", "cuda:1") == "bf16"
    monkeypatch.setattr(prec, "cpu_flags", lambda: "fpu avx512f avx512_bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prec.resolve_precision("bf16", "cpu") == "bf16"  # native: no warning
        assert prec.resolve_precision("fp32", "cpu") == "fp32"
        monkeypatch.setattr(prec, "cpu_flags", lambda: "fpu avx2")
        assert prec.resolve_precision("auto", "cpu") == "fp32"  # auto never picks an emulated bf16
        assert prec.resolve_precision("bf16", "mps") == "bf16"  # a device this check knows nothing about: no claim


def test_bad_precision_or_device_says_what_is_accepted(monkeypatch):
    with pytest.raises(ac.ConfigError, match=r"precision='fp16'.*fp32, bf16, auto"):
        prec.resolve_precision("fp16")
    with pytest.raises(ac.ConfigError, match="not a torch device"):
        prec.resolve_precision("auto", "gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for precision in ("auto", "bf16", "fp32"):
        with pytest.raises(ac.ConfigError, match=r"device='cuda' but this machine has no CUDA device.*use 'cpu'"):
            prec.resolve_precision(precision, "cuda")
    _two_gpus(monkeypatch)
    with pytest.raises(ac.ConfigError, match=r"'cuda:2' but this machine has 2 CUDA device\(s\): use cuda:0 to cuda:1"):
        prec.resolve_precision("fp32", "cuda:2")
    model = ac.AnySat(size="test")
    sample = ac.get_dataset("geoplex-mini", split="test", modalities=["s2"], seed=0)[0]
    with pytest.raises(ac.ConfigError, match="precision"):
        ac.extract_features(model, sample, patch_size_m=20, precision="half")


def test_precision_context_sets_autocast_only_for_bf16():
    with prec.precision_context("fp32") as used:
        assert used == "fp32" and not torch.is_autocast_enabled("cpu")
    with prec.precision_context("bf16") as used:
        assert used == "bf16" and torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(a.shape[0], -1).T, b.reshape(b.shape[0], -1).T  # (cells, D)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bf16_features_stay_close_to_fp32_and_record_their_precision(monkeypatch):
    model = ac.AnySat.from_pretrained("geoplex-mini")
    sample = ac.get_dataset("geoplex-mini", split="test", modalities=["s2", "s1-asc"], seed=0)[0]
    kw = {"patch_size_m": 10, "output": "dense", "output_modality": "s2"}
    exact = ac.extract_features(model, sample, **kw)
    fast = ac.extract_features(model, sample, precision="bf16", **kw)
    assert exact.attrs["precision"] == "fp32" and fast.attrs["precision"] == "bf16"
    cos = _cosines(exact.values, fast.values)
    assert cos.min() > 0.999, cos.min()  # measured 0.99991 on this map
    assert not np.array_equal(exact.values, fast.values)  # bf16 really ran
    again = ac.extract_features(model, sample, **kw)
    np.testing.assert_array_equal(exact.values, again.values)  # the model left in fp32, autocast off after
    monkeypatch.setattr(prec, "bf16_native", lambda device="cpu": True)
    assert ac.extract_features(model, sample, precision="auto", **kw).attrs["precision"] == "bf16"
    monkeypatch.setattr(prec, "bf16_native", lambda device="cpu": False)
    assert ac.extract_features(model, sample, precision="auto", **kw).attrs["precision"] == "fp32"


def test_embed_dataset_and_infer_scene_take_precision(tmp_path):
    model = ac.AnySat.from_pretrained("geoplex-mini")
    world = ac.get_dataset("geoplex-mini", split="test", modalities=["s2"], seed=0)
    maps, _, _ = embed_dataset(model, world, patch_size_m=20, output="patch", indices=[0, 1], precision="bf16")
    assert [m.attrs["precision"] for m in maps] == ["bf16", "bf16"]
    tiles, _, _ = embed_dataset(model, world, patch_size_m=20, indices=[0, 1], precision="bf16")
    exact, _, _ = embed_dataset(model, world, patch_size_m=20, indices=[0, 1])
    assert _cosines(exact.T, tiles.T).min() > 0.999

    import rasterio
    from affine import Affine

    path = tmp_path / "s2_20200601.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=24, height=24, count=10, dtype="float32", crs="EPSG:32631",
        transform=Affine(10, 0, 500_000, 0, -10, 4_800_000),
    ) as f:  # fmt: skip
        f.write(np.random.default_rng(0).uniform(200, 3000, (10, 24, 24)).astype("float32"))
    src = ac.RasterSource([path], modality="s2")
    kw = {"patch_size_m": 20, "window_m": 120, "overlap_m": 20, "output": "patch", "progress": False}
    out = ac.infer_scene(model, src, out=tmp_path / "f.tif", precision="bf16", **kw)
    with rasterio.open(out) as f:
        assert f.tags()["precision"] == "bf16"
    mem = ac.infer_scene(model, src, **kw)
    assert mem.attrs["precision"] == "fp32"


def test_bf16_weights_are_cast_once_per_model_with_autocasts_results():
    """run_model in bf16 takes the linear/conv weights from cast_weights (cast once, not at every call) and gives
    plain autocast's output bit for bit; changed parameters are cast again."""
    from anysat_core.data.synthetic import random_batch
    from anysat_core.features import run_model

    torch.manual_seed(0)
    model = ac.AnySat(size="tiny").eval()
    batch = random_batch(["aerial", "s2", "s1-asc"], batch_size=2, seed=0)
    for output, om in (("tile", None), ("dense", "s2")):
        with torch.inference_mode(), prec.precision_context("bf16"):
            ref = model(batch, patch_size_m=20, output=output, output_modality=om)
        got = run_model(model, batch, 20, output, om, "bf16")
        assert got.dtype == ref.dtype
        assert torch.equal(got, ref), output
    weights = prec.cast_weights(model)
    assert weights and all(w.dtype == torch.bfloat16 for w in weights.values())
    assert "projector_aerial.patch_embed.weight" in weights  # the convolution too
    assert not any("fc1_k" in n for n in weights)  # read in fp32 by folded_scores: autocast casts it as before
    assert prec.cast_weights(model) is weights  # kept between calls
    state = {k: v + 0.01 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    again = prec.cast_weights(model)
    assert again is not weights
    name = next(iter(again))
    torch.testing.assert_close(again[name], model.get_parameter(name).detach().bfloat16())
    with torch.inference_mode(), prec.precision_context("bf16"):
        ref = model(batch, patch_size_m=20, output="tile")
    assert torch.equal(run_model(model, batch, 20, "tile", None, "bf16"), ref)  # the new weights, not stale ones


def test_bf16_calls_leave_the_model_alone_for_other_threads():
    """The bf16 path runs a view of the model (lowp_view): the model's own parameters stay fp32 Parameters during the
    call, so fp32 calls in other threads at the same time give their exact results."""
    import threading

    from anysat_core.data.synthetic import random_batch
    from anysat_core.features import run_model

    torch.manual_seed(0)
    model = ac.AnySat(size="test").eval()
    batch = random_batch(["s2", "s1-asc"], batch_size=1, seed=0)
    first = next(
        m
        for name, m in model.named_modules()
        if name.startswith("projector_s2") and isinstance(m, torch.nn.Linear) and not getattr(m, "keep_dtype", False)
    )
    seen: list[torch.dtype] = []
    hook = first.register_forward_hook(lambda mod, args, out: seen.append(first.weight.dtype))
    exact = run_model(model, batch, 20, "tile", None, "fp32")
    run_model(model, batch, 20, "tile", None, "bf16")
    hook.remove()
    assert seen == [torch.float32, torch.float32]  # the hook (shared with the view) ran; the model kept fp32
    view = prec.lowp_view(model)
    assert view is not model and first.weight.dtype == torch.float32
    assert all(isinstance(p, torch.nn.Parameter) and p.dtype == torch.float32 for p in model.parameters())

    errors: list[BaseException] = []

    def loop(precision: str) -> None:
        try:
            for _ in range(5):
                out = run_model(model, batch, 20, "tile", None, precision)
                if precision == "fp32":
                    assert torch.equal(out, exact)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(p,)) for p in ("fp32", "bf16", "fp32", "bf16")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
