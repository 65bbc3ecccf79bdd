"""Config validation: notebook parameters are the schema, YAMLs hold overrides."""

import pytest

from compstudy import config
from compstudy.errors import ConfigError


def test_every_yaml_of_every_profile_validates_against_its_notebook():
    checked = 0
    for profile in config.PROFILES:
        for notebook in config.notebook_names():
            for run in config.run_names(profile, notebook):
                overrides = config.load_overrides(profile, notebook, run)
                params = config.notebook_parameters(notebook)
                assert set(overrides) <= set(params)
                checked += 1
    # Every notebook has a main run in every profile, paper included.
    assert checked >= len(config.PROFILES) * len(config.notebook_names())
    for profile in config.PROFILES:
        for notebook in config.notebook_names():
            assert "main" in config.run_names(profile, notebook), (profile, notebook)


def test_parameters_are_parsed_from_the_tagged_cell_without_executing():
    params = config.notebook_parameters("00_upstream")
    assert params["profile"] == "cpu" and params["run"] == "main"
    assert isinstance(params["epochs"], dict)


@pytest.mark.parametrize("notebook", config.notebook_names())
def test_the_parameters_scan_finds_the_cell_jupytext_finds(notebook):
    jupytext = pytest.importorskip("jupytext")
    source = config.notebook_path(notebook).read_text()
    tagged = [c.source for c in jupytext.reads(source, fmt="py:percent").cells
              if "parameters" in c.metadata.get("tags", [])]
    assert [cell.strip() for cell in config._parameters_cells(source)] == [c.strip() for c in tagged]


def test_a_notebook_needs_exactly_one_parameters_cell():
    one = '# %% tags=["parameters"]\nprofile = "cpu"\nrun = "main"\nseed = 0\n# %%\nx = 1\n'
    assert dict(config._parameters_of_source(one, "one")) == {"profile": "cpu", "run": "main", "seed": 0}
    for source in ("# %%\nseed = 0\n", one + one):
        with pytest.raises(ConfigError, match="exactly one cell tagged 'parameters'"):
            config._parameters_of_source(source, "bad")


@pytest.mark.parametrize("overrides, message", [
    ({"no_such_key": 1}, "unknown config key"),
    ({"seed": "zero"}, "must be int"),
    ({"batch_size": 1.5}, "must be int"),
    ({"profile": "gpu"}, "unknown profile 'gpu'; valid choices: smoke, cpu, paper"),
    ({"target_datasets": ["near", "imagenet22k"]}, "unknown dataset 'imagenet22k'"),
    ({"zoo_models": ["resnet18", "resnet9000"]}, "unknown model 'resnet9000'"),
])
def test_bad_overrides_raise_one_line_with_choices(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        config.validate("00_upstream", overrides)
    assert "\n" not in str(error.value)


def test_int_is_accepted_for_float_and_values_merge_over_defaults():
    merged = config.validate("00_upstream", {"seed": 3})
    assert merged["seed"] == 3 and merged["batch_size"] == config.notebook_parameters("00_upstream")["batch_size"]


def test_unknown_notebook_and_run_list_the_choices():
    with pytest.raises(ConfigError, match="unknown notebook 'nope'; valid choices: 00_upstream"):
        config.notebook_path("nope")
    with pytest.raises(ConfigError, match="valid choices: main"):
        config.load_overrides("smoke", "00_upstream", "nope")


def test_resolve_reads_the_namespace():
    namespace = dict(config.notebook_parameters("00_upstream"), seed=5, unrelated=object())
    cfg = config.resolve("00_upstream", namespace)
    assert cfg.seed == 5 and cfg.notebook == "00_upstream"
    assert cfg.results_dir.parts[-3:] == ("cpu", "00_upstream", "main")
    assert list(cfg.as_table().index) == list(config.notebook_parameters("00_upstream"))


def test_digest_is_stable_and_sensitive():
    assert config.digest({"a": 1, "b": [1, 2]}) == config.digest({"b": [1, 2], "a": 1})
    assert config.digest({"a": 1}) != config.digest({"a": 2})
