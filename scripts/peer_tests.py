"""Run transformers' own common test mixins (pinned sdist, see tests/peers/) against torchclip, and compare.

    python scripts/peer_tests.py                 # every peer test on torchclip (`make test-peers`)
    python scripts/peer_tests.py --compare       # the same on transformers' own classes too, then the diff
    python scripts/peer_tests.py -- -k Tokeniz   # extra pytest arguments after --

With --compare, a test that passes on transformers' classes but not on torchclip's must be named in
docs/compatibility.md (as deliberate, transformers-internal, or not yet fixed); the script exits 1 if one is
not, and prints the counts: run, passed on both, listed, unlisted.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPATIBILITY = ROOT / "docs" / "compatibility.md"
# pytest's exit codes when the tests ran (all passed / some failed); any other one (no test collected, e.g.
# without the sdist; interrupted; internal or usage error) means there is nothing to compare
PYTEST_RAN = (0, 1)


def run(target: str, extra: list[str], report: Path) -> int:
    env = {**os.environ, "TORCHCLIP_PEERS": "all", "TORCHCLIP_PEERS_TARGET": target,
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", "--tb=line",
               f"--junitxml={report}", str(ROOT / "tests" / "peers"), *extra]  # fmt: skip
    print(f"== {target}: {' '.join(command[3:])}", flush=True)
    return subprocess.run(command, env=env, cwd=ROOT).returncode


def outcomes(report: Path) -> dict[str, str]:
    """Test id (Class::test) -> passed / failed / skipped, from a JUnit XML report."""
    results = {}
    for case in ElementTree.parse(report).iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        kinds = {child.tag for child in case}
        results[name] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
    return results


def listed_tests() -> set[str]:
    """Every test name docs/compatibility.md lists (in backticks: `Class::test` or `test` for all classes)."""
    if not COMPATIBILITY.is_file():
        return set()
    return set(re.findall(r"`((?:\w+::)?test_\w+)`", COMPATIBILITY.read_text(encoding="utf-8")))


def is_listed(name: str, listed: set[str]) -> bool:
    cls, test = name.split("::")
    base = re.sub(r"_\d+(_\w+)?$", "", test)  # parameterized variants: test_x_0_fp32 -> test_x
    return bool({name, test, f"{cls}::{base}", base} & listed) or any(
        test.startswith(entry) for entry in listed if "::" not in entry and entry.endswith("_")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", action="store_true", help="also run on transformers' classes and diff")
    parser.add_argument("--target", choices=("torchclip", "transformers"), default="torchclip")
    parser.add_argument("--reports", type=Path, help="keep the JUnit reports in this folder")
    parser.add_argument("--reuse-reference", action="store_true",
                        help="with --reports: reuse its transformers.xml instead of running transformers again")
    parser.add_argument("--reuse-ours", action="store_true", help="with --reports: likewise its torchclip.xml")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.reports or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if not args.compare:
            return run(args.target, args.pytest_args, folder / f"{args.target}.xml")
        ours_report, theirs_report = folder / "torchclip.xml", folder / "transformers.xml"
        for target, report, reuse in [("transformers", theirs_report, args.reuse_reference),
                                      ("torchclip", ours_report, args.reuse_ours)]:  # fmt: skip
            if reuse and report.is_file():
                continue
            code = run(target, args.pytest_args, report)
            if code not in PYTEST_RAN:
                print(f"pytest on {target} exited {code}: the peer tests did not run (see above)")
                return code or 1
        ours, theirs = outcomes(ours_report), outcomes(theirs_report)
    listed = listed_tests()
    regressions = sorted(n for n, result in theirs.items() if result == "passed" and ours.get(n) != "passed")
    unlisted = [name for name in regressions if not is_listed(name, listed)]
    both = sum(1 for n, result in ours.items() if result == "passed" and theirs.get(n) == "passed")
    only_ours = sorted(n for n, result in ours.items() if result == "passed" and theirs.get(n) != "passed")
    print(f"\nrun {len(ours)}: passed on torchclip {sum(r == 'passed' for r in ours.values())}, "
          f"on transformers {sum(r == 'passed' for r in theirs.values())}, on both {both}; "
          f"pass on transformers only {len(regressions)} ({len(regressions) - len(unlisted)} listed in "
          f"docs/compatibility.md, {len(unlisted)} not); pass on torchclip only {len(only_ours)}")  # fmt: skip
    for name in unlisted:
        print(f"  NOT LISTED: {name}")
    return 1 if unlisted else 0


if __name__ == "__main__":
    sys.exit(main())
