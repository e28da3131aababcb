"""The model store: atomic snapshots (a reader never sees a partial one), manifests with
hashes, pruning to the last N."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import orjson

from schemas.manifest import MANIFEST_FILE, MODEL_FILE, VOCABULARY_FILE, Parity, SnapshotManifest
from schemas.model_store import ModelStore
from schemas.reward import Reward


def write(store: ModelStore, n: int) -> None:
    store.write(
        model=bytes([n % 256]) * (200_000 + n), item_ids=[f"sku-{i}" for i in range(n + 1)],
        step=n, k=5, history_length=10, encoder="gru", reward=Reward(), io_spec={"k": 5},
        parity=Parity(batch=8, topk_equal=1.0, max_abs_diff=0.0), metrics={"losses/td": 0.5},
    )  # fmt: skip


def test_a_reader_never_sees_a_partial_snapshot(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    done = threading.Event()
    problems: list[str] = []
    seen: set[int] = set()

    def reader() -> None:
        while not done.is_set():
            for version in store.versions():
                path = store.path(version)
                try:
                    manifest = SnapshotManifest.parse((path / MANIFEST_FILE).read_bytes())
                    model = (path / MODEL_FILE).read_bytes()
                    vocab = orjson.loads((path / VOCABULARY_FILE).read_bytes())
                except FileNotFoundError:
                    if path.exists():  # pruned between listing and reading is fine
                        problems.append(f"{version}: listed but incomplete")
                    continue
                if hashlib.sha256(model).hexdigest() != manifest.model_sha256:
                    problems.append(f"{version}: hash mismatch")
                if len(vocab["items"]) != manifest.n_items:
                    problems.append(f"{version}: vocabulary size mismatch")
                seen.add(version)

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(40):
        write(store, n)
        store.prune(keep=3)
    done.set()
    thread.join()
    assert problems == []
    assert len(seen) > 5
    assert store.versions() == [38, 39, 40]
    manifest = store.manifest(40)
    assert manifest.step == 39 and manifest.version == 40
    assert manifest.files[MODEL_FILE].bytes == 200_039
    vocabulary = (store.path(40) / VOCABULARY_FILE).read_bytes()
    assert manifest.files[VOCABULARY_FILE].sha256 == hashlib.sha256(vocabulary).hexdigest()
    assert manifest.reward == {
        "click": 0.2,
        "cart": 0.5,
        "purchase": 1.0,
        "cart_remove": -0.5,
        "revenue": 0.0,
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_leftovers_of_a_crashed_writer_are_cleaned(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    write(store, 1)
    (tmp_path / ".tmp-snapshot-000002-123").mkdir()
    (tmp_path / ".tmp-snapshot-000002-123" / MODEL_FILE).write_bytes(b"half")
    assert store.versions() == [1]  # never listed
    store.clean_temp()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot-000001"]
    write(store, 2)
    assert store.versions() == [1, 2]
