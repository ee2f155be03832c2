"""etc/servicegroup.conf.sample is what oslo-config-generator makes of the
options today: an option added, renamed, deprecated or re-documented in
:mod:`servicegroup.conf` without regenerating the sample fails here."""

from __future__ import annotations

import pathlib

from oslo_config import generator

ROOT = pathlib.Path(__file__).resolve().parent.parent
GENERATOR_CONFIG = ROOT / "etc" / "oslo-config-generator" / "servicegroup.conf"
SAMPLE = ROOT / "etc" / "servicegroup.conf.sample"


def test_checked_in_sample_config_is_what_the_generator_makes_now(tmp_path: pathlib.Path) -> None:
    fresh = tmp_path / "servicegroup.conf.sample"
    generator.main(["--config-file", str(GENERATOR_CONFIG), "--output-file", str(fresh)])
    assert fresh.read_text() == SAMPLE.read_text(), (
        "etc/servicegroup.conf.sample is out of date: run `make sample-config` and commit the result"
    )


def test_sample_config_documents_every_option_group() -> None:
    text = SAMPLE.read_text()
    for section in ("[servicegroup]", "[database]"):
        assert section in text
