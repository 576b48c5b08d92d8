"""Mutation testing of the model, generation, training loop, metrics and evaluation with mutmut (not part of the
default test run: it takes hours on a laptop). Runs the mutants of the modules named (all of them by default) that
have no result yet, then prints per module the share of mutants the fast tests kill, and the survivors. Config:
[tool.mutmut] in pyproject.toml.

    python scripts/mutation_test.py                                 # every module, then the table
    python scripts/mutation_test.py vlm/inference/generate.py       # one module (globs work: 'vlm/model/*')
    python scripts/mutation_test.py --rerun vlm/inference/generate.py  # again, the mutants with results too
    python scripts/mutation_test.py --report                        # the table and survivors of what has run so far
    python scripts/mutation_test.py --survivors vlm/model/decoder.py  # after adding tests: rerun what survived
    mutmut show <mutant name>                                       # the diff of one survivor
    python scripts/mutation_test.py --check <mutant name> tests/test_model.py -k cache   # does a new test kill it?
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
# mutmut's exit codes. Killed: a test failed, pytest errored, the type checker caught it. A timeout (the tests took 30
# times their usual CPU time, so the mutant loops or crawls) counts as killed too, as in most mutation tools.
KILLED = {1, 3, 37}
TIMEOUTS = {36, 24, -24, 152, 255}
NAMES = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not run"}


def configured_modules() -> list[str]:
    """The files that [tool.mutmut] only_mutate names, expanded."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    files = sorted({p for pattern in config["only_mutate"] for p in map(str, ROOT.glob(pattern))})
    return [str(Path(f).relative_to(ROOT)) for f in files if not f.endswith("__init__.py")]


def mutant_glob(module: str) -> str:
    """vlm/model/decoder.py -> vlm.model.decoder.* (mutmut names a mutant module.x_function__mutmut_N)."""
    return module.removesuffix(".py").replace("/", ".") + ".*"


def run_mutmut(names: list[str], max_children: int) -> int:
    if subprocess.call([sys.executable, "-c", "import mutmut"], stderr=subprocess.DEVNULL) != 0:
        sys.exit("mutmut is not installed: pip install -e '.[mutation]'")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # mutmut imports vlm from ./mutants; an outer PYTHONPATH pointing at a checkout would import the unmutated copy.
    env.pop("PYTHONPATH", None)
    command = ["nice", "-n", "15", sys.executable, "-m", "mutmut", "run", f"--max-children={max_children}"]
    return subprocess.call(command + names, cwd=ROOT, env=env)


def results(module: str, root: Path = ROOT) -> dict[str, int | None]:
    meta = root / "mutants" / (module + ".meta")
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


def mutants_without_results(modules: list[str], root: Path = ROOT) -> list[str]:
    """What to name to mutmut, which reruns every mutant it is named, results or not: the mutants still without a
    result, so that a sitting stopped by the clock goes on where it stopped; a module never run, or edited since its
    mutants were made, whole (mutmut then makes them afresh)."""
    names = []
    for module in modules:
        meta = root / "mutants" / (module + ".meta")
        if meta.exists() and meta.stat().st_mtime >= (root / module).stat().st_mtime:
            names += [name for name, code in results(module, root).items() if code is None]
        else:
            names.append(mutant_glob(module))
    return names


def report(modules: list[str]) -> None:
    print(f"\n{'module':45} {'mutants':>8} {'killed':>7} {'share':>7}  others")
    totals = Counter()
    survivors = []
    for module in modules:
        codes = results(module)
        ran = {name: code for name, code in codes.items() if code is not None}
        if not ran:
            print(f"{module:45} {len(codes):>8} {'-':>7} {'-':>7}  not run")
            continue
        killed = sum(code in KILLED | TIMEOUTS for code in ran.values())
        others = Counter(NAMES.get(code, f"exit {code}") for code in ran.values() if code not in KILLED | TIMEOUTS)
        timeouts = sum(code in TIMEOUTS for code in ran.values())
        note = ", ".join(
            [f"{n} {name}" for name, n in sorted(others.items())] + [f"{timeouts} killed by timeout"] * bool(timeouts)
        )
        if len(ran) < len(codes):
            note += f"; {len(codes) - len(ran)} not run"
        print(f"{module:45} {len(ran):>8} {killed:>7} {killed / len(ran):>7.1%}  {note}")
        totals.update(mutants=len(ran), killed=killed)
        survivors += sorted(name for name, code in ran.items() if code not in KILLED | TIMEOUTS)
    if totals["mutants"]:
        print(
            f"{'all measured':45} {totals['mutants']:>8} {totals['killed']:>7} {totals['killed'] / totals['mutants']:>7.1%}"
        )
    print(f"\n{len(survivors)} mutants not killed ('mutmut show NAME' prints each diff):")
    for name in survivors:
        print(" ", name)


def check_mutant(name: str, tests: list[str]) -> int:
    """Run the working tree's `tests` on mutmut's copy of vlm/, first with no mutant (they must pass: exit 2 if not),
    then with mutant `name` switched on, as mutmut runs it, its cached results untouched. A test written for a
    survivor kills it: exit 1."""
    if not (ROOT / "mutants" / "vlm").is_dir():
        sys.exit("no mutants/: run the mutation test of the module first")
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(ROOT / "mutants" / "vlm", Path(scratch) / "vlm")
        shutil.copytree(ROOT / "tests", Path(scratch) / "tests")
        shutil.copy(ROOT / "pyproject.toml", scratch)
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]

        def run(mutant: str) -> int:
            env = dict(os.environ, MUTANT_UNDER_TEST=mutant, PYTHONPATH=scratch, OMP_NUM_THREADS="1")
            return subprocess.call(command, cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        if run("") != 0:  # no mutant switched on: the code itself must pass, or a failure proves nothing
            print(f"{name}: the tests fail on the code itself")
            return 2
        code = run(name)
    print(f"{name}: {'killed' if code == 1 else 'survived' if code == 0 else f'pytest exit {code}'}")
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "modules", nargs="*", help="files or globs under vlm/ (default: all of [tool.mutmut] only_mutate)"
    )
    parser.add_argument("--report", action="store_true", help="only print the results of earlier runs")
    parser.add_argument(
        "--survivors", action="store_true", help="rerun only the mutants earlier runs did not kill (after adding tests)"
    )
    parser.add_argument("--rerun", action="store_true", help="run every mutant again, those with results too")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--check", metavar="MUTANT", help="run the tests named (the positional arguments) against this mutant alone"
    )
    args, pytest_args = parser.parse_known_args()  # with --check, the rest goes to pytest (-k ..., say)
    if args.check:
        if not args.modules:
            parser.error("--check needs the tests to run, e.g. tests/test_model.py")
        sys.exit(0 if check_mutant(args.check, args.modules + pytest_args) == 1 else 1)
    if pytest_args:
        parser.error(f"unrecognized arguments: {' '.join(pytest_args)}")
    everything = configured_modules()
    modules = [m for m in everything if not args.modules or any(fnmatch.fnmatch(m, p) for p in args.modules)]
    if not modules:
        parser.error(f"no configured module matches {args.modules}; they are: {' '.join(everything)}")
    if args.survivors:
        names = [
            n for m in modules for n, code in results(m).items() if code is not None and code not in KILLED | TIMEOUTS
        ]
        if names:
            run_mutmut(names, args.max_children)
    elif args.rerun:
        run_mutmut([mutant_glob(m) for m in modules], args.max_children)
    elif not args.report:
        names = mutants_without_results(modules)
        if names:
            run_mutmut(names, args.max_children)
    report(modules)


if __name__ == "__main__":
    main()
