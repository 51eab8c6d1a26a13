import json
import subprocess
import sys
from pathlib import Path

import pytest

from mitigate.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_help_loads_no_heavy_library():
    code = ("import sys\nfrom mitigate.cli import build_parser\n"
            "build_parser().format_help()\n"
            "heavy = [m for m in ('torch', 'umap', 'hdbscan', 'sklearn', 'accelerate') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "run" in capsys.readouterr().out


def test_bad_recipe_key_exits_2(tmp_path, capsys):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[recipe]\nname = "x"\n[train]\nepoch = 1\n')
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert "unknown key 'epoch'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_set_override_exits_2(tmp_path, capsys):
    code = main(["run", str(ROOT / "recipes/fashion_patch.toml"), "--out", str(tmp_path / "o"),
                 "--set", "epochs=1"])
    assert code == 2
    assert "expected SECTION.KEY=VALUE" in capsys.readouterr().err


def test_out_folder_of_other_recipe_refused(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "work").mkdir(parents=True)
    (out / "work" / "state.json").write_text(json.dumps({"fingerprint": "other", "recipe": "old"}))
    code = main(["run", str(ROOT / "recipes/fashion_patch.toml"), "--out", str(out)])
    assert code == 2
    assert "holds a run of a different recipe ('old')" in capsys.readouterr().err
    # The user's folder is kept as it was.
    assert json.loads((out / "work" / "state.json").read_text())["recipe"] == "old"


def test_missing_data_leaves_no_new_folder(tmp_path, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "out"
    code = main(["run", str(ROOT / "recipes/starvation_code.toml"), "--out", str(out), "--data-dir", str(empty)])
    assert code == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err
    assert not out.exists()
