"""Training data: RecordIO (a file this test writes byte by byte), folders, list files,
the resumable sampler, synthetic data."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from npcface.training.data import (  # noqa: E402
    EpochSampler,
    ImageFolderDataset,
    ListDataset,
    RecordIODataset,
    RecordIOReader,
    RecordIOWriter,
    SyntheticDataset,
    pack_record,
)
from npcface.training.errors import DataError  # noqa: E402

MAGIC = 0xCED7230A


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _part(cflag: int, payload: bytes) -> bytes:
    """One dmlc RecordIO part: magic, cflag<<29|len, payload, zero pad to 4 bytes."""
    pad = b"\0" * (-len(payload) % 4)
    return struct.pack("<II", MAGIC, (cflag << 29) | len(payload)) + payload + pad


def _image(seed: int, size: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_insightface_rec(folder: Path) -> tuple[list[np.ndarray], list[int]]:
    """train.rec/.idx in insightface layout, written with struct only (not the writer)."""
    images = [_image(i) for i in range(5)]
    labels = [0, 0, 1, 2, 2]
    records: dict[int, bytes] = {}
    # key 0: header record, flag=2 labels [first non-image key, end key]
    records[0] = struct.pack("<IfQQ", 2, 0.0, 0, 0) + np.float32([6, 9]).tobytes()
    magic_f32 = np.frombuffer(struct.pack("<I", MAGIC), np.float32)[0]
    for k, (img, y) in enumerate(zip(images, labels, strict=True), start=1):
        if k == 2:  # an array label (flag=2): the class is the first value
            head = struct.pack("<IfQQ", 2, 0.0, k, 0) + np.float32([y, 7]).tobytes()
        elif k == 3:  # the second label's bytes are the magic number, at offset 28
            head = struct.pack("<IfQQ", 2, 0.0, k, 0) + np.float32([y, magic_f32]).tobytes()
        else:
            head = struct.pack("<IfQQ", 0, float(y), k, 0)
        records[k] = head + _png(img)
    for k in (6, 7, 8):  # identity records after the images (ignored)
        records[k] = struct.pack("<IfQQ", 2, 0.0, k, 0) + np.float32([1, 2]).tobytes()
    rec, idx = bytearray(), []
    for key, payload in records.items():
        idx.append(f"{key}\t{len(rec)}")
        if key == 3:  # dmlc splits at the aligned magic: parts 1 and 3, magic dropped
            assert payload[28:32] == struct.pack("<I", MAGIC)
            rec += _part(1, payload[:28]) + _part(3, payload[32:])
        else:
            rec += _part(0, payload)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.rec").write_bytes(bytes(rec))
    (folder / "train.idx").write_text("\n".join(idx) + "\n")
    return images, labels


def test_recordio_reads_insightface_layout(tmp_path):
    images, labels = write_insightface_rec(tmp_path / "ds")
    ds = RecordIODataset(tmp_path / "ds", size=12, flip_prob=0.0)
    assert len(ds) == 5 and ds.labels.tolist() == labels and ds.num_classes == 3
    for i, img in enumerate(images):
        np.testing.assert_array_equal(ds.read(i), img)
        x, y = ds[i]
        np.testing.assert_array_equal(x.numpy(), img[:, :, ::-1])  # RGB out
        assert y == labels[i]
    reader = RecordIOReader(tmp_path / "ds" / "train.rec")
    split = reader.read_idx(3)
    assert split[28:32] == struct.pack("<I", MAGIC)  # magic restored between the parts
    assert reader.read_header(2).label.tolist() == [0.0, 7.0]


def test_recordio_writer_matches_the_format(tmp_path):
    img = _png(_image(9))
    payload = struct.pack("<IfQQ", 0, 4.0, 0, 0) + img
    with RecordIOWriter(tmp_path / "w.rec", tmp_path / "w.idx") as w:
        w.write_idx(0, pack_record(4.0, img))
        w.write_idx(1, payload[:8] + struct.pack("<I", MAGIC) + payload[8:])
    want = _part(0, payload)
    second = payload[:8] + struct.pack("<I", MAGIC) + payload[8:]
    want += _part(1, second[:8]) + _part(3, second[12:])
    assert (tmp_path / "w.rec").read_bytes() == want
    assert (tmp_path / "w.idx").read_text() == f"0\t0\n1\t{len(_part(0, payload))}\n"
    # no header record: every key is an image
    ds = RecordIODataset(tmp_path / "w.rec", size=12)
    assert len(ds) == 2 and ds.labels.tolist() == [4, 4]


def test_recordio_errors(tmp_path):
    (tmp_path / "bad.rec").write_bytes(b"\0" * 64)
    (tmp_path / "bad.idx").write_text("0\t0\n")
    with pytest.raises(DataError, match="magic"):
        RecordIOReader(tmp_path / "bad.rec").read_idx(0)
    with pytest.raises(DataError, match="not found"):
        RecordIODataset(tmp_path / "nothing.rec")


def _write_folder(root: Path) -> None:
    colours = {"bob": (255, 0, 0), "alice": (0, 0, 255), "carl": (0, 255, 0)}  # BGR
    for name, bgr in colours.items():
        (root / name).mkdir(parents=True)
        for k in range(2 if name != "carl" else 1):
            img = np.zeros((16, 16, 3), np.uint8)
            img[:] = bgr
            img[:, :4] = 255  # a white band on the left, to see flips
            cv2.imwrite(str(root / name / f"{k}.png"), img)
    (root / "empty").mkdir()
    (root / "bob" / "notes.txt").write_text("not an image")


def test_folder_dataset_labels_colour_and_flip(tmp_path):
    _write_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path, size=16)
    assert ds.classes == ["alice", "bob", "carl"] and ds.labels.tolist() == [0, 0, 1, 1, 2]
    x, y = ds[0]
    assert y == 0 and x.shape == (16, 16, 3) and x.dtype == torch.uint8
    assert x[8, 8].tolist() == [255, 0, 0]  # alice is red: BGR (0,0,255) -> RGB
    flips = []
    for seed in range(200):
        img, _ = ds[(0, seed)]
        flips.append(bool(img[8, -1, 1] == 255))  # white band moved to the right
        again, _ = ds[(0, seed)]
        assert torch.equal(img, again)  # the flip is a function of the seed
    assert 0.4 < np.mean(flips) < 0.6  # p = 0.5
    resized = ImageFolderDataset(tmp_path, size=8)[1][0]
    assert resized.shape == (8, 8, 3)
    with pytest.raises(DataError):
        ImageFolderDataset(tmp_path / "empty")


def test_list_dataset(tmp_path):
    _write_folder(tmp_path / "img")
    lst = tmp_path / "train.lst"
    lst.write_text("# path label\nimg/bob/0.png 5\nimg/alice/1.png\t2\n\n")
    ds = ListDataset(lst, size=16)
    assert ds.labels.tolist() == [5, 2] and ds.num_classes == 6
    assert ds[0][0][8, 8].tolist() == [0, 0, 255]  # bob is blue
    lst.write_text("img/bob/0.png five\n")
    with pytest.raises(DataError, match="train.lst:1"):
        ListDataset(lst)


def test_epoch_sampler_partitions_and_resumes():
    n, world = 103, 3
    samplers = [EpochSampler(n, world, r, seed=4) for r in range(world)]
    for s in samplers:
        s.set_epoch(2)
    parts = [list(s) for s in samplers]
    idx = [i for p in parts for i, _ in p]
    assert all(len(p) == n // world for p in parts) and len(set(idx)) == len(idx)
    again = EpochSampler(n, world, 1, seed=4)
    again.set_epoch(2)
    assert list(again) == parts[1]
    again.set_epoch(3)
    assert list(again) != parts[1]  # a new permutation each epoch
    resumed = EpochSampler(n, world, 1, seed=0)
    resumed.load_state_dict({"epoch": 2, "start": 10, "seed": 4})
    assert list(resumed) == parts[1][10:] and len(resumed) == n // world - 10


def test_synthetic_is_deterministic_and_learnable_shape():
    ds = SyntheticDataset(num_classes=4, num_images=8, size=32, seed=1)
    a, b = ds.read(5), SyntheticDataset(4, 8, 32, seed=1).read(5)
    np.testing.assert_array_equal(a, b)
    assert ds.labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    same = np.abs(ds.read(0).astype(int) - ds.read(4).astype(int)).mean()
    other = np.abs(ds.read(0).astype(int) - ds.read(1).astype(int)).mean()
    assert same < other  # images of a class look alike
