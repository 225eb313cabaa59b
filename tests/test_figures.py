"""Figures in README.md and docs/ come from docs/figures.json only (tools/figures)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

from conftest import ROOT

FIGURES = ROOT / "tools" / "figures"


def figures(*args: str, root=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FIGURES), "--root", str(root), *args],
                          capture_output=True, text=True, check=False)


def copy_tree(tmp_path):
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return tmp_path


def test_docs_agree_with_figures_json():
    done = figures("--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_readme_performance_numbers_are_all_marked():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Performance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 14
    for row in rows:
        cells = row.split(" | ")[1:]                         # the measured columns, not the label
        bare = re.sub(r"<!--fig [^>]+-->.*?<!--/fig-->", "", " | ".join(cells))
        assert not re.search(r"\d(\.\d+)?\s?(s|ms|MB|MiB|GiB|x)\b", bare), f"a figure outside markers: {row}"


def test_a_changed_figure_is_found_and_rewritten(tmp_path):
    root = copy_tree(tmp_path)
    merge_md = root / "docs" / "merge.md"
    merge_md.write_text(merge_md.read_text().replace("<!--fig merge.nydusfs-->0.44 s<!--/fig-->",
                                                     "<!--fig merge.nydusfs-->0.52 s<!--/fig-->"))
    done = figures("--check", root=root)
    assert done.returncode == 1
    assert "docs/merge.md: merge.nydusfs: shows '0.52 s', figures.json gives '0.44 s'" in done.stdout
    assert figures(root=root).returncode == 0
    assert figures("--check", root=root).returncode == 0
    assert merge_md.read_text() == (ROOT / "docs" / "merge.md").read_text()


def test_a_bench_run_updates_every_document_that_shows_the_figure(tmp_path):
    root = copy_tree(tmp_path)
    run = {"started": "2026-01-01T00:00:00", "config": {"fs_version": 6}, "machine": {"cpus": 2},
           "rows": [{"metric": "merge", "label": "merge", "unit": "s",
                     "median": {"nydusfs": 0.4321, "floor": None}},
                    {"metric": "check", "label": "check vs tar -x all layers", "unit": "s",
                     "median": {"nydusfs": 2.5, "floor": 5.0}}]}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert figures("--from", str(tmp_path / "run.json"), root=root).returncode == 0
    stored = json.loads((root / "docs" / "figures.json").read_text())
    assert stored["figures"]["merge"]["values"]["nydusfs"] == "0.43"
    readme = (root / "README.md").read_text()
    assert "<!--fig merge.nydusfs-->0.43 s<!--/fig-->" in readme
    assert "<!--fig merge.nydusfs-->0.43 s<!--/fig-->" in (root / "docs" / "merge.md").read_text()
    check_md = (root / "docs" / "check.md").read_text()
    assert "<!--fig check.nydusfs/check.floor-->0.50x<!--/fig-->" in check_md
    assert figures("--check", root=root).returncode == 0
