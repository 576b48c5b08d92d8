"""RunLog: metrics.jsonl written line by line, cut back on resume, and drawn as curves.png."""

import json

import matplotlib
import pytest
from matplotlib.figure import Figure
from PIL import Image

from vlm.training.loop import RunLog

RECORDS = [
    {"step": 1, "train_loss": 4.0},
    {"step": 2, "train_loss": 3.0},
    {"step": 2, "val_loss": 3.5, "cider": 0.1},
    {"step": 3, "train_loss": 2.0},
    {"step": 4, "train_loss": 1.5},
    {"step": 4, "val_loss": 2.5},
]


def written_log(tmp_path, enabled=True) -> RunLog:
    log = RunLog(tmp_path, enabled)
    for record in RECORDS:
        log.write(record)
    return log


def test_records_are_one_json_object_a_line_in_order(tmp_path):
    written_log(tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == RECORDS


def test_truncate_after_keeps_the_records_up_to_the_checkpoint_step(tmp_path):
    log = written_log(tmp_path)
    log.truncate_after(2)
    assert [json.loads(line) for line in log.path.read_text().splitlines()] == RECORDS[:3]
    log.write({"step": 3, "train_loss": 9.0})  # the resumed run appends after what was kept
    assert json.loads(log.path.read_text().splitlines()[-1]) == {"step": 3, "train_loss": 9.0}


def test_a_disabled_log_writes_nothing(tmp_path):
    """Ranks other than 0 hold a disabled log: no file, and plotting or truncating is a no-op."""
    log = written_log(tmp_path, enabled=False)
    log.truncate_after(0)
    log.plot()
    assert list(tmp_path.iterdir()) == []


def test_plot_draws_train_and_validation_loss_at_their_steps(tmp_path, monkeypatch):
    drawn: list[Figure] = []
    save = Figure.savefig

    def keep(figure, path, **kwargs):
        drawn.append(figure)
        save(figure, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    written_log(tmp_path).plot()
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert matplotlib.get_backend().lower() == "agg"  # headless: no display needed
    ((axis,),) = [figure.axes for figure in drawn]
    train, val = axis.get_lines()
    assert (train.get_label(), val.get_label()) == ("train", "validation")
    assert list(train.get_xdata()) == [1, 2, 3, 4] and list(train.get_ydata()) == [4.0, 3.0, 2.0, 1.5]
    assert list(val.get_xdata()) == [2, 4] and list(val.get_ydata()) == [3.5, 2.5]
    assert train.get_marker() in ("None", None, "") and val.get_marker() == "o"
    assert (axis.get_xlabel(), axis.get_ylabel(), axis.get_yscale()) == ("step", "loss (target tokens)", "log")
    assert axis.get_title() == "vlm training"
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["train", "validation"]
    assert tuple(drawn[0].get_size_inches()) == pytest.approx((7, 4))
    assert Image.open(tmp_path / "curves.png").size == (700, 400)  # 7 x 4 inches at 100 dots an inch


def test_plot_before_any_validation_draws_the_train_curve_alone(tmp_path, monkeypatch):
    drawn: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, path, **kwargs: drawn.append(figure))
    log = RunLog(tmp_path, True)
    log.write({"step": 1, "train_loss": 4.0})
    log.plot()
    ((axis,),) = [figure.axes for figure in drawn]
    assert [line.get_label() for line in axis.get_lines()] == ["train"]


def test_plot_without_a_log_file_draws_nothing(tmp_path):
    RunLog(tmp_path, True).plot()
    assert not (tmp_path / "curves.png").exists()
