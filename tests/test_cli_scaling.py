import pytest

from vlm.cli import scaling


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ladder", "scale-xs:10,scale-s:10"], "needs at least 3 rungs"),
        (["--ladder", "scale-xs:10,scale-s,scale-m:3"], "'scale-s' in 'scale-xs:10,scale-s,scale-m:3' is not PRESET"),
        (["--target", "giant:10"], "unknown preset 'giant'"),
        (["--data", "pictures"], "unknown data set 'pictures'"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--ladder", "tiny:1,tiny:2,tiny:1", "--target", "tiny:3"], "rung(s) tiny-1 appear twice"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        scaling.main(argv + ["--out-dir", str(tmp_path)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
