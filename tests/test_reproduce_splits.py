"""``reproduce --split``: one half of an experiment, refused by name when it is not one of its splits."""
import pytest

from byzjax._validation import ConfigError
from byzjax.app.cli import main
from byzjax.app.reproduce import reproduce, settings


def test_split_keeps_only_the_named_halves_in_the_experiments_order():
    full = settings("short", quick=False)
    assert [name for name, _ in full["splits"]] == ["iid", "dirichlet"]
    assert settings("short", False, ["dirichlet"])["splits"] == [("dirichlet", 1.0)]
    assert settings("short", False, ["dirichlet", "iid"])["splits"] == full["splits"]
    kept = settings("short", False, ["iid"])
    assert kept["splits"] == [("iid", None)] and kept["fs"] == full["fs"] and kept["rounds"] == full["rounds"]


@pytest.mark.parametrize("which, quick, splits, allowed", [
    ("short", False, ["gamma"], "iid, dirichlet"),
    ("short", True, ["dirichlet"], "iid"),       # --quick runs the iid half only
    ("long", False, ["iid"], "dirichlet"),
    ("short", False, [], "iid, dirichlet"),
])
def test_unknown_split_is_one_line_error_before_anything_runs(which, quick, splits, allowed, tmp_path):
    with pytest.raises(ConfigError, match=f"reproduce {which}: split .*\\(allowed: {allowed}\\)$"):
        reproduce(which, tmp_path / "out", quick=quick, splits=splits)
    assert not (tmp_path / "out").exists()


def test_cli_split_flag_errors(tmp_path, capsys):
    assert main(["reproduce", "short", "--split", "gamma", "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "split 'gamma' is not one of this experiment's splits" in capsys.readouterr().err
    assert main(["reproduce", "revision", "--split", "iid", "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "--split applies to reproduce short|long only" in capsys.readouterr().err
