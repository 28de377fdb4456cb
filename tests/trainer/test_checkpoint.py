"""Checkpoints in a store: whole or absent, the pointer last, old ones pruned, verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from astroingest._exceptions import StoreError
from astroingest_trainer import _storeio
from astroingest_trainer._checkpoint import POINTER, CheckpointStore, checkpoint_key
from tests.s3server import MotoServer


def state(step: int, size: int = 1000) -> dict[str, object]:
    torch.manual_seed(step)
    return {"step": step, "weights": torch.randn(size), "note": f"step {step}"}


def test_save_points_latest_at_it_and_prunes(tmp_path: Path) -> None:
    store = CheckpointStore((tmp_path / "ckpt").as_uri(), {}, keep=2)
    assert store.latest() is None
    for step in (10, 20, 30):
        pointer = store.save(step, state(step))
    assert store.steps() == [20, 30]
    latest = store.latest()
    assert latest == pointer and latest.step == 30 and latest.sha256
    loaded = store.load(latest)
    assert torch.equal(loaded["weights"], state(30)["weights"])
    saved = json.loads((tmp_path / "ckpt" / POINTER).read_text())
    assert saved["key"] == checkpoint_key(30)


def test_without_a_pointer_the_newest_complete_checkpoint_is_found(tmp_path: Path) -> None:
    store = CheckpointStore((tmp_path / "ckpt").as_uri(), {}, keep=5)
    store.save(1, state(1))
    store.save(2, state(2))
    (tmp_path / "ckpt" / POINTER).unlink()  # as if killed between commit and pointer
    latest = store.latest()
    assert latest is not None and (latest.step, latest.sha256) == (2, None)
    assert store.load(latest)["step"] == 2


def test_a_damaged_checkpoint_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore((tmp_path / "ckpt").as_uri(), {})
    pointer = store.save(5, state(5))
    path = tmp_path / "ckpt" / pointer.key
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="does not match its sha256"):
        store.load(pointer)


def test_an_upload_left_without_commit_leaves_nothing(tmp_path: Path) -> None:
    store = _storeio.open_store((tmp_path / "s").as_uri())
    with pytest.raises(RuntimeError), _storeio.UploadStream(store, "x.pt", part=1024) as out:
        out.write(b"a" * 600_000)  # past the local writer's buffer: a temp file exists
        assert any(p.is_file() for p in (tmp_path / "s").iterdir())
        raise RuntimeError("killed mid-save")
    assert _storeio.stat(store, "x.pt") is None
    assert [p.name for p in (tmp_path / "s").iterdir() if p.is_file()] == []


def test_on_s3_multipart_and_leftovers_of_a_dead_save(s3: MotoServer) -> None:
    client = s3.client()
    client.create_bucket(Bucket="ckpt-bucket")
    url = "s3://ckpt-bucket/runs/era5"
    store = CheckpointStore(url, {"endpoint_url": s3.endpoint}, keep=1)
    big = state(1, size=3 * 2**20)  # 12 MiB of weights: more than one 8 MiB part
    pointer = store.save(1, big)
    assert torch.equal(store.load(pointer)["weights"], big["weights"])
    assert pointer.size is not None and pointer.size > 12 * 2**20

    # a save killed mid-way leaves a multipart upload behind; the next run removes it
    client.create_multipart_upload(Bucket="ckpt-bucket", Key="runs/era5/step-0000000002.pt")
    client.create_multipart_upload(Bucket="ckpt-bucket", Key="runs/era5/other.bin")
    assert store.clean_partial() == 1
    left = client.list_multipart_uploads(Bucket="ckpt-bucket").get("Uploads", [])
    assert [u["Key"] for u in left] == ["runs/era5/other.bin"]  # not ours: left alone
    assert store.latest() == pointer
