"""Configuration: defaults < config file < flags, TOML round trips, and clear errors."""

import pytest

from pyro_vae.cli import build_parser
from pyro_vae.cli.train import resolve_args
from pyro_vae.runs.config import (
    OPTIONS,
    ConfigError,
    defaults,
    parse_scalar,
    read_config_file,
    resolve_config,
    to_toml,
    tomllib,
)


def resolve(argv):
    return resolve_args(build_parser().parse_args(["train", *argv]))


def test_defaults_are_valid_and_every_option_is_a_flag():
    assert resolve_config() == defaults()
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name, option in OPTIONS.items():
        flag = option.flag if option.kind != "table" else "--" + name[:-1].replace("_", "-")
        assert flag in help_text, flag


def test_file_overrides_defaults_and_flags_override_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('z_dim = 3\nprior = "vamp"\nepochs = 7\nhidden = [32, 16]\n'
                    'prior_options = {num_components = 5}\nlr = 1\n')
    config = resolve(["--config", str(path), "--z-dim", "5", "--prior-option",
                      "unit_interval=false", "--no-figures"])
    assert config["z_dim"] == 5                          # flag beats file
    assert config["prior"] == "vamp" and config["epochs"] == 7   # file beats default
    assert config["hidden"] == [32, 16] and config["lr"] == 1.0 and isinstance(
        config["lr"], float)
    assert config["prior_options"] == {"num_components": 5, "unit_interval": False}
    assert config["figures"] is False
    assert config["batch_size"] == OPTIONS["batch_size"].default
    assert resolve(["--hidden", "64,32"])["hidden"] == [64, 32]


def test_toml_round_trip():
    config = resolve_config({"dataset": 'odd "name".csv', "hidden": [3, 2],
                             "data_options": {"label_column": "kind", "standardize": True},
                             "lr": 1e-05, "beta": 0.5})
    text = to_toml(config, header="a header\nline two")
    assert tomllib.loads(text) == config
    assert text.startswith("# a header\n# line two\n")


def test_parse_scalar():
    assert parse_scalar("3") == 3 and parse_scalar("0.5") == 0.5
    assert parse_scalar("true") is True and parse_scalar("kind") == "kind"


@pytest.mark.parametrize("values,match", [
    ({"z_dimm": 2}, "unknown option 'z_dimm'; did you mean 'z_dim'"),
    ({"z_dim": 0}, "bad z_dim 0: must be > 0"),
    ({"z_dim": 2.5}, "z_dim must be an integer"),
    ({"prior": "vampp"}, "Did you mean 'vamp'"),
    ({"estimator": "iwae:k=0"}, "k must be >= 1|particles k"),
    ({"dataset": "mnits"}, "Did you mean 'mnist'"),
    ({"hidden": [0]}, "positive layer widths"),
    ({"binarize": "yes"}, "must be one of"),
    ({"figures": "no"}, "figures must be true or false"),
    ({"device": "gpu"}, "bad device"),
])
def test_bad_values(values, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(values)


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "nope.toml")
    (tmp_path / "broken.toml").write_text("z_dim = = 3\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        read_config_file(tmp_path / "broken.toml")
    (tmp_path / "table.toml").write_text("[training]\nepochs = 3\n")
    with pytest.raises(ConfigError, match="unknown option 'training'"):
        resolve_config(read_config_file(tmp_path / "table.toml"))
