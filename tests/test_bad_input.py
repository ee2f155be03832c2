"""Bad input: typed errors from the library, secrets masked everywhere.

Each test pins one promise of docs/operations.md ("Bad input is refused",
"Passwords and tokens"): a typed exception from :mod:`servicegroup.errors`,
never a raw ValueError or OverflowError, and no password or token in any
message or ``repr``.
"""

from __future__ import annotations

import math

import pytest

from servicegroup import backend, conf, errors, names, urls
from servicegroup.api import ServiceGroup
from servicegroup.records import Records

# -- redaction ---------------------------------------------------------------

SPECIAL_PASSWORDS = [
    ("postgresql://u:s3#cret@127.0.0.1:1/x", "s3#cret"),
    ("redis://:s3/cret@127.0.0.1:1", "s3/cret"),
    ("postgresql://u:s3?cret@127.0.0.1:1/x", "s3?cret"),
    ("postgresql://u@x:s3cret@127.0.0.1:1/x", "s3cret"),
    ("postgresql://u:p@ss@127.0.0.1:1/x", "p@ss"),
    ("mysql://u:a b c@127.0.0.1:1/x?charset=utf8", "a b c"),
    ("redis://u:hunter2@127.0.0.1:port", "hunter2"),
    ("redis://[::1", None),
]


@pytest.mark.parametrize("url,password", SPECIAL_PASSWORDS, ids=repr)
def test_redact_masks_the_whole_password_whatever_it_contains(url, password):
    masked = urls.redact(url)
    if password is None:
        assert masked == url  # nothing to mask, and no exception on garbage
        return
    scheme, _, rest = url.partition("://")
    user = rest[: rest.rindex("@")].partition(":")[0]
    host = rest[rest.rindex("@") + 1 :]
    assert masked == f"{scheme}://{user}:***@{host}"


def test_redact_keeps_the_user_name_and_host_visible():
    assert urls.redact("postgresql://u@x:s3cret@127.0.0.1:1/x") == "postgresql://u@x:***@127.0.0.1:1/x"
    assert urls.redact("redis://:s3/cret@127.0.0.1:1") == "redis://:***@127.0.0.1:1"


@pytest.mark.parametrize(
    "option",
    [
        "password",
        "sentinel_password",
        "keyfile_password",
        "ssl_key_password",
        "token",
        "acl_token",
        "secret",
        "client_secret",
        "auth_data",
        "sentinel_username_token",
    ],
)
def test_redact_masks_every_secret_query_option(option):
    masked = urls.redact(f"redis://127.0.0.1:6379?db=0&{option}=topsecret&timeout=3")
    assert "topsecret" not in masked
    assert f"{option}=***" in masked and "db=0" in masked and "timeout=3" in masked


def test_redact_leaves_ordinary_options_and_sqlite_paths_alone():
    for url in (
        "sqlite:////var/lib/a@b.sqlite",
        "sqlite:///x.db?timeout=3",
        "memcached://127.0.0.1:11211?timeout=3&ssl_keyfile=/etc/k.pem",
    ):
        assert urls.redact(url) == url


def test_redact_masks_urls_quoted_in_a_message_but_not_the_rest():
    text = "cannot reach redis://u:pw@h:1: refused (mail admin@example.com)"
    assert urls.redact(text) == "cannot reach redis://u:***@h:1: refused (mail admin@example.com)"


def test_redact_masks_a_password_a_client_quotes_without_its_url():
    url = "postgresql://u:s3#cret@h/x?sentinel_password=sp-99"
    assert urls.redact("auth failed: 's3#cret' and sp-99", url=url) == "auth failed: '***' and ***"


def test_start_masks_a_password_the_client_library_quotes():
    def leaky(url, member_id):
        raise RuntimeError("AUTH s3cr3t-pw rejected")

    with pytest.raises(errors.BackendUnavailable) as info:
        backend.start(leaky, "redis://:s3cr3t-pw@127.0.0.1:1", "m")
    assert "s3cr3t-pw" not in str(info.value)


@pytest.mark.parametrize("password", ["s3#cret", "s3/cret", "s3?cret", "s3 cret"])
def test_records_repr_and_url_redacted_hide_passwords_with_special_characters(password):
    for url in (f"postgresql://u:{password}@127.0.0.1:1/x", f"mysql://u@x:{password}@127.0.0.1:1/x"):
        recs = Records(url, migrate=False)
        try:
            assert password not in repr(recs) and password not in recs.url_redacted
            assert ":***@127.0.0.1:1/x" in recs.url_redacted
        finally:
            recs.dispose()


def test_an_unencoded_at_in_a_records_password_is_invalid_url_without_the_password():
    with pytest.raises(errors.InvalidURL, match="%40") as info:
        Records("postgresql://u:p@ss@127.0.0.1:1/x", migrate=False)
    assert "p@ss" not in str(info.value) and "ss@" not in str(info.value)


def test_servicegroup_and_settings_repr_hide_passwords_and_tokens(tmp_path):
    sg = ServiceGroup(
        driver="redis",
        url="redis://:s3%2Fcret@127.0.0.1:1?sentinel_password=sp-99",
        records_url=f"sqlite:///{tmp_path / 'r.sqlite'}",
        background=False,
    )
    try:
        for shown in (repr(sg), repr(sg.settings)):
            assert "s3%2Fcret" not in shown and "sp-99" not in shown
    finally:
        sg.stop()


def test_settings_repr_redacts_url_and_records_url():
    s = conf.Settings(driver="redis://:tok-1@h:1", url=None, records_url="mysql://u:s3#cret@h/x")
    shown = repr(s)
    assert "tok-1" not in shown and "s3#cret" not in shown
    assert "url=None" in shown and "mysql://u:***@h/x" in shown and "report_interval=10.0" in shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3/cret@127.0.0.1:1",
        "redis://u:s3#cret@127.0.0.1:1",
        "redis://u:s3?cret@127.0.0.1:1",
        "redis://u:123/x@127.0.0.1:1",
    ],
)
def test_unencoded_special_characters_in_a_backend_password_are_invalid_url_without_the_password(url):
    with pytest.raises(errors.InvalidURL, match="percent-encoded") as info:
        ServiceGroup(driver=url, records_url="sqlite://", background=False)
    password = url.split("@")[0].split(":")[-1]
    assert password not in str(info.value)


# -- timings -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["report_interval", "service_down_time", "max_staleness"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 0.001, 0, -1, 1e12, "1", True])
def test_timings_must_be_finite_seconds_within_bounds(name, value):
    good = {"report_interval": 1.0, "service_down_time": 3.0, "max_staleness": 0.5}
    with pytest.raises(errors.ConfigError, match=name):
        conf.Settings(**{**good, name: value})


def test_the_oslo_minimum_applies_to_library_values_too():
    conf.Settings(report_interval=0.01, service_down_time=0.03, max_staleness=0.01)
    with pytest.raises(errors.ConfigError, match="0.01"):
        conf.Settings(report_interval=0.009, service_down_time=1, max_staleness=0.5)


def test_servicegroup_refuses_nan_before_resolving_or_writing(tmp_path):
    with pytest.raises(errors.ConfigError, match="finite"):
        ServiceGroup(records_url=f"sqlite:///{tmp_path / 'r.sqlite'}", report_interval=math.nan)
    assert not (tmp_path / "r.sqlite").exists()


# -- config files ------------------------------------------------------------


@pytest.mark.parametrize(
    "body,needle",
    [
        ("[servicegroup]\nreport_interval = abc\n", "report_interval"),
        ("[servicegroup]\nreport_interval = 0\n", "report_interval"),
        ("[servicegroup]\nreport_interval = nan\n", "report_interval"),
        ("[servicegroup]\nservice_down_time = inf\n", "service_down_time"),
        ("[servicegroup]\nmax_staleness = -1\n", "max_staleness"),
        (b"[servicegroup]\nreport_interval = \xff\xfe\n", "not UTF-8"),
        ("no section here\n", "Failed to parse"),
    ],
    ids=["abc", "zero", "nan", "inf", "negative", "latin-1", "not-ini"],
)
def test_config_file_errors_are_config_errors_naming_the_file(tmp_path, body, needle):
    path = tmp_path / "sg.conf"
    (path.write_bytes if isinstance(body, bytes) else path.write_text)(body)
    with pytest.raises(errors.ConfigError) as info:
        conf.Settings.from_file(str(path))
    assert str(path) in str(info.value) and needle in str(info.value)


def test_a_directory_or_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(errors.ConfigError, match="is a directory"):
        conf.Settings.from_file(str(tmp_path))
    with pytest.raises(errors.ConfigError, match="missing.conf"):
        conf.Settings.from_file(str(tmp_path / "missing.conf"))


def test_from_config_names_the_option_whose_value_is_bad(tmp_path):
    from oslo_config import cfg

    path = tmp_path / "sg.conf"
    path.write_text("[servicegroup]\nservice_down_time = soon\n")
    c = cfg.ConfigOpts()
    conf.register_opts(c)
    c(args=[], default_config_files=[str(path)])
    with pytest.raises(errors.ConfigError, match=r"\[servicegroup\] service_down_time: .*'soon'"):
        conf.Settings.from_config(c)


# -- names -------------------------------------------------------------------


@pytest.mark.parametrize("value", [" h", "h ", " h ", "h\u00a0", "\u2003h"])
@pytest.mark.parametrize("what", ["host", "topic"])
def test_host_and_topic_with_edge_whitespace_are_invalid_names(what, value):
    with pytest.raises(errors.InvalidName, match="whitespace"):
        names.check(value, what)


def test_inner_spaces_and_other_fields_keep_their_whitespace():
    assert names.check("rack 1 host", "host") == "rack 1 host"
    assert names.check("maintenance ", "disabled reason") == "maintenance "


def test_join_of_a_padded_host_writes_nothing(make_sg):
    sg = make_sg()
    with pytest.raises(errors.InvalidName):
        sg.join(" compute-1 ", "compute")
    assert sg.records.list() == []


# -- driver construction -----------------------------------------------------


def test_a_value_error_building_the_driver_is_invalid_url_naming_the_option():
    def strict(url, member_id):
        int("abc")  # what tooz does with ?lock_timeout=abc

    with pytest.raises(errors.InvalidURL, match="option lock_timeout") as info:
        backend.start(strict, "redis://:pw-77@127.0.0.1:6379?lock_timeout=abc", "m")
    assert "pw-77" not in str(info.value)
