"""scripts/mutation_test.py's choice of the mutants to run (mutmut itself is not run here)."""

import importlib.util
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("mutation_test", ROOT / "scripts" / "mutation_test.py")
mutation_test = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutation_test)


def test_a_run_names_the_mutants_without_results_and_edited_or_new_modules_whole(tmp_path):
    for module in ("vlm/a.py", "vlm/b.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text("x = 1\n")
    meta = tmp_path / "mutants" / "vlm" / "a.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"vlm.a.x_f__mutmut_1": 1, "vlm.a.x_f__mutmut_2": None, "vlm.a.x_f__mutmut_3": 0}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    source_time = (tmp_path / "vlm/a.py").stat().st_mtime
    os.utime(meta, (source_time + 10, source_time + 10))
    # a.py has results but for one mutant; b.py was never run
    assert mutation_test.mutants_without_results(["vlm/a.py", "vlm/b.py"], tmp_path) == [
        "vlm.a.x_f__mutmut_2",
        "vlm.b.*",
    ]
    os.utime(tmp_path / "vlm/a.py", (source_time + 20, source_time + 20))  # edited after its mutants were made
    assert mutation_test.mutants_without_results(["vlm/a.py"], tmp_path) == ["vlm.a.*"]
