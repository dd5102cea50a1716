"""Resources: parsing of memory and walltime, validation errors that name the field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from matdx.hpc.errors import ResourceError
from matdx.hpc.resources import (
    Resources,
    format_hms,
    format_memory,
    parse_memory,
    parse_walltime,
    to_argv,
)


@pytest.mark.parametrize(
    ("value", "mib"),
    [(100, 100), ("512M", 512), ("512MB", 512), ("4G", 4096), ("4gb", 4096), ("4GiB", 4096),
     ("1.5G", 1536), ("1T", 1024**2), ("2048", 2048), ("1536k", 2), (" 8 G ", 8192)],
)
def test_parse_memory(value, mib):
    assert parse_memory(value) == mib


@pytest.mark.parametrize("value", ["", "lots", "-1G", "4X", "0", 0, -5, True, 1.5, "4G;rm"])
def test_parse_memory_rejects(value):
    with pytest.raises(ValueError, match=r"memory|not a memory amount"):
        parse_memory(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("00:01:30", 90), ("1:00:00", 3600), ("48:00:00", 172800),
     ("1-00:00:00", 86400), ("2-12", 216000), ("2-12:30", 217800), ("90s", 90),
     ("30min", 1800), ("1.5h", 5400), ("2d", 172800), (dt.timedelta(minutes=5), 300)],
)
def test_parse_walltime(value, seconds):
    assert parse_walltime(value) == seconds


@pytest.mark.parametrize(
    "value", ["10:00", "1:30", "", "soon", "00:61:00", "0", 0, -1, "400d", True, 1.5],
)
def test_parse_walltime_rejects(value):
    with pytest.raises(ValueError, match="walltime"):
        parse_walltime(value)


def test_formatting():
    assert format_hms(0) == "00:00:00"
    assert format_hms(3 * 86400 + 5) == "72:00:05"
    assert format_memory(2048) == "2G"
    assert format_memory(1000) == "1000M"


def test_defaults_and_derived_values():
    r = Resources(walltime="1h", nodes=2, ranks_per_node=4, threads_per_rank=3)
    assert r.job_name == "matdx"
    assert (r.total_ranks, r.cores_per_node, r.total_cores) == (8, 12, 24)
    assert r.script_environment() == {"OMP_NUM_THREADS": "3"}
    assert Resources(walltime=60, environment={"OMP_NUM_THREADS": 2}).script_environment() == {
        "OMP_NUM_THREADS": "2"
    }


def test_commands_are_argv_tuples():
    r = Resources(walltime=60, pre_commands=["echo a;b", ["printf", "%s\t", "x y"]])
    assert r.pre_commands == (("echo", "a;b"), ("printf", "%s\t", "x y"))


def test_paths_accept_pathlike():
    r = Resources(walltime=60, working_directory=Path("/scratch/run-1"), output="out-%j.log")
    assert r.working_directory == "/scratch/run-1"
    assert r.output == "out-%j.log"


def test_immutable_and_replace_validates():
    r = Resources(walltime=60)
    with pytest.raises(Exception, match="frozen"):
        r.nodes = 4  # type: ignore[misc]
    assert r.replace(nodes=4).nodes == 4
    with pytest.raises(ResourceError, match="nodes"):
        r.replace(nodes=0)


def test_from_mapping():
    r = Resources.from_mapping({"walltime": "2h", "memory": "1G"})
    assert (r.walltime, r.memory) == (7200, 1024)
    with pytest.raises(ResourceError, match="expected a mapping"):
        Resources.from_mapping(["walltime", "2h"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_name", "relax; rm -rf ~"),
        ("job_name", "name\n#SBATCH --uid=0"),
        ("job_name", "$(touch x)"),
        ("job_name", "`id`"),
        ("job_name", "9starts-with-digit"),
        ("job_name", "x" * 65),
        ("partition", "debug --uid=0"),
        ("partition", "debug\n#SBATCH --x"),
        ("account", "acct;id"),
        ("qos", "$(id)"),
        ("output", "out file.log"),
        ("output", "/tmp/$(touch x)"),
        ("output", "-oops"),
        ("error", "/tmp/`id`.err"),
        ("working_directory", "/tmp/a;b"),
        ("working_directory", "host:/path"),
        ("working_directory", "/tmp/new\nline"),
        ("modules", ["gcc/12; rm -rf /"]),
        ("modules", ["$(id)"]),
        ("nodes", 0),
        ("ranks_per_node", "many"),
        ("threads_per_rank", -1),
        ("gpus_per_node", -1),
        ("memory", "lots"),
        ("walltime", "10:00"),
        ("pre_commands", "echo not-a-list"),
        ("pre_commands", [""]),
        ("pre_commands", ["echo 'unbalanced"]),
        ("post_commands", [["echo", "nul\x00"]]),
    ],
)
def test_invalid_values_name_the_field(field, value):
    data = {"walltime": 60, field: value}
    with pytest.raises(ResourceError) as info:
        Resources(**data)
    message = str(info.value)
    assert message.startswith("invalid resources: ")
    assert f"{field}" in message


@pytest.mark.parametrize(
    ("env", "bad"),
    [({"A B": "x"}, "'A B'"), ({"1X": "x"}, "'1X'"), ({"X;Y": "x"}, "X;Y"),
     ({"X": None}, "value of X"), ({"X": "a\x00b"}, "control character (U+0000)"),
     ({"X": "a\n#$ -l h_rt=99:00:00"}, "line break (U+000A)"),
     ({"X": "a\r#SBATCH --uid=0"}, "line break (U+000D)")],
)
def test_invalid_environment(env, bad):
    with pytest.raises(ResourceError, match="environment") as info:
        Resources(walltime=60, environment=env)
    assert bad in str(info.value)


def test_unknown_field_rejected():
    with pytest.raises(ResourceError, match="walltme: Extra inputs are not permitted"):
        Resources(walltime=60, walltme=30)


def test_several_errors_reported_together():
    with pytest.raises(ResourceError) as info:
        Resources(walltime="never", nodes=0, job_name="a b")
    message = str(info.value)
    assert "walltime" in message
    assert "nodes" in message
    assert "job_name" in message


def test_to_argv():
    assert to_argv("a 'b c' $(d)") == ("a", "b c", "$(d)")
    assert to_argv(["x", "y z"]) == ("x", "y z")
    for bad in ("", [], "   ", 3):
        with pytest.raises(ValueError, match="command"):
            to_argv(bad)
