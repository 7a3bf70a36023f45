"""Unit tests of tempest.sample and of tempestd's -c default: the shipped sample is conf/'s,
--init writes it with paths that work where it lands and never overwrites, and without -c
tempestd takes the first documented place that exists and names them all when none does."""

import os
import pathlib

import pytest

from tempest import cli, config, sample

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["tempest.ini", "tempestd.service"])
def test_the_packaged_files_are_conf_s(name):
    assert sample.read(name) == (ROOT / "conf" / name).read_text(encoding="utf-8")


def test_init_writes_the_sample_with_paths_relative_to_dir(tmp_path, capsys):
    directory = tmp_path / "site"
    assert cli.main(["--init", str(directory)]) == 0
    assert sorted(os.listdir(directory)) == ["tempest.ini", "tempestd.service"]
    assert str(directory / "tempest.ini") in capsys.readouterr().out
    written = (directory / "tempest.ini").read_text().splitlines()
    original = (ROOT / "conf" / "tempest.ini").read_text().splitlines()
    assert len(written) == len(original)
    changed = [(a, b) for a, b in zip(original, written) if a != b]
    assert changed and all(a.replace("= ../", "= ") == b for a, b in changed)
    settings = config.load(str(directory / "tempest.ini"))
    assert settings.tempest.run_dir == str(directory / "run")
    assert settings.redis.data_dir == str(directory / "data")
    for path in (settings.front.access_log, settings.tempest.log_file):
        assert not path or path.startswith(str(directory) + os.sep)


def test_init_writes_a_unit_for_dir_and_this_installation(tmp_path):
    assert cli.main(["--init", str(tmp_path)]) == 0
    unit = (tmp_path / "tempestd.service").read_text()
    assert "/opt/tempest" not in unit
    assert f"WorkingDirectory={tmp_path}\n" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    program, flag, ini = exec_start[len("ExecStart="):].split()[:3]
    assert os.access(program, os.X_OK) and (flag, ini) == ("-c", str(tmp_path / "tempest.ini"))


@pytest.mark.parametrize("existing", ["tempest.ini", "tempestd.service"])
def test_init_never_overwrites(tmp_path, capsys, existing):
    (tmp_path / existing).write_text("mine\n")
    assert cli.main(["--init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"tempestd: --init: {tmp_path / existing} exists; not overwritten (nothing written)\n"
    assert os.listdir(tmp_path) == [existing] and (tmp_path / existing).read_text() == "mine\n"


def test_init_into_an_unwritable_place_is_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert cli.main(["--init", str(tmp_path / "file" / "site")]) == 2
    assert capsys.readouterr().err.startswith(f"tempestd: --init: cannot write into {tmp_path / 'file' / 'site'}: ")


def test_init_takes_no_other_option(tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main(["--init", str(tmp_path), "-c", "x.ini"])
    assert info.value.code == 2


def test_documented_places():
    assert cli.CONFIG_PLACES == ("./tempest.ini", "/etc/tempest/tempest.ini")


@pytest.fixture
def places(tmp_path, monkeypatch):
    """The two places, the second moved under tmp_path; the current directory is tmp_path/cwd."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    moved = ("./tempest.ini", str(tmp_path / "etc" / "tempest.ini"))
    monkeypatch.setattr(cli, "CONFIG_PLACES", moved)
    return moved


def write_sample(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pathlib.Path(path).write_text(sample.ini_for_directory(sample.read("tempest.ini")))


@pytest.mark.parametrize("prog, main", [("tempestd", cli.main), ("tempest", cli.tempest_main)])
def test_without_c_and_no_file_lists_the_places(places, capsys, prog, main):
    assert main(["--check"] if prog == "tempestd" else ["check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: no -c FILE, and no INI file in ./tempest.ini, {places[1]} ")
    assert err.count("\n") == 1


def test_without_c_the_current_directory_comes_first(places, capsys):
    write_sample(places[0])
    write_sample(places[1])
    assert cli.main(["--check"]) == 0
    assert capsys.readouterr().out == "tempestd: ./tempest.ini: OK\n"


def test_without_c_then_etc(places, capsys):
    write_sample(places[1])
    assert cli.tempest_main(["check"]) == 0
    assert capsys.readouterr().out == f"tempest: {places[1]}: OK\n"
