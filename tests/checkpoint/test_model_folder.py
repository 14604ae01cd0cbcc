"""A Hugging Face model folder converts with its other files (config, tokenizer, generation
config, README, files in subfolders) kept verbatim: ``other_files`` lists them, ``export``,
the ``wcodec`` filesystem and ``info`` show them, ``verify`` compares them, and a round trip
gives the folder back byte for byte. Hidden files and weights in other formats stay behind.
The same code path reads a folder on object storage (any fsspec URL: ``s3://`` here, ``hf://``
where huggingface_hub is installed)."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pytest
from helpers import new_bucket, server_fixture, tree_bytes
from safetensors_helpers import write_sharded_model

import wcodec_zarr as wc
from wcodec_zarr.cli import main
from wcodec_zarr.testing import LoopbackS3

CARRIED = {
    "config.json": b'{"architectures": ["BertModel"], "hidden_size": 384}\n',
    "generation_config.json": b'{"do_sample": false}',
    "tokenizer.json": json.dumps({"model": {"vocab": {str(i): i for i in range(3000)}}}).encode(),
    "tokenizer_config.json": b"{}",
    "README.md": "# model\n\nweights \u2013 and a card\n".encode(),
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "empty.txt": b"",
}
LEFT_BEHIND = {
    ".gitattributes": b"*.safetensors filter=lfs",
    ".cache/huggingface/download.lock": b"",
    "pytorch_model.bin": b"\x80\x02 pickled weights",
    "consolidated.safetensors": b"another copy of the weights",
}


def hf_folder(folder: Path) -> Path:
    write_sharded_model(folder, np.random.default_rng(3))
    for name, data in {**CARRIED, **LEFT_BEHIND}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def carried_tree(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree_bytes(folder).items() if k not in LEFT_BEHIND}


@pytest.mark.parametrize("given", ["folder", "index"])
def test_folder_round_trip_byte_identical(tmp_path: Path, given: str) -> None:
    model = hf_folder(tmp_path / "model")
    src = model if given == "folder" else model / "model.safetensors.index.json"
    wc.convert(src, tmp_path / "ckpt", progress=False)
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    assert {f.name: f.size for f in ckpt.other_files} == {k: len(v) for k, v in CARRIED.items()}
    for name, data in CARRIED.items():
        assert ckpt.read_other_file(name) == data
    written = wc.export_safetensors(tmp_path / "ckpt", tmp_path / "back")
    assert len(written) == 3 + len(CARRIED)  # two weight files, the index, the others
    assert tree_bytes(tmp_path / "back") == carried_tree(model)
    assert wc.verify(src, tmp_path / "ckpt").exact


def test_filesystem_info_and_verify_show_the_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = hf_folder(tmp_path / "model")
    wc.convert(model, tmp_path / "ckpt", progress=False)
    fs = fsspec.filesystem("wcodec", target=str(tmp_path / "ckpt"))
    assert set(fs.ls("", detail=False)) == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        *CARRIED,
    }
    assert fs.cat_file("1_Pooling/config.json") == CARRIED["1_Pooling/config.json"]
    assert fs.info("tokenizer.json")["size"] == len(CARRIED["tokenizer.json"])

    assert main(["info", str(tmp_path / "ckpt"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["other_files"]
    assert listed == [{"name": k, "size": len(v)} for k, v in sorted(CARRIED.items())]
    assert main(["info", str(tmp_path / "ckpt")]) == 0
    assert "other files (7): 1_Pooling/config.json, README.md, config.json" in (
        capsys.readouterr().out
    )

    (model / "config.json").write_bytes(b'{"hidden_size": 768}')
    report = wc.verify(model, tmp_path / "ckpt")
    assert report.mismatches == [("config.json", "file differs")]
    (model / "config.json").unlink()
    (model / "added.json").write_bytes(b"{}")
    report = wc.verify(model, tmp_path / "ckpt")
    assert report.mismatches == [("added.json", "file missing from the checkpoint")]


def test_a_damaged_other_file_is_named(tmp_path: Path) -> None:
    model = hf_folder(tmp_path / "model")
    wc.convert(model, tmp_path / "ckpt", progress=False)
    stored = tmp_path / "ckpt" / "_wcodec_files" / "config.json"
    data = bytearray(stored.read_bytes())
    data[3] ^= 0x20
    stored.write_bytes(bytes(data))
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"_wcodec_files/config.json: damaged"):
        ckpt.read_other_file("config.json")
    stored.write_bytes(bytes(1 << 20))  # larger than the manifest says: refused by its size
    with pytest.raises(
        ValueError,
        match=rf"_wcodec_files/config.json: damaged \(1048576 bytes, {len(CARRIED['config.json'])}",
    ):
        ckpt.read_other_file("config.json")
    stored.unlink()
    with pytest.raises(ValueError, match=r"_wcodec_files/config.json: object missing"):
        ckpt.read_other_file("config.json")
    with pytest.raises(FileNotFoundError, match=r"nothing\.json: not a file of"):
        ckpt.read_other_file("nothing.json")
    assert ckpt.read_other_file("README.md") == CARRIED["README.md"]


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "../outside.json", "size": 2, "crc32c": "00000000"},
        {"name": "/etc/passwd", "size": 2, "crc32c": "00000000"},
        {"name": "a.json", "size": -1, "crc32c": "00000000"},
        {"name": "a.json", "size": 2, "crc32c": "xyz"},
    ],
)
def test_hostile_other_file_entries_are_refused(tmp_path: Path, entry: dict[str, object]) -> None:
    model = hf_folder(tmp_path / "model")
    wc.convert(model, tmp_path / "ckpt", progress=False)
    root = tmp_path / "ckpt" / "zarr.json"
    document = json.loads(root.read_text())
    document["attributes"]["wcodec_checkpoint"]["other_files"] = [entry]
    root.write_text(json.dumps(document))  # another layout: no checksum to check
    with pytest.raises(ValueError, match="malformed checkpoint manifest"):
        wc.open_checkpoint(tmp_path / "ckpt")


server = server_fixture(LoopbackS3)


@pytest.mark.s3
def test_folder_on_object_storage(server: LoopbackS3, tmp_path: Path) -> None:
    model = hf_folder(tmp_path / "model")
    bucket = new_bucket(server)
    options = server.storage_options()
    fs = fsspec.filesystem("s3", **options)
    fs.put(str(model), f"{bucket}/model", recursive=True)
    wc.convert(f"s3://{bucket}/model", tmp_path / "ckpt", storage_options=options, progress=False)
    wc.export_safetensors(tmp_path / "ckpt", tmp_path / "back")
    assert tree_bytes(tmp_path / "back") == carried_tree(model)
    # and into object storage, read back through the filesystem view
    wc.convert(
        f"s3://{bucket}/model", f"s3://{bucket}/ckpt", storage_options=options, progress=False
    )
    ckpt = wc.open_checkpoint(f"s3://{bucket}/ckpt", storage_options=options)
    assert {f.name: ckpt.read_other_file(f.name) for f in ckpt.other_files} == CARRIED
