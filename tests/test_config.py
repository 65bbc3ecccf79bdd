"""Config validation: one typed config per notebook, its parameters cell holds the defaults,
YAMLs hold overrides."""

import dataclasses
from typing import Any

import pytest

from compstudy import cache, config, paths
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
    assert isinstance(params["resolutions"], dict) and isinstance(params["targets"], list)


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
    ({"throughput_batch": 1.5}, "must be int"),
    ({"profile": "gpu"}, "unknown profile 'gpu'; valid choices: smoke, cpu, paper"),
    ({"targets": ["near", "imagenet22k"]}, "unknown targets value 'imagenet22k'"),
    ({"upstream_models": ["deit_tiny", "resnet9000"]}, "unknown model 'resnet9000'"),
])
def test_bad_overrides_raise_one_line_with_choices(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        config.validate("00_upstream", overrides)
    assert "\n" not in str(error.value)


def test_int_is_accepted_for_float_and_values_merge_over_defaults():
    merged = config.validate("00_upstream", {"seed": 3})
    assert merged["seed"] == 3 and merged["throughput_batch"] == config.notebook_parameters("00_upstream")["throughput_batch"]


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
    assert cfg.figures_dir == cfg.results_dir / "figures"
    assert list(cfg.as_table().index) == list(config.notebook_parameters("00_upstream"))
    assert '<table id="T_parameters" class="dataframe compstudy-text">' in cfg.as_table().to_html()  # text, left-aligned
    assert list(cfg.params) == list(config.notebook_parameters("00_upstream"))


def test_digest_is_one_function_stable_and_sensitive():
    assert config.digest is cache.digest
    assert config.digest({"a": 1, "b": [1, 2]}) == config.digest({"b": [1, 2], "a": 1})
    assert config.digest({"a": 1}) != config.digest({"a": 2})


# ----------------------------------------------------------------------------- typed configs


@pytest.mark.parametrize("notebook", config.notebook_names())
def test_every_notebook_has_a_typed_config_matching_its_parameters_cell(notebook):
    cls = config.config_class(notebook)
    assert cls.__module__ == config.study_module(notebook) and cls.__name__ == "Config"
    assert cls.NOTEBOOK == notebook
    assert [f.name for f in dataclasses.fields(cls)] != []
    assert {f.name for f in dataclasses.fields(cls)} == set(config.notebook_parameters(notebook))
    assert all(ref.split("/")[0] in config.notebook_names() for ref in cls.UPSTREAM)
    cfg = cls.resolve(dict(config.notebook_parameters(notebook)))  # the defaults are valid
    assert isinstance(cfg, cls) and cfg.params == config.notebook_parameters(notebook)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.profile = "paper"


def test_chapters_declare_the_runs_they_read():
    assert config.config_class("00_upstream").UPSTREAM == ()
    assert config.config_class("02_pruning_value").UPSTREAM == ()
    for notebook in ("01_hidden_cost", "03_sls", "04_dcvit"):
        assert config.config_class(notebook).UPSTREAM == ("00_upstream/main",)


def test_load_config_returns_the_typed_instance():
    cfg = config.load_config("smoke", "04_dcvit", "update_all")
    assert type(cfg).__module__ == "compstudy.studies.dcvit"
    assert cfg.update_settings == ["before", "all"] and cfg.profile == "smoke" and cfg.run == "update_all"
    assert cfg.n_blocks is None


@pytest.mark.parametrize("value, hint, ok", [
    (1, int, True), (True, int, False), (1.5, int, False), (1, float, True), (1.5, float, True),
    (True, float, False), ("a", str, True), (1, str, False), (True, bool, True), (1, bool, False),
    ([1, 2], list[int], True), ([1, "2"], list[int], False), ((1, 2), list[int], False),
    ([], list[str], True), ({"a": [0.1, 1]}, dict[str, list[float]], True),
    ({"a": [0.1, "x"]}, dict[str, list[float]], False), ({1: [0.1]}, dict[str, list[float]], False),
    ({"a": object()}, dict[str, Any], True), (None, int | None, True), (3, int | None, True),
    ("3", int | None, False), (None, int, False), ("all", list[str], False),
])
def test_the_type_checker(value, hint, ok):
    assert config.conforms(value, hint) is ok


@pytest.mark.parametrize("notebook, overrides, message", [
    ("04_dcvit", {"n_blocks": "two"}, "config key 'n_blocks' of notebook 04_dcvit must be int | None, got 'two'"),
    ("04_dcvit", {"num_samples": [100, 5.5]}, "'num_samples' of notebook 04_dcvit must be list[int], got [100, 5.5]"),
    ("04_dcvit", {"num_samples": 100}, "must be list[int], got 100"),
    ("02_pruning_value", {"resnet_stage_ratios": {"B": [0.6, "x", 0.1]}},
     "'resnet_stage_ratios' of notebook 02_pruning_value must be dict[str, list[float]]"),
    ("02_pruning_value", {"measure_speed": 1}, "'measure_speed' of notebook 02_pruning_value must be bool, got 1"),
    ("04_dcvit", {"update_settings": ["before", "some"]},
     "unknown update_settings value 'some'; valid choices: before, all"),
    ("04_dcvit", {"mlp_inits": ["rand"]}, "unknown mlp_inits value 'rand'; valid choices: random, activation"),
    ("04_dcvit", {"trial_drop_ratio": 1.5}, "'trial_drop_ratio' of notebook 04_dcvit must lie in [0, 1), got 1.5"),
    ("04_dcvit", {"num_samples": [100, 0]}, "must lie in [1, inf], got 0"),
    ("03_sls", {"alphas": [0.3, 1.5]}, "alpha must lie in (0, 1], got 1.5"),
    ("03_sls", {"petl_methods": ["lora"]}, "unknown petl_methods value 'lora'; valid choices: convpass, adapter"),
    ("03_sls", {"map_layers": [3, 13]}, "map layer 13 is beyond the model's depth; valid: 1..12"),
    ("02_pruning_value", {"slim_ratio": 1.0}, "slim_ratio"),
    ("02_pruning_value", {"regimes": ["scratch_c"]}, "unknown training regime 'scratch_c'"),
    ("01_hidden_cost", {"sparse_families": {"lotery": [0.5]}}, "unknown sparse family 'lotery'"),
    ("01_hidden_cost", {"compressed_methods": {"ilm": ["svhn"]}}, "compressed_methods['ilm'] names 'svhn'"),
    ("01_hidden_cost", {"kd_per_class": 2500}, "exceed proxy_per_class (2500)"),
    ("01_hidden_cost", {"shots": [0]}, "shots must be positive images per class, got 0"),
    ("00_upstream", {"probe_train_per_class": 0},
     "'probe_train_per_class' of notebook 00_upstream must lie in [1, inf], got 0"),
])
def test_typed_configs_reject_bad_values_in_one_line(notebook, overrides, message):
    with pytest.raises(ConfigError) as error:
        config.validate(notebook, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_config_class_that_drifts_from_its_parameters_cell_is_named():
    base = config.config_class("04_dcvit")
    fields = [(f.name, f.type) for f in dataclasses.fields(base) if f.name not in ("lr", "profile", "run")]
    drifted = dataclasses.make_dataclass("Config", fields + [("learning_rate", float)],
                                         bases=(config.NotebookConfig,), frozen=True,
                                         namespace={"NOTEBOOK": "04_dcvit"})
    with pytest.raises(ConfigError, match="does not match the parameters cell of 04_dcvit: "
                       "no field for lr; no parameter for field learning_rate"):
        drifted.from_overrides({})


def test_the_defaults_are_not_shared_between_configs():
    a = config.load_config("smoke", "04_dcvit", "main")
    a.seeds.append(99)
    assert 99 not in config.load_config("smoke", "04_dcvit", "main").seeds
    assert 99 not in config.notebook_parameters("04_dcvit")["seeds"]


def test_a_notebook_without_a_study_module_gets_types_from_its_defaults(tmp_path, monkeypatch):
    (tmp_path / "00_toy.py").write_text('# %% tags=["parameters"]\nprofile = "cpu"\nrun = "main"\n'
                                        'units = 5\nrate = 0.5\nnames = ["a"]\nlimit = None\n')
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", tmp_path)
    cls = config.config_class("00_toy")
    assert issubclass(cls, config.NotebookConfig) and cls.UPSTREAM == ()
    cfg = cls.from_overrides({"units": 3, "rate": 1, "limit": "anything"})
    assert (cfg.units, cfg.rate, cfg.limit) == (3, 1, "anything")
    with pytest.raises(ConfigError, match="config key 'units' of notebook 00_toy must be int, got 2.5"):
        cls.from_overrides({"units": 2.5})
    with pytest.raises(ConfigError, match="unknown config key for notebook 00_toy: 'unit'"):
        cls.from_overrides({"unit": 2})


# ----------------------------------------------------------------------------- YAML errors


@pytest.mark.parametrize("text, line, problem", [
    ("seed: 1\nepochs: {resnet18: 2\n", 3, "expected ',' or '}'"),
    ("seed: 1\n  batch_size: 4\n", 2, "mapping values are not allowed here"),
    ("seed: [1, 2\nbatch_size: 4\n", 2, "expected ',' or ']'"),
    ("probe_shots: [5, -1]\n\ttarget_datasets: [near]\n", 2, "found character '\\t'"),
])
def test_a_yaml_syntax_error_is_one_line_with_file_and_line(tmp_path, monkeypatch, text, line, problem):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(paths, "CONFIGS_DIR", tmp_path / "configs")
    yaml_file = tmp_path / "configs" / "smoke" / "00_upstream" / "main.yaml"
    yaml_file.parent.mkdir(parents=True)
    yaml_file.write_text(text)
    with pytest.raises(ConfigError) as error:
        config.load_overrides("smoke", "00_upstream", "main")
    message = str(error.value)
    assert message.startswith(f"configs/smoke/00_upstream/main.yaml, line {line}, column ")
    assert "YAML syntax error" in message and problem in message and "\n" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
