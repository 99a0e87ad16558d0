"""Training data taken at face value no more (issue 16.3, 16.4): hidden files and folders
are left out and reported, empty identity folders are reported, and every image is decoded
once before training with the SDK's strict decoder, so bad files are named up front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from test_train_trainer import tiny_config  # noqa: E402

from npcface.training.data import ImageFolderDataset, decode_image  # noqa: E402
from npcface.training.errors import DataError  # noqa: E402
from npcface.training.train import Trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _crop(seed: int, size: int = 32) -> np.ndarray:
    """A smooth gradient with a per-image colour shift (JPEG cuts decode half grey)."""
    y, x = np.mgrid[:size, :size]
    base = np.dstack([x * 255 // size, y * 255 // size, (x + y) * 127 // size])
    return ((base + 37 * seed) % 256).astype(np.uint8)


def _folder(root: Path, people: dict[str, int]) -> Path:
    k = 0
    for name, count in people.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / name / f"{i}.jpg"), _crop(k))
            k += 1
    return root


def _truncated_jpeg(path: Path, keep: float = 0.4) -> None:
    ok, buf = cv2.imencode(".jpg", _crop(99, 120))
    assert ok
    data = buf.tobytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _folder_config(tmp_path: Path, root: Path, **over):
    data = {"dataset": "folder", "root": str(root), "num_workers": 0, **over.pop("data", {})}
    over = {"optim__batch_size": 4, "optim__max_steps": 3, **over}
    return tiny_config(tmp_path, data=data, **over)


# ----------------------------------------------------------------------------- 16.3


def test_hidden_entries_and_empty_identities_are_left_out_and_reported(tmp_path):
    root = _folder(tmp_path / "crops", {"Alice": 3, "Bob": 3})
    (root / ".ipynb_checkpoints").mkdir()
    shutil.copy(root / "Alice" / "0.jpg", root / ".ipynb_checkpoints" / "0-checkpoint.jpg")
    (root / "Alice" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 80)  # AppleDouble
    (root / "Bob" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "Carol").mkdir()  # an identity folder without images
    (root / "prepare_report.json").write_text("{}")  # beside the identities: not reported

    ds = ImageFolderDataset(root, 32)
    assert ds.classes == ["Alice", "Bob"] and len(ds) == 6
    assert sorted(ds.scan.hidden) == [".ipynb_checkpoints/", "Alice/._0.jpg", "Bob/.DS_Store"]
    assert ds.scan.empty == ("Carol",)
    notes = "\n".join(ds.notes)
    assert ".ipynb_checkpoints/" in notes and "Alice/._0.jpg" in notes and "Carol" in notes
    assert "prepare_report.json" not in notes

    # `train prepare` and the export's crop folders scan the same way
    from npcface.export.crops import list_images
    from npcface.training.data.prepare import list_raw_images

    assert list_raw_images(root) == [f"{p}/{i}.jpg" for p in ("Alice", "Bob") for i in range(3)]
    assert sorted(p.relative_to(root).as_posix() for p in list_images(root)) == [
        f"{p}/{i}.jpg" for p in ("Alice", "Bob") for i in range(3)
    ]

    # a run over this folder trains (the resource file used to stop it) and says what it left out
    res = Trainer(_folder_config(tmp_path, root)).fit()
    assert res.step == 3
    assert any("hidden" in n and "._0.jpg" in n for n in res.data_notes)
    assert any("without images: Carol" in n for n in res.data_notes)


# ----------------------------------------------------------------------------- 16.4


def test_strict_decoding_refuses_what_opencv_half_decodes(tmp_path):
    cut = tmp_path / "cut.jpg"
    _truncated_jpeg(cut)
    lenient = cv2.imread(str(cut))  # what training used to read: the lower part grey
    assert lenient is not None and np.all(lenient[-1] == 128)
    with pytest.raises(DataError, match=r"cut\.jpg.*truncated"):
        decode_image(cut.read_bytes(), str(cut))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    (tmp_path / "p" / "a").mkdir(parents=True)
    shutil.copy(cut, tmp_path / "p" / "a" / "cut.jpg")
    ds = ImageFolderDataset(tmp_path / "p", 32)
    with pytest.raises(DataError, match=r"cannot read image .*cut\.jpg: truncated"):
        ds.read(0)


def _bad_folder(tmp_path: Path) -> Path:
    root = _folder(tmp_path / "crops", {"Alice": 4, "Bob": 4, "Carol": 4, "Dan": 0})
    (root / "Bob" / "empty.jpg").write_bytes(b"")
    _truncated_jpeg(root / "Carol" / "cut.jpg")
    (root / "Dan" / "only.jpg").write_bytes(b"not a jpeg at all")  # Dan has no readable image
    return root


@pytest.mark.slow
def test_bad_images_are_found_before_training_and_left_out(tmp_path):
    root = _bad_folder(tmp_path)
    cfg = _folder_config(tmp_path, root, data={"num_workers": 2}, optim__max_steps=6)
    res = Trainer(cfg).fit()
    assert res.step == 6  # trained to the end, never died halfway
    notes = "\n".join(res.data_notes)
    assert "3 unreadable image(s) of 15" in notes
    assert "empty.jpg: empty file" in notes and "cut.jpg: truncated" in notes
    assert "every image is unreadable: Dan" in notes
    doc = json.loads((Path(cfg.output) / "data_check.json").read_text())
    assert doc["checked"] == 15
    assert sorted(Path(b[1]).name for b in doc["bad"]) == ["cut.jpg", "empty.jpg", "only.jpg"]

    again = Trainer(cfg)  # the check is reused while the files are unchanged
    assert again.data_check.reused and len(again.dataset) == 12
    assert again.dataset.classes == ["Alice", "Bob", "Carol"]
    (root / "Alice" / "0.jpg").write_bytes(b"")  # a changed file: checked again
    third = Trainer(cfg)
    assert not third.data_check.reused and len(third.dataset) == 11


def test_bad_images_refused_up_front_with_their_names(tmp_path):
    root = _bad_folder(tmp_path)
    cfg = _folder_config(tmp_path, root, data={"bad_images": "error"})
    with pytest.raises(DataError) as err:
        Trainer(cfg).fit()
    msg = str(err.value)
    assert "3 of 15 training images cannot be read" in msg
    assert all(name in msg for name in ("empty.jpg", "cut.jpg", "only.jpg"))
    assert not (Path(cfg.output) / "metrics.csv").exists()  # no step ran


def test_unchecked_bad_file_mid_run_is_named_in_one_line(tmp_path):
    """With the check off, a bad file still stops the run with its name, not a traceback."""
    root = _folder(tmp_path / "crops", {"Alice": 4, "Bob": 4})
    (root / "Bob" / "empty.jpg").write_bytes(b"")
    cfg = _folder_config(
        tmp_path, root, data={"check_images": False, "num_workers": 2}, optim__max_steps=8
    )
    with pytest.raises(DataError) as err:
        Trainer(cfg).fit()
    msg = str(err.value)
    assert msg.startswith("step ") and "empty.jpg: empty file" in msg
    assert "Traceback" not in msg and "\n" not in msg
