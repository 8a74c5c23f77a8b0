"""`onager config`: 0.1.3's INI files, exact round trips of multi-line headers, clean refusals."""
from __future__ import annotations

import configparser
import os

import pytest
from support import ok, refused

from onager import config as configmod
from onager.errors import UsageError

README_HEADER = """module load python/3.7.4
module load cuda/10.2
module load cudnn/7.6.5
source ./venv/bin/activate"""


def files(project) -> list:
    """Everything under the project, to prove a refused command wrote nothing."""
    found = []
    for root, dirs, names in os.walk(project):
        found.extend(os.path.relpath(os.path.join(root, n), project) for n in dirs + names)
    return sorted(found)


# ------------------------------------------------------------------- write
def test_readme_example_is_written_as_plain_ini(onager, project):
    result = onager("config", "--write", "slurm", "header", README_HEADER)
    ok(result)
    assert ".onager/config" in result.stderr
    path = project / ".onager" / "config"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    assert parser["slurm"]["header"] == README_HEADER  # what 0.1.3's reader gets back
    assert "json:" not in path.read_text()
    assert configmod.read_section("slurm") == {"header": README_HEADER}
    assert (project / ".onager" / ".gitignore").read_text() == "*\n"


def test_single_line_value(onager, project):
    ok(onager("config", "--write", "slurm", "header", "module load cuda"))
    assert configmod.read_section("slurm")["header"] == "module load cuda"
    assert "header = module load cuda" in (project / ".onager" / "config").read_text()


@pytest.mark.parametrize("value", [
    "line1\n    indented line\n\tTabbed\nlast",
    "  leading spaces",
    "trailing spaces  ",
    "first\n\nafter a blank line",
    "ends with newline\n",
    "\nstarts with newline",
    "percent %(home)s and %d",
    'json:"looks encoded"',
    "semi ; colon # hash",
    "[section] = value",
    "unicode héllo 日本",
    'quotes \' " and \\ backslash',
    "key = value\nother: thing",
    "x" * 5000,
])
def test_values_round_trip_exactly(onager, project, value):
    ok(onager("config", "--write", "local", "header", value))
    assert configmod.read_section("local")["header"] == value
    # and through --read (a table: check the value's text is in it, line by line)
    out = ok(onager("config", "--read"))
    for line in value.strip().splitlines():
        if line.strip():
            assert line.strip() in out


def test_repeatable_write_sets_every_item(onager, project):
    ok(onager("config", "--write", "slurm", "partition", "gpu", "--write", "slurm", "mem", "8G",
              "--write", "gridengine", "footer", "echo done"))
    assert configmod.read_section("slurm") == {"partition": "gpu", "mem": "8G"}
    assert configmod.read_section("gridengine") == {"footer": "echo done"}


def test_writing_keeps_other_settings_and_empty_value_removes(onager, project):
    ok(onager("config", "--write", "slurm", "header", "a"))
    ok(onager("config", "--write", "slurm", "footer", "b"))
    ok(onager("config", "--write", "slurm", "header", "c"))
    assert configmod.read_section("slurm") == {"header": "c", "footer": "b"}
    ok(onager("config", "--write", "slurm", "header", ""))
    assert configmod.read_section("slurm") == {"footer": "b"}


@pytest.mark.parametrize("key", ["header", "footer", "mem", "partition", "max-tasks", "max_tasks", "cpus"])
def test_known_keys_are_accepted(onager, project, key):
    ok(onager("config", "--write", "slurm", key, "4"))
    assert configmod.read_section("slurm")[key] == "4"


# ------------------------------------------------------------ global/local
def test_global_and_local_files_and_local_wins(onager, project):
    ok(onager("config", "--global", "--write", "slurm", "header", "global header", "--write", "slurm", "mem", "4G"))
    assert os.path.exists(os.environ["ONAGER_GLOBAL_CONFIG"])
    assert not (project / ".onager" / "config").exists()
    ok(onager("config", "--local", "--write", "slurm", "header", "local header"))
    assert configmod.read_section("slurm") == {"header": "local header", "mem": "4G"}
    assert configmod.read_section("slurm", which="global") == {"header": "global header", "mem": "4G"}
    assert configmod.read_section("slurm", which="local") == {"header": "local header"}
    out_global = ok(onager("config", "--read", "--global"))
    assert "global header" in out_global and "local header" not in out_global
    out_local = ok(onager("config", "--read", "--local"))
    assert "local header" in out_local and "global header" not in out_local
    out_all = ok(onager("config", "--read"))
    assert "global header" in out_all and "local header" in out_all


def test_local_header_wins_at_launch(onager, project):
    ok(onager("config", "--global", "--write", "local", "header", "export GREETING=global"))
    ok(onager("config", "--write", "local", "header", "export GREETING=local\nexport OTHER='two words'"))
    ok(onager("config", "--write", "local", "footer", "echo footer-ran > footer.txt"))
    ok(onager("prelaunch", "+jobname", "h", "+command", 'echo "$GREETING $OTHER" > out.txt', "+q"))
    result = onager("launch", "--backend", "local", "--jobname", "h")
    assert result.returncode == 0, result.stderr
    assert (project / "out.txt").read_text() == "local two words\n"
    assert (project / "footer.txt").read_text() == "footer-ran\n"


def test_read_with_nothing_set(onager, project):
    result = onager("config", "--read")
    assert ok(result) == ""
    assert "no settings" in result.stderr
    assert ok(onager("config")) == ""


# ------------------------------------------------------------------ errors
def test_unknown_backend_is_refused_and_nothing_written(onager, project):
    before = files(project)
    refused(onager("config", "--write", "slrum", "header", "x"), "slrum", "slurm")
    assert files(project) == before
    assert not os.path.exists(os.environ["ONAGER_GLOBAL_CONFIG"])


def test_unknown_key_is_refused_with_suggestion(onager, project):
    before = files(project)
    line = refused(onager("config", "--write", "slurm", "headr", "x"), "headr", "header")
    assert "did you mean" in line
    assert files(project) == before


def test_one_bad_item_writes_none(onager, project):
    ok(onager("config", "--write", "slurm", "header", "kept"))
    path = project / ".onager" / "config"
    before = path.read_bytes()
    refused(onager("config", "--write", "slurm", "header", "new", "--write", "slurm", "bogus_key", "1"), "bogus_key")
    refused(onager("config", "--write", "slurm", "header", "new", "--write", "nowhere", "header", "1"), "nowhere")
    assert path.read_bytes() == before


def test_global_write_error_writes_nothing(onager, project):
    refused(onager("config", "--global", "--write", "slurm", "nope", "x"), "nope")
    assert not os.path.exists(os.environ["ONAGER_GLOBAL_CONFIG"])


@pytest.mark.parametrize("argv", [
    ["--write", "slurm", "header"],
    ["--write", "slurm"],
])
def test_bad_command_lines(onager, project, argv):
    refused(onager("config", *argv), "config")


def test_unknown_option_is_refused(onager, project):
    refused(onager("config", "--bogus"), "--bogus")
    assert files(project) == []


def test_unknown_option_points_at_the_subcommand_help(onager, project):
    refused(onager("config", "--bogus"), "--bogus", "onager config --help")


def test_global_and_local_together_are_refused(onager, project):
    refused(onager("config", "--global", "--local", "--write", "slurm", "header", "x"), "--global", "--local")
    assert not os.path.exists(os.environ["ONAGER_GLOBAL_CONFIG"])


def test_broken_config_file_is_one_line(onager, project):
    (project / ".onager").mkdir()
    (project / ".onager" / "config").write_text("header = no section\n")
    refused(onager("config", "--read"), ".onager/config")
    before = (project / ".onager" / "config").read_text()
    refused(onager("config", "--write", "slurm", "header", "x"), ".onager/config")
    assert (project / ".onager" / "config").read_text() == before


def test_library_write_checks_before_writing(project):
    with pytest.raises(UsageError):
        configmod.write([("slurm", "header", "a"), ("bad", "header", "b")])
    assert not (project / ".onager" / "config").exists()
    with pytest.raises(UsageError) as info:
        configmod.write([("slurm", "paritition", "a")], allowed_keys={"partition", "header"})
    assert "partition" in str(info.value)


# --------------------------------------------------------------- 0.1.3 INI
ONAGER_013_INI = """[slurm]
header = module load python/3.7.4
\tmodule load cuda/10.2
\tsource ./venv/bin/activate
footer = echo done

[gridengine]
header = source ~/venv/bin/activate

"""


def test_013_ini_files_are_read(onager, project):
    (project / ".onager").mkdir()
    (project / ".onager" / "config").write_text(ONAGER_013_INI)
    with open(os.environ["ONAGER_GLOBAL_CONFIG"], "w") as handle:
        handle.write("[slurm]\nheader = from home\nmem = 3\n")
    assert configmod.read_section("slurm") == {
        "header": "module load python/3.7.4\nmodule load cuda/10.2\nsource ./venv/bin/activate",
        "footer": "echo done", "mem": "3"}
    assert configmod.read_section("gridengine") == {"header": "source ~/venv/bin/activate"}
    out = ok(onager("config", "--read"))
    assert "module load cuda/10.2" in out and "from home" in out
    # writing one key keeps the others, still as plain INI
    ok(onager("config", "--write", "gridengine", "footer", "echo bye"))
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(project / ".onager" / "config")
    assert parser["slurm"]["header"] == "module load python/3.7.4\nmodule load cuda/10.2\nsource ./venv/bin/activate"
    assert parser["gridengine"]["footer"] == "echo bye"


def test_ensure_onager_dir_keeps_an_existing_gitignore(project):
    (project / ".onager").mkdir()
    (project / ".onager" / ".gitignore").write_text("custom\n")
    configmod.ensure_onager_dir(str(project))
    assert (project / ".onager" / ".gitignore").read_text() == "custom\n"
    configmod.ensure_onager_dir(str(project / "sub"))
    assert (project / "sub" / ".onager" / ".gitignore").read_text() == "*\n"
