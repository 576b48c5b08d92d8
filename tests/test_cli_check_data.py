import pytest
from conftest import make_odd_images
from test_unreadable import GOOD, write_coco_split

from vlm.cli.check_data import main


def test_check_data_lists_exactly_the_unreadable_files_of_every_split(tmp_path, capsys):
    odd = make_odd_images(tmp_path / "odd")
    root = tmp_path / "coco"
    write_coco_split(root, "train2017", odd, GOOD + ["empty.jpg", "truncated.jpg"], first_id=1)
    write_coco_split(root, "val2017", odd, GOOD[:2] + ["text.jpg", "bomb.png"], first_id=100)
    out = tmp_path / "unreadable.txt"
    with pytest.raises(SystemExit) as exit_:
        main(["--data", "coco", "--coco-root", str(root), "--workers", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    expected = sorted(
        [str(root / "train2017" / n) for n in ("empty.jpg", "truncated.jpg")]
        + [str(root / "val2017" / n) for n in ("text.jpg", "bomb.png")]
    )
    assert exit_.value.code == 1 and out.read_text().splitlines() == expected
    assert "checked 13 images" in printed and "4 unreadable" in printed
    assert f"{root / 'val2017' / 'bomb.png'}: 100000x100000 pixels is over the limit" in printed


def test_check_data_of_a_clean_split_exits_0_and_writes_an_empty_list(tmp_path, capsys):
    odd = make_odd_images(tmp_path / "odd")
    root = tmp_path / "coco"
    write_coco_split(root, "train2017", odd, GOOD + ["empty.jpg"], first_id=1)
    write_coco_split(root, "val2017", odd, GOOD[:2], first_id=100)
    out = tmp_path / "unreadable.txt"
    main(["--data", "coco", "--coco-root", str(root), "--split", "test", "--workers", "1", "--out", str(out)])
    assert out.read_text() == "" and "checked 2 images" in capsys.readouterr().out


def test_check_data_of_built_in_scenes_has_nothing_to_read(capsys):
    main(["--data", "shapes", "--split", "val"])
    assert "no image files to check" in capsys.readouterr().out
