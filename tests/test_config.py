from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(SHIPPED), pick=st.integers(0, 10_000))
def test_a_key_or_section_given_twice_is_refused_naming_both_lines(tmp_path_factory, name, pick):
    """Any line of a shipped config written once more, later in its mapping (a section
    again at the end, a key again at the end of its section): never the last one wins."""
    lines = name.read_text().splitlines()
    entries = [i for i, line in enumerate(lines) if re.match(r"^ *[a-z_]+:", line)]
    first = entries[pick % len(entries)]
    indent = len(lines[first]) - len(lines[first].lstrip())
    # the end of the mapping that holds it: the next line indented less, or the file's end
    end = next((i for i in range(first + 1, len(lines)) if _indent(lines[i]) < indent), len(lines))
    # a key once more at its section's end; a section once more, empty, at the file's end
    again = lines[first] if indent else f"{lines[first].split(':')[0]}: null"
    text = "\n".join([*lines[:end], again, *lines[end:]]) + "\n"
    path = tmp_path_factory.mktemp("twice") / "config.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError) as err:
        Config.from_yaml(path)

    key = lines[first].split(":")[0].strip()
    assert str(err.value) == (
        f"{path} line {end + 1}: {key!r} is given twice (first on line {first + 1}); keep one"
    )


def _indent(line: str) -> int:
    if not line.strip() or line.lstrip().startswith("#"):
        return 10**6  # blank lines and comments end no mapping
    return len(line) - len(line.lstrip())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_steps: 5\n", "'max_steps' is a key of section 'train', not a section"),
        ("decode: 5\n", "config section 'decode' must be a mapping of keys, got 5 (int)"),
        ("model: [1, 2]\n", "config section 'model' must be a mapping of keys, got [1, 2] (list)"),
        ("trian:\n  lr: 1\n", "unknown config section 'trian' (did you mean 'train'?)"),
    ],
)
def test_what_is_not_a_section_is_named(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  train: x\n{text}")

    with pytest.raises(ConfigError) as err:
        Config.from_yaml(path)

    assert str(err.value).startswith(f"{path}: {message}")


def test_an_empty_section_takes_the_defaults_and_a_merge_key_still_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "train:\nmodel: &m\n  emb_dim: 8\ndecode:\n  <<: {beam_size: 2}\n  beam_size: 3\n"
    )

    cfg = Config.from_yaml(path)

    assert cfg.train == Config().train and cfg.model.emb_dim == 8 and cfg.decode.beam_size == 3
