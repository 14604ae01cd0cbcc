"""The reading surface of safetensors' ``safe_open`` on a checkpoint: a context manager,
``keys()``, ``get_tensor``, ``get_slice`` with ``get_shape``/``get_dtype``, safetensors'
framework names, and reprs that say what an object is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from safetensors_helpers import write_mixed_model
from zarr.storage import LocalStore

import wcodec_zarr as wc


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = write_mixed_model(tmp_path / "m.safetensors")
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", chunk_bytes=1 << 14, progress=False)
    return tmp_path / "ckpt", arrays


def test_used_as_safe_open(model: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = model
    with wc.open_checkpoint(path) as ckpt:
        assert list(ckpt.keys()) == list(arrays)
        for name in arrays:
            tensor = ckpt.get_tensor(name)
            assert tensor.dtype == arrays[name].dtype
            assert tensor.tobytes() == arrays[name].tobytes()
        part = ckpt.get_slice("layers.1.mlp.weight")
        assert part.get_shape() == [250, 192]
        assert part.get_dtype() == "BF16"
        assert len(part) == 250
        assert part[100:140, 8:].tobytes() == arrays["layers.1.mlp.weight"][100:140, 8:].tobytes()
        assert part[7].tobytes() == arrays["layers.1.mlp.weight"][7].tobytes()
    assert ckpt.closed
    with pytest.raises(ValueError, match="the checkpoint is closed"):
        ckpt.get_tensor("position_ids")
    with pytest.raises(ValueError, match="the checkpoint is closed"):
        part[0:2]


def test_a_store_passed_in_stays_open(model: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = model
    store = LocalStore(path, read_only=True)
    with wc.open_checkpoint(store) as ckpt:
        assert ckpt.get_tensor("position_ids").tobytes() == arrays["position_ids"].tobytes()
    group = zarr.open_group(store, mode="r")
    assert np.asarray(group["position_ids"][:]).tobytes() == arrays["position_ids"].tobytes()


@pytest.mark.parametrize(("given", "resolved"), [("np", "numpy"), ("numpy", "numpy")])
def test_safetensors_framework_names(
    model: tuple[Path, dict[str, np.ndarray]], given: str, resolved: str
) -> None:
    path, arrays = model
    with wc.open_checkpoint(path, framework=given) as ckpt:
        assert ckpt.framework == resolved
        assert isinstance(ckpt.get_tensor("layers.0.q.bias"), np.ndarray)
    tensors = wc.load_checkpoint(path, framework=given)
    assert tensors["layers.0.q.bias"].tobytes() == arrays["layers.0.q.bias"].tobytes()


def test_pt_is_torch(model: tuple[Path, dict[str, np.ndarray]]) -> None:
    torch = pytest.importorskip("torch")
    path, arrays = model
    with wc.open_checkpoint(path, framework="pt") as ckpt:
        assert ckpt.framework == "torch"
        tensor = ckpt.get_tensor("layers.2.mlp.weight")
        assert isinstance(tensor, torch.Tensor)
        assert tensor.dtype == torch.bfloat16
        assert tensor.view(torch.int16).numpy().tobytes() == arrays["layers.2.mlp.weight"].tobytes()
        rows = ckpt.get_slice("layers.2.q.weight")[10:20]
        assert isinstance(rows, torch.Tensor)
        assert rows.numpy().tobytes() == arrays["layers.2.q.weight"][10:20].tobytes()


@pytest.mark.parametrize("framework", ["tf", "jax", "torchx"])
def test_other_frameworks_are_refused_before_anything_is_read(
    tmp_path: Path, framework: str
) -> None:
    with pytest.raises(ValueError, match=r"framework must be 'numpy' \('np'\), 'torch' \('pt'\)"):
        wc.open_checkpoint(tmp_path / "nowhere", framework=framework)


def test_reprs_say_what_they_are(model: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = model
    ckpt = wc.open_checkpoint(path)
    text = repr(ckpt)
    assert text.startswith(f"Checkpoint({str(path)!r}, 13 tensors, ")
    assert f"{ckpt.nbytes / 1e6:.2f} MB stored in {ckpt.stored_nbytes / 1e6:.2f} MB" in text
    assert repr(ckpt["layers.0.q.weight"]) == (
        "LazyTensor('layers.0.q.weight', shape=(300, 256), dtype=int8)"
    )
    assert repr(ckpt.shard("layers.0.q.weight", 0, 1, 4)) == (
        "LazyTensor('layers.0.q.weight', shape=(75, 256), dtype=int8, region=[75:150, 0:256])"
    )
    assert repr(ckpt.get_slice("layers.0.q.bias")) == (
        "TensorSlice('layers.0.q.bias', shape=[256], dtype=F32, framework='numpy', device='cpu')"
    )
    assert repr(ckpt.files[0]) == f"FileInfo(name='m.safetensors', size={ckpt.files[0].size})"
    ckpt.close()
    assert repr(ckpt).endswith(", closed)")
