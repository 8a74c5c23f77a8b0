"""Issue 16, item 1: `onager report JOB`, one self-contained HTML page (unit tests on the HTML;
tests/test_report_browser.py opens it in a real Chromium)."""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import statistics
import sys
from html.parser import HTMLParser

import pytest
from support import ok, refused

EVIL = "<script>alert('x')</script>"

TASK = """
import sys, onager
p = onager.params()
for step in range(1, 5):
    onager.log_result(step=step * 10, loss=round(1.0 / (step * p["lr"] + 1), 6))
onager.log_result(acc=p["lr"] * 0.25 + p["seed"] * 0.01)
if p["lr"] == 3 and p["seed"] == 1:
    print("Traceback (most recent call last):", file=sys.stderr)
    print("ValueError: " + sys.argv[-1] + " & <b>bold</b>", file=sys.stderr)
    sys.exit(3)
"""


@pytest.fixture
def job(onager, project):
    (project / "task.py").write_text(TASK)
    ok(onager("prelaunch", "+jobname", "rep", "+command", f"{sys.executable} task.py", "+arg", "--lr", "1", "2", "3",
              "+arg", "--seed", "0", "1", "+arg", "--note", EVIL, "+tag"))
    assert onager("launch", "--backend", "local", "--jobname", "rep").returncode == 1  # task 6 fails
    return onager


class Page(HTMLParser):
    """The parts of the page the tests look at, parsed as a browser's tokenizer would."""

    def __init__(self, text: str):
        super().__init__()
        self.scripts: list[str] = []
        self.rows: list[list[str]] = []
        self.urls: list[str] = []
        self.csp = ""
        self._in_script = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
        if tag == "tr" and attrs.get("class") == "task":
            self._row = []
        if tag == "td" and self._row is not None:
            self._cell = []
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy":
            self.csp = attrs["content"]
        for name in ("src", "href"):
            if attrs.get(name):
                self.urls.append(attrs[name])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        if self._cell is not None:
            self._cell.append(data)


def read(path) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_report_is_self_contained_and_escapes_everything(job, project):
    result = job("report", "rep", "-o", "out.html")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "wrote out.html\n"
    text = read(project / "out.html")
    page = Page(text)
    assert len(page.scripts) == 1  # ours only: the <script> in a parameter and in stderr is text
    assert "alert" not in page.scripts[0]
    assert EVIL not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text  # in the tag, the params and stderr
    assert "&amp; &lt;b&gt;bold&lt;/b&gt;" in text  # the failed task's stderr tail, escaped
    assert page.urls == []  # nothing fetched: no src, no href
    assert not re.search(r"https?://", re.sub(r'xmlns(:\w+)?="[^"]*"', "", text))  # only SVG namespaces
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page.csp and "default-src 'none'" in page.csp
    assert len(page.rows) == 6
    ids = [int(row[0]) for row in page.rows]
    assert ids == list(range(1, 7))
    statuses = {int(row[0]): row[3] for row in page.rows}
    assert statuses == {1: "done", 2: "done", 3: "done", 4: "done", 5: "done", 6: "failed"}
    assert page.rows[5][5] == "3"  # exit code
    assert all(EVIL in row[2] for row in page.rows)  # params, as text


def test_report_numbers_match_the_tasks(job, project):
    ok(job("report", "rep", "-o", "out.html", "--metric", "acc", "--no-plots"))
    text = read(project / "out.html")
    assert "Plots are off" in text
    assert "<svg" not in text
    # acc = lr/4 + seed/100 for lr in 1,2,3 and seed in 0,1: per lr, the mean over seeds and its std
    for lr in (1, 2, 3):
        values = [lr * 0.25 + seed * 0.01 for seed in (0, 1)]
        mean, std = statistics.mean(values), statistics.stdev(values)
        cells = f"<tr><td>{lr}</td><td>{format(mean, '.6g')}</td><td>{format(std, '.6g')}</td><td>2</td></tr>"
        assert cells in text, cells
    assert re.search(r"done <b>5</b>", text)
    assert re.search(r"failed <b>1</b>", text)
    # the learning curves: loss logged 4 times with step=10..40
    curves = text.split('id="curves"')[1].split("</section>")[0]
    assert "<h3>loss</h3>" in curves
    assert "<td>1</td><td>4</td><td>0.5</td><td>" in curves  # task 1: 4 steps, first loss 1/(1+1)
    # provenance: the command line of the launch
    assert "onager launch --backend local --jobname rep" in text


def test_report_draws_svg_plots_with_matplotlib(job, project):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'onager[report]')")
    ok(job("report", "rep", "-o", "out.html"))
    text = read(project / "out.html")
    svgs = re.findall(r"<svg [^>]*class=\"plot\"", text)
    assert len(svgs) >= 4  # elapsed, loss vs lr, loss vs seed, loss vs note? (swept), curves
    assert "Plots need matplotlib" not in text
    ids = re.findall(r' id="([^"]+)"', text)
    duplicated = {i for i in ids if ids.count(i) > 1}
    assert not duplicated  # each figure has its own ids


def test_report_without_matplotlib_says_so(job, project, monkeypatch):
    from onager import report
    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    path = report.write_report("rep", str(project / "plain.html"))
    text = read(path)
    assert "Plots need matplotlib" in text and "<svg" not in text
    assert 'class="bars"' in text  # the elapsed-time distribution, as plain HTML


def test_step_is_the_x_of_the_learning_curves(job, project):
    """log_result(step=...) stores `step` beside the values (results show the last step
    reached); the report draws the other metrics of each line against it."""
    lines = [json.loads(line) for line in read(project / ".onager/launches/rep/1/results/1.jsonl").splitlines()]
    assert [line.get("step") for line in lines[:4]] == [10, 20, 30, 40]
    results = json.loads(job("results", "rep", "--json").stdout)
    assert results[0]["step"] == 40
    assert math.isclose(results[0]["loss"], round(1.0 / (4 + 1), 6))
    from onager.report import read_curves
    curves = read_curves(str(project / ".onager/launches/rep/1/results/1.jsonl"))
    assert set(curves) == {"loss"}  # acc is logged once, step is the x
    assert [x for x, _ in curves["loss"]] == [10.0, 20.0, 30.0, 40.0]
    assert [y for _, y in curves["loss"]] == [lines[i]["loss"] for i in range(4)]


def test_bad_input_writes_nothing(job, project):
    before = sorted(os.listdir(project))
    refused(job("report", "nosuch"), "nosuch")
    refused(job("report", "rep", "--launch", "9"), "no launch '9'")
    refused(job("report", "rep", "-o", str(project / "missing" / "r.html")), "does not exist")
    refused(job("report", "rep", "-o", str(project)), "is a directory")
    refused(job("report", "rep", "--metric", "nosuch"), "nosuch", "loss")
    assert sorted(os.listdir(project)) == before


def test_report_of_one_launch(job, project):
    assert job("launch", "--backend", "local", "--jobname", "rep", "--tasklist", "failed").returncode == 1
    ok(job("report", "rep", "-o", "all.html"))
    ok(job("report", "rep", "--launch", "2", "-o", "two.html"))
    assert len(Page(read(project / "all.html")).rows) == 6
    two = Page(read(project / "two.html")).rows
    assert [row[0] for row in two] == ["6"]
