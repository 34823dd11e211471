"""Parameters: one dataclass per step drives the CLI, the runner's flat params and the schema."""

from __future__ import annotations

import dataclasses

import pytest

from scmaskgan import cli
from scmaskgan.core import config
from scmaskgan.errors import InputError


def test_every_field_has_help_and_a_valid_default():
    for cls in config.STEP_PARAMS.values():
        instance = cls()  # defaults pass their own validation
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
            if "choices" in f.metadata:
                assert getattr(instance, f.name) in f.metadata["choices"]


def test_flat_names_are_unique_except_the_shared_ones():
    seen: dict[str, str] = {}
    for step, cls in config.STEP_PARAMS.items():
        for f in dataclasses.fields(cls):
            name = config.flat_name(step, f.name)
            if name in seen and name not in {"seed", "device"}:
                other = seen[name]
                a = dataclasses.fields(config.STEP_PARAMS[other])
                default_other = next(x.default for x in a if config.flat_name(other, x.name) == name)
                assert f.default == default_other, f"{name} means different things in {other} and {step}"
            seen[name] = step


def test_flat_params_reach_the_right_step():
    flat = {"generate_batch_size": 17, "batch_size": 33, "impute_k": 9, "seed": 4, "unrelated": 1}
    assert config.step_params_from_flat("generate", flat).batch_size == 17
    assert config.step_params_from_flat("train", flat).batch_size == 33
    assert config.step_params_from_flat("impute", flat).k == 9
    seeded = [s for s, cls in config.STEP_PARAMS.items() if "seed" in {f.name for f in dataclasses.fields(cls)}]
    assert len(seeded) >= 5
    assert all(config.step_params_from_flat(s, flat).seed == 4 for s in seeded)


def test_bad_choice_and_unknown_key_are_input_errors():
    with pytest.raises(InputError, match="impute_mode|mode='everything'"):
        config.step_params_from_flat("impute", {"impute_mode": "everything"})


def test_params_no_step_reads_are_named_with_the_nearest_parameter():
    flat = {"epoch": 3, "epochs": 2, "impute_mod": "zeros", "max_cpus": 4, "seed": 1}
    assert config.unread_params(flat) == ["epoch (did you mean epochs?)", "impute_mod (did you mean impute_mode?)",
                                          "max_cpus"]
    assert config.unread_params({"epochs": 2, "seed": 1}) == []


def test_cli_exposes_every_step_parameter(capsys):
    commands = {"qc": "qc", "prepare": "prepare", "train": "train", "generate": "generate",
                "filter": "filter", "impute": "impute-step", "integrate": "integrate"}
    for step, command in commands.items():
        rc = cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert rc == 0
        for f in dataclasses.fields(config.STEP_PARAMS[step]):
            option = "--" + f.name.replace("_", "-")
            assert option in out, f"{command} --help lacks {option}"


def test_cli_bad_choice_is_one_line_error(tmp_path, capsys):
    data = tmp_path / "x.h5"
    data.write_text("not hdf5")
    rc = cli.main(["train", str(data), "--rec-loss", "bogus", "--outdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0
    assert "rec_loss='bogus'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_sample_id_from_path_strips_data_suffixes():
    assert cli.sample_id_from_path("/x/GSM1.csv.gz") == "GSM1"
    assert cli.sample_id_from_path("s1.qc.h5ad") == "s1"
    assert cli.sample_id_from_path("run/filtered_feature_bc_matrix") == "filtered_feature_bc_matrix"


def test_unknown_option_is_a_usage_error_not_an_internal_error(capsys):
    rc = cli.main(["qc", "counts.h5ad", "--no-such-option"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "No such option" in err and "internal error" not in err and "Traceback" not in err
