"""A nova.conf drives servicegroup as is (docs/nova.md).

Nova's ``[DEFAULT] servicegroup_driver``, ``report_interval`` and
``service_down_time`` are oslo.config deprecated names of ours; our own
``[servicegroup]`` names win when both are set.
"""

from __future__ import annotations

import importlib.util
import logging

import pytest

from servicegroup import conf


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def write(tmp_path, text: str) -> str:
    path = tmp_path / "nova.conf"
    path.write_text(text)
    return str(path)


def test_a_nova_conf_selects_the_driver_and_timings(tmp_path):
    path = write(
        tmp_path,
        "[DEFAULT]\nservicegroup_driver = mc\nreport_interval = 4\nservice_down_time = 12\n"
        "[database]\nconnection = sqlite:////tmp/nova-records.sqlite\n",
    )
    s = conf.Settings.from_file(path)
    assert (s.driver, s.report_interval, s.service_down_time) == ("mc", 4.0, 12.0)
    assert s.records_url == "sqlite:////tmp/nova-records.sqlite"


@pytest.mark.parametrize("driver", ["db", "mc", "zk"])
def test_each_nova_driver_value_names_the_same_backend_here(tmp_path, driver):
    s = conf.Settings.from_file(write(tmp_path, f"[DEFAULT]\nservicegroup_driver = {driver}\n"))
    assert s.driver == driver


def test_our_names_win_over_novas_when_both_are_set(tmp_path):
    path = write(
        tmp_path,
        "[DEFAULT]\nservicegroup_driver = mc\nreport_interval = 4\nservice_down_time = 12\n"
        "[servicegroup]\ndriver = redis\nreport_interval = 3\nservice_down_time = 9\n",
    )
    s = conf.Settings.from_file(path)
    assert (s.driver, s.report_interval, s.service_down_time) == ("redis", 3.0, 9.0)


def test_a_nova_name_logs_the_usual_deprecation_warning(tmp_path, caplog, monkeypatch):
    # With oslo.log installed (oslo.service brings it), oslo.config reports
    # deprecations through oslo_log.versionutils, once per message per
    # process: an earlier test's read of the same name would silence this one.
    if _has("oslo_log"):
        from oslo_log import versionutils

        monkeypatch.setattr(versionutils, "_deprecated_messages_sent", {})
    path = write(tmp_path, "[DEFAULT]\nservicegroup_driver = mc\n")
    with caplog.at_level(logging.WARNING, logger="oslo_config.cfg"):
        conf.Settings.from_file(path)
    assert any("servicegroup_driver" in r.getMessage() and "deprecated" in r.getMessage() for r in caplog.records), (
        caplog.text
    )


def test_a_nova_value_out_of_range_names_the_option(tmp_path):
    path = write(tmp_path, "[DEFAULT]\nreport_interval = 4\nservice_down_time = 2\n")
    with pytest.raises(conf.errors.ConfigError, match="service_down_time"):
        conf.Settings.from_file(path)
