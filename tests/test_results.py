"""`onager results`: metrics from log_result and from log regexes, sort, top, group-by, formats, plots."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import statistics
import sys

import pytest
from support import ROOT, run_onager

from onager import results
from onager.errors import OnagerError, UsageError

# lr x seed; task 4 (lr 0.01, seed 2) fails until the file `fixed` exists. Each task logs twice
# (the last value per metric counts) and prints two "Test accuracy" lines (the last match counts).
TRAIN = """
import os, sys, onager
a = sys.argv[1:]
lr = float(a[a.index('--lr') + 1]); seed = int(a[a.index('--seed') + 1])
onager.log_result(loss=9.0, accuracy=0.0)
onager.log_result(accuracy=round(lr * 10 + seed / 100, 6), loss=1.0 / seed)
print('Test accuracy: 0.5'); print('Test accuracy: %s' % (seed * 0.25))
print('val_loss=%s' % (seed * 2), file=sys.stderr)
sys.exit(3 if lr == 0.01 and seed == 2 and not os.path.exists('fixed') else 0)
"""
COMMAND = f"{shlex.quote(sys.executable)} -c {shlex.quote(TRAIN)}"


def accuracy(lr: float, seed: int) -> float:
    return round(lr * 10 + seed / 100, 6)


def build(directory) -> None:
    env = {"ONAGER_GLOBAL_CONFIG": str(directory / "global.onagerconfig")}
    out = run_onager(["prelaunch", "+jobname", "sw", "+command", COMMAND, "+arg", "--lr", "0.1", "0.01",
                      "+arg", "--seed", "1", "2", "3", "+q"], cwd=str(directory), env=env)
    assert out.returncode == 0, out.stderr
    out = run_onager(["launch", "--backend", "local", "--jobname", "sw"], cwd=str(directory), env=env)
    assert out.returncode == 1, out.stderr  # task 4 failed on purpose
    assert "1 of 6 tasks failed: 4 (exit 3)" in out.stderr


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One launched sweep shared by the read-only tests (launching is the slow part)."""
    directory = tmp_path_factory.mktemp("sweep")
    build(directory)

    def call(*args: str, env=None):
        full = {"ONAGER_GLOBAL_CONFIG": str(directory / "global.onagerconfig"), **(env or {})}
        return run_onager(["results", *args], cwd=str(directory), env=full)

    call.directory = directory
    return call


def _json(out) -> list:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _one_line_error(out, code: int = 2) -> str:
    assert out.returncode == code, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


# ------------------------------------------------------------------ end to end through the CLI
def test_one_row_per_task_with_typed_params_status_and_last_logged_value(sweep):
    rows = _json(sweep("sw", "--json"))
    assert [r["task_id"] for r in rows] == [1, 2, 3, 4, 5, 6]
    expected = {1: (0.1, 1), 2: (0.01, 1), 3: (0.1, 2), 4: (0.01, 2), 5: (0.1, 3), 6: (0.01, 3)}
    for r in rows:
        lr, seed = expected[r["task_id"]]
        assert (r["lr"], r["seed"]) == (lr, seed)
        assert isinstance(r["seed"], int) and isinstance(r["lr"], float)
        assert r["accuracy"] == accuracy(lr, seed)  # the second log_result, not the first
        assert r["loss"] == pytest.approx(1.0 / seed)
        assert r["status"] == ("failed" if r["task_id"] == 4 else "done")
        assert r["launch"] == "1"
        assert "@time" not in r and "time" not in r
    assert list(rows[0]) == ["task_id", "launch", "status", "lr", "seed", "loss", "accuracy"]


def test_text_table_has_every_column_and_row(sweep):
    out = sweep("sw")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["task_id", "launch", "status", "lr", "seed", "loss", "accuracy"]
    assert len(lines) == 2 + 6
    assert lines[2 + 3].split()[:5] == ["4", "1", "failed", "0.01", "2"]


def test_sort_descending_and_top(sweep):
    rows = _json(sweep("sw", "--sort", "-accuracy", "--top", "3", "--json"))
    assert [r["task_id"] for r in rows] == [5, 3, 1]
    assert [r["accuracy"] for r in rows] == [1.03, 1.02, 1.01]
    same = _json(sweep("sw", "--sort=-accuracy", "--top=3", "--json"))
    assert same == rows
    ascending = _json(sweep("sw", "--sort", "accuracy", "--top", "2", "--json"))
    assert [r["task_id"] for r in ascending] == [2, 4]


def test_sort_on_several_keys(sweep):
    rows = _json(sweep("sw", "--sort", "-seed,lr", "--json"))
    assert [(r["seed"], r["lr"]) for r in rows] == [(3, 0.01), (3, 0.1), (2, 0.01), (2, 0.1), (1, 0.01), (1, 0.1)]
    again = _json(sweep("sw", "--sort", "-seed", "--sort", "lr", "--json"))
    assert again == rows


def test_group_by_mean_std_and_count(sweep):
    groups = _json(sweep("sw", "--group-by", "lr", "--json"))
    assert [g["lr"] for g in groups] == [0.01, 0.1]
    for g in groups:
        values = [accuracy(g["lr"], s) for s in (1, 2, 3)]
        assert g["count"] == 3
        assert g["accuracy_mean"] == pytest.approx(statistics.mean(values))
        assert g["accuracy_std"] == pytest.approx(statistics.stdev(values))
        assert g["loss_mean"] == pytest.approx(statistics.mean([1.0, 0.5, 1 / 3]))
    assert set(groups[0]) == {"lr", "count", "loss_mean", "loss_std", "accuracy_mean", "accuracy_std"}


def test_group_by_only_done_tasks_and_sort_groups_by_metric_name(sweep):
    groups = _json(sweep("sw", "--status", "done", "--group-by", "lr", "--sort", "-accuracy", "--json"))
    assert [g["lr"] for g in groups] == [0.1, 0.01]
    low = groups[1]
    assert low["count"] == 2  # task 4 failed and is left out
    assert low["accuracy_mean"] == pytest.approx(0.12)
    assert low["accuracy_std"] == pytest.approx(math.sqrt(2 * 0.01 ** 2))


def test_group_by_two_params_has_one_task_per_group_and_no_std(sweep):
    groups = _json(sweep("sw", "--group-by", "lr", "seed", "--json"))
    assert len(groups) == 6 and all(g["count"] == 1 for g in groups)
    assert all(g["accuracy_std"] is None for g in groups)
    assert _json(sweep("sw", "--group-by", "lr,seed", "--json")) == groups


def test_csv_parses_with_numbers_round_tripping(sweep):
    out = sweep("sw", "--csv", "--sort", "task_id")
    assert out.returncode == 0, out.stderr
    table = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(table) == 6
    assert float(table[0]["accuracy"]) == accuracy(0.1, 1)
    assert float(table[2]["loss"]) == 0.5 and table[3]["status"] == "failed"
    grouped = list(csv.reader(io.StringIO(sweep("sw", "--csv", "--group-by", "seed").stdout)))
    assert grouped[0] == ["seed", "count", "loss_mean", "loss_std", "accuracy_mean", "accuracy_std"]
    assert [row[0] for row in grouped[1:]] == ["1", "2", "3"]
    assert float(grouped[1][4]) == pytest.approx((accuracy(0.1, 1) + accuracy(0.01, 1)) / 2)


def test_regex_metric_takes_the_last_match_of_stdout(sweep):
    rows = _json(sweep("sw", "--metric", "acc=Test accuracy: ([0-9.]+)", "--json"))
    assert {r["task_id"]: r["acc"] for r in rows} == {1: 0.25, 2: 0.25, 3: 0.5, 4: 0.5, 5: 0.75, 6: 0.75}


def test_regex_metric_over_stderr_and_grouping_on_it(sweep):
    rows = _json(sweep("sw", "--metric-err", r"val_loss=val_loss=(\d+)", "--json"))
    assert [r["val_loss"] for r in rows] == [2, 2, 4, 4, 6, 6]
    assert all(isinstance(r["val_loss"], int) for r in rows)
    nothing = _json(sweep("sw", "--metric", r"val_loss=val_loss=(\d+)", "--json"))
    assert all(r["val_loss"] is None for r in nothing)  # it is on stderr, not stdout
    groups = _json(sweep("sw", "--metric-err", r"v=val_loss=(\d+)", "--group-by", "lr", "--json"))
    assert [g["v_mean"] for g in groups] == [4.0, 4.0]
    assert groups[0]["v_std"] == pytest.approx(2.0)


def test_one_launch_with_launch_option(sweep):
    rows = _json(sweep("sw", "--launch", "1", "--json"))
    assert len(rows) == 6
    assert "no launch '9'" in _one_line_error(sweep("sw", "--launch", "9"))


@pytest.mark.parametrize("args, words", [
    (["nosuchjob"], ["no launch of job 'nosuchjob'", "onager list"]),
    (["sw", "--sort", "-acuracy"], ["unknown column 'acuracy'", "accuracy", "lr", "seed"]),
    (["sw", "--group-by", "seeds"], ["unknown parameter 'seeds'", "lr, seed"]),
    (["sw", "--group-by", "lr", "--sort", "nope"], ["unknown column 'nope'", "accuracy_mean", "count"]),
    (["sw", "--metric", "acc=Test accuracy: ([0-9.]+"], ["bad regex for --metric acc", "missing )"]),
    (["sw", "--metric", "acc=Test accuracy: [0-9.]+"], ["has no group", "parentheses"]),
    (["sw", "--metric", "accuracy"], ["not NAME=REGEX"]),
    (["sw", "--metric", "a=(x)", "--metric-err", "a=(y)"], ["'a' is given twice"]),
    (["sw", "--status", "finished"], ["unknown status finished", "done"]),
    (["sw", "--top", "0"], ["--top"]),
    (["sw", "--plot", "accuracy"], ["needs --x"]),
    (["sw", "--x", "lr"], ["--plot"]),
])
def test_bad_input_is_one_line_and_exit_2(sweep, args, words):
    out = sweep(*args)
    line = _one_line_error(out)
    for word in words:
        assert word in line
    assert out.stdout == ""


def test_rerun_of_failed_task_replaces_its_row(tmp_path):
    build(tmp_path)
    env = {"ONAGER_GLOBAL_CONFIG": str(tmp_path / "global.onagerconfig")}
    (tmp_path / "fixed").write_text("")
    out = run_onager(["launch", "--backend", "local", "--jobname", "sw", "--tasklist", "failed"],
                     cwd=str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(run_onager(["results", "sw", "--json"], cwd=str(tmp_path), env=env).stdout)
    assert len(rows) == 6
    by_id = {r["task_id"]: r for r in rows}
    assert (by_id[4]["launch"], by_id[4]["status"]) == ("2", "done")
    assert by_id[4]["accuracy"] == accuracy(0.01, 2)
    assert {r["launch"] for r in rows if r["task_id"] != 4} == {"1"}
    first = json.loads(run_onager(["results", "sw", "--launch", "1", "--json"], cwd=str(tmp_path), env=env).stdout)
    assert {r["task_id"]: r["status"] for r in first}[4] == "failed"
    only = json.loads(run_onager(["results", "sw", "--launch", "2", "--json"], cwd=str(tmp_path), env=env).stdout)
    assert [(r["task_id"], r["status"]) for r in only] == [(4, "done")]
    groups = json.loads(run_onager(["results", "sw", "--group-by", "lr", "--status", "done", "--json"],
                                   cwd=str(tmp_path), env=env).stdout)
    assert [g["count"] for g in groups] == [3, 3]


def test_plot_without_matplotlib_is_one_clear_line(sweep, tmp_path):
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    out = sweep("sw", "--plot", "accuracy", "--x", "lr", "--out", str(tmp_path / "p.png"),
                env={"PYTHONPATH": str(shim.parent) + os.pathsep + ROOT})
    line = _one_line_error(out, 1)
    assert "matplotlib" in line and "pip install 'onager[plot]'" in line
    assert not (tmp_path / "p.png").exists()


def test_plot_draws_a_png(sweep, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "acc.png"
    out = sweep("sw", "--plot", "accuracy", "--x", "seed", "--group-by", "lr", "--out", str(target))
    assert out.returncode == 0, out.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["acc.png"]  # no temporary file left
    bad = sweep("sw", "--plot", "accuracy", "--x", "seed", "--out", str(tmp_path / "acc.nope"))
    assert "--out" in _one_line_error(bad)
    unknown = sweep("sw", "--plot", "accuracy", "--x", "sed")
    assert "unknown parameter 'sed' for --x" in _one_line_error(unknown)


# ------------------------------------------------------------------ the library
def _table(rows):
    return results.build_table([results.ResultRow(i + 1, "1", "done", p, m) for i, (p, m) in enumerate(rows)])


def test_parse_metric_checks_name_regex_and_group():
    m = results.parse_metric("acc=Test accuracy: ([0-9.]+)")
    assert (m.name, m.stream, m.regex.pattern) == ("acc", "out", "Test accuracy: ([0-9.]+)")
    assert results.parse_metric("x=a=(\\d)", "err").regex.pattern == "a=(\\d)"  # only the first '=' splits
    for spec in ("=(x)", "acc=", "acc", "a b=(x)", "acc=(", "acc=x"):
        with pytest.raises(UsageError):
            results.parse_metric(spec)


def test_last_match_is_the_last_and_typed():
    regex = results.parse_metric(r"v=^v: (\S+)$").regex
    assert results.last_match("v: 1\nv: 2.5\nother\n", regex) == 2.5
    assert results.last_match("v: 7\n", regex) == 7
    assert results.last_match("v: high\n", regex) == "high"
    assert results.last_match("nothing\n", regex) is None
    optional = results.parse_metric(r"v=v(?:=(\d+))?").regex
    assert results.last_match("v=3 v", optional) == 3  # a match whose group did not take part is skipped


def test_result_lines_last_value_wins_and_damage_is_skipped():
    data = b'{"@time": 1, "a": 1, "b": 2}\n{"a": 3}\n{"b": 4, "c": "x"}\n'
    assert results.parse_result_lines(data) == {"a": 3, "b": 4, "c": "x"}
    damaged = b'{"a": 1}\n{"a": 2, "b\n{"b": 5}\n'
    assert results.parse_result_lines(damaged) == {"a": 1, "b": 5}
    assert results.parse_result_lines(b"\n") == {}


def test_read_results_one_parse_and_fallback(tmp_path):
    (tmp_path / "1.jsonl").write_bytes(b'{"a": 1}\n{"a": 2}\n')
    (tmp_path / "2.jsonl").write_bytes(b'{"a": 5}\n')
    (tmp_path / "3.jsonl").write_bytes(b"")
    assert results.read_results(str(tmp_path), [1, 2, 3, 4]) == {1: {"a": 2}, 2: {"a": 5}}
    # a file crafted to add an element to the combined parse must not shift other tasks' values
    (tmp_path / "2.jsonl").write_bytes(b'{"a": 5}],[{"a": 6}\n')
    assert results.read_results(str(tmp_path), [1, 2]) == {1: {"a": 2}, 2: {}}
    (tmp_path / "2.jsonl").write_bytes(b'{"a": 5\n{"b": 7}\n')
    assert results.read_results(str(tmp_path), [1, 2]) == {1: {"a": 2}, 2: {"b": 7}}
    assert results.read_results(str(tmp_path / "missing"), [1]) == {}


def test_mean_std_match_statistics():
    values = [0.1, 0.4, 0.35, float("nan"), None, "text", True]
    mean, std, n = results.mean_std(values)
    numbers = [0.1, 0.4, 0.35, 1.0]
    assert n == 4
    assert mean == pytest.approx(statistics.mean(numbers))
    assert std == pytest.approx(statistics.stdev(numbers))
    assert results.mean_std([2.0]) == (2.0, None, 1)
    assert results.mean_std([]) == (None, None, 0)


def test_sort_puts_missing_values_last_both_ways():
    table = _table([({"x": 1}, {"m": 2.0}), ({"x": 2}, {}), ({"x": 3}, {"m": float("nan")}), ({"x": 4}, {"m": 5})])
    results.sort_table(table, [("m", True)])
    assert [r["x"] for r in table.rows] == [4, 1, 2, 3]
    results.sort_table(table, [("m", False)])
    assert [r["x"] for r in table.rows] == [1, 4, 2, 3]
    assert results.parse_sort(["-a,b", "+c"]) == [("a", True), ("b", False), ("c", False)]
    with pytest.raises(UsageError):
        results.parse_sort(["-"])


def test_metric_named_like_a_param_gets_its_own_column():
    table = _table([({"lr": 0.1}, {"lr": 0.05, "status": "ok", "acc": 1})])
    assert table.columns == ["task_id", "launch", "status", "lr", "result:lr", "result:status", "acc"]
    assert table.rows[0]["lr"] == 0.1 and table.rows[0]["result:lr"] == 0.05
    assert table.rows[0]["status"] == "done"


def test_group_keys_may_be_lists_and_missing():
    table = _table([({"a": [1, 2]}, {"m": 1}), ({"a": [1, 2]}, {"m": 3}), ({}, {"m": 10})])
    grouped = results.group_table(table, ["a"])
    assert [(g["a"], g["count"], g["m_mean"]) for g in grouped.rows] == [([1, 2], 2, 2.0), (None, 1, 10.0)]


def test_renderers_parse_back_and_json_has_no_nan():
    table = _table([({"lr": 0.1, "amp": True}, {"acc": 0.123456789, "loss": float("nan")}),
                    ({"lr": 0.01, "amp": False}, {"acc": 0.5})])
    rows = json.loads(results.render_json(table))
    assert rows[0]["acc"] == 0.123456789 and rows[0]["loss"] is None and rows[1]["loss"] is None
    assert rows[0]["amp"] is True
    back = list(csv.DictReader(io.StringIO(results.render_csv(table))))
    assert float(back[0]["acc"]) == 0.123456789 and back[1]["loss"] == "" and back[0]["amp"] == "True"
    text = results.render_text(table).splitlines()
    assert text[0].split() == table.columns and "0.123457" in text[2]
    assert results.render_json(results.Table(["a"], [])) == "[]\n"


def test_plot_series_mean_and_std_per_group():
    table = _table([({"lr": lr, "bs": bs, "seed": s}, {"acc": lr * 10 + bs + s})
                    for lr in (0.1, 0.01) for bs in (1, 2) for s in (0, 1, 2)])
    series = results.plot_series(table, "acc", "lr", ["bs"])
    assert [label for label, *_ in series] == ["bs=1", "bs=2"]
    label, xs, means, stds = series[1]
    assert xs == [0.01, 0.1]
    assert means == pytest.approx([0.1 + 2 + 1, 1 + 2 + 1])
    assert stds == pytest.approx([1.0, 1.0])
    with pytest.raises(UsageError):
        results.plot_series(table, "lr", "seed", [])  # lr is a parameter, not a metric
    with pytest.raises(OnagerError):
        results.plot_series(_table([({"lr": 1}, {"acc": "n/a"})]), "acc", "lr", [])


class _Scalar:
    """Stands in for numpy.float32, which json cannot encode."""

    def item(self) -> float:
        return 0.25


def test_log_result_appends_plain_numbers(tmp_path, monkeypatch):
    from onager.task import log_result
    monkeypatch.setenv("ONAGER_LAUNCH_DIR", str(tmp_path))
    monkeypatch.setenv("ONAGER_TASK_ID", "7")
    log_result()  # nothing to log: nothing written
    assert not (tmp_path / "results").exists()
    log_result(accuracy=_Scalar(), step=1)
    log_result(step=2, note="ok")
    lines = [json.loads(line) for line in (tmp_path / "results" / "7.jsonl").read_text().splitlines()]
    assert lines[0]["accuracy"] == 0.25 and "@time" in lines[0]
    assert results.read_results(str(tmp_path / "results"), [7]) == {7: {"accuracy": 0.25, "step": 2, "note": "ok"}}
