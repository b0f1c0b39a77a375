from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nmt.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads(name):
    cfg = Config.from_yaml(ROOT / "configs" / name)

    assert Config.from_dict(cfg.to_dict()) == cfg


def test_overrides_reach_typed_fields():
    cfg = Config.from_yaml(
        ROOT / "configs" / "tiny.yaml", ["train.lr=3e-4", "train.max_steps=7", "train.seed=9"]
    )

    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.seed) == (3e-4, 7, 9)
    assert isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.atention=dot", "unknown config key 'model.atention' (did you mean 'attention'?)"),
        ("trian.lr=1", "unknown config section 'trian' (did you mean 'train'?)"),
        ("train.max_steps=ten", "config key 'train.max_steps' expects int, got 'ten' (str)"),
        ("train.max_steps=2.5", "config key 'train.max_steps' expects int, got 2.5 (float)"),
        (
            "train.precision=fp8",
            "config key 'train.precision' must be one of auto, fp32, bf16, fp16",
        ),
        ("model.attention=genral", "(did you mean 'general'?)"),
        ("train.lr", "override 'train.lr' is not of the form section.key=value"),
    ],
)
def test_bad_config_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        Config.from_yaml(ROOT / "configs" / "tiny.yaml", [override])

    assert message in str(err.value)


def test_cli_reports_a_bad_key_in_one_line_with_status_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nmt",
            "train",
            str(ROOT / "configs" / "tiny.yaml"),
            "model.hiden=3",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("nmt: error: unknown config key 'model.hiden' (did you mean")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # stopped before any work
