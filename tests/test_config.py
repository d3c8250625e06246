"""pds.config, the one reader of params.yaml: the committed file passes, and every kind of mistake in any section
stops with one line that names the entry and says what to change."""

import copy

import pytest
import yaml

from pds import config
from pds.paths import ROOT

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _with(section_path: str, key: str, value):
    p = copy.deepcopy(PARAMS)
    node = p
    for part in section_path.split("."):
        node = node[part]
    node[key] = value
    return p


def test_the_committed_params_pass():
    assert config.load() == PARAMS


SECTIONS = ["base", "toyworld.toyworld", "toyworld.toyflickr", "toymodels", "embed", "cluster", "match", "synthesize",
            "tm", "evaluate"]


@pytest.mark.parametrize("section", SECTIONS)
def test_a_misspelt_added_key_in_any_section_is_named_with_the_closest_valid_one(section):
    node = PARAMS
    for part in section.split("."):
        node = node[part]
    key = next(iter(node))
    typo = key[:-1] if len(key) > 3 else key + "x"  # n_pairs -> n_pair beside the real one
    with pytest.raises(config.ConfigError, match=rf"^{section}\.{typo}: unknown key \(did you mean '{key}'\?\)"):
        config.check(_with(section, typo, node[key]))


@pytest.mark.parametrize("section,key,value,message", [
    ("base", "n_pairs", 0, r"base.n_pairs = 0: must be at least 1"),
    ("base", "n_pairs", "100", r"base.n_pairs = '100': must be an integer"),
    ("base", "dataset", "toywrld", r"base.dataset = 'toywrld': neither a toyworld entry"),
    ("cluster", "rm_ratio", 1.0, r"cluster.rm_ratio = 1.0: must be below 1"),
    ("cluster", "rm_ratio", -0.1, r"cluster.rm_ratio = -0.1: must be at least 0"),
    ("cluster", "algorithm", "kmeanz", r"cluster.algorithm: unknown name 'kmeanz' \(did you mean 'kmeans'\?\)"),
    ("evaluate", "methods", "pds,randm", r"evaluate.methods: unknown name 'randm' \(did you mean 'random'\?\)"),
    ("evaluate", "image_encoders", "convnet,resnt", r"unknown name 'resnt'"),
    ("evaluate", "protocol", "", r"evaluate.protocol is empty"),
    ("evaluate", "full_one_per_image", True, r"must be one of 0, 1"),
    ("evaluate", "paper_lr_step", 500, r"after the last epoch"),
    ("toyworld.toyflickr", "caption_mention_rate", 1.5, r"toyworld.toyflickr.caption_mention_rate = 1.5: must be at most 1"),
])
def test_types_ranges_and_names_are_checked(section, key, value, message):
    with pytest.raises(config.ConfigError, match=message):
        config.check(_with(section, key, value))


def test_real_path_names_pass():
    p = _with("evaluate", "image_encoders", "nfnet_l0,nf_resnet50,vit_tiny_patch16_224")
    assert config.check(p) is p


def test_unknown_or_missing_sections_and_keys():
    p = copy.deepcopy(PARAMS)
    p["evalute"] = p.pop("evaluate")
    with pytest.raises(config.ConfigError, match=r"^evalute: unknown section \(did you mean 'evaluate'\?\)"):
        config.check(p)
    p = copy.deepcopy(PARAMS)
    del p["cluster"]["n_init"]
    with pytest.raises(config.ConfigError, match=r"^cluster: missing n_init"):
        config.check(p)


def test_command_line_names_the_file_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(_with("evaluate", "seed", 7)))
    assert config.main([str(bad)]) == 1
    assert capsys.readouterr().err.strip() == ("error: params.yaml: evaluate.seed: unknown key (did you mean 'seeds'?); "
                                               "rename or remove it.")
    bad.write_text("base: [unclosed")
    assert config.main([str(bad)]) == 1 and "not valid YAML" in capsys.readouterr().err
    assert config.main([]) == 0 and capsys.readouterr().out.strip() == "params.yaml: ok"


def test_every_stage_checks_params_first():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = (stage.get("do") or stage)["cmd"]
        assert cmd.startswith("python -m pds.config && "), name
