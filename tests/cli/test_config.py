from __future__ import annotations

from pathlib import Path

import pytest

from mssante.config import ConfigError, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"smtp": {"max_message_size": "big"}}, "config error: smtp.max_message_size = 'big': expected an integer"),
        ({"smtp": {"max_recipients": -1}}, "smtp.max_recipients = -1: expected a non-negative integer"),
        ({"smtp": {"unknown": 1}}, "config error: smtp.unknown is not a known key"),
        ({"listeners": {"mta": "127.0.0.1"}}, "listeners.mta = '127.0.0.1': expected host:port"),
        ({"listeners": {"http": "h:70000"}}, "listeners.http = 'h:70000': expected host:port"),
        ({"tls": {"crls": "one.pem"}}, "tls.crls = 'one.pem': expected a list of strings"),
        ({"relay": {"retry_schedule": [60, "x"]}}, "relay.retry_schedule[1] = 'x': expected an integer"),
        ({"logging": {"json": "yes"}}, "logging.json = 'yes': expected true or false"),
        ({"mllp": {"environment": "prod"}}, "mllp.environment = 'prod': expected 'test' or 'production'"),
        ({"trust": {"max_shrink_ratio": 2}}, "trust.max_shrink_ratio = 2.0: expected a number between 0 and 1"),
        ({"operator": {"domain": "nodot"}}, "operator.domain = 'nodot': expected a mail domain"),
        ({"smtp": 3}, "smtp = 3: expected a table [smtp]"),
    ],
)
def test_bad_values_name_key_value_and_expectation(data, message):
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_toml_is_one_line(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[smtp\nmax = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


@pytest.mark.parametrize("name", ["mssante.example.toml", "production.example.toml"])
def test_example_configs_load(name):
    cfg = load_config(REPO / "config" / name)
    assert cfg.smtp.max_message_size == 25 * 1024 * 1024
    if name.startswith("production"):
        assert cfg.listeners.mta.endswith(":25")
        assert cfg.listeners.submission.endswith(":587") and cfg.listeners.submissions.endswith(":465")
        assert cfg.listeners.imap.endswith(":143") and cfg.listeners.imaps.endswith(":993")


def test_example_documents_every_key():
    """Every key of the schema appears in config/mssante.example.toml (commented or set)."""
    import dataclasses

    from mssante.config import Config

    text = (REPO / "config" / "mssante.example.toml").read_text()
    missing = []
    for section in dataclasses.fields(Config):
        if not dataclasses.is_dataclass(section.type) and section.name != "data_dir":
            sub = getattr(Config(), section.name)
            if not dataclasses.is_dataclass(sub):
                continue
        sub = getattr(Config(), section.name)
        if dataclasses.is_dataclass(sub):
            if f"[{section.name}]" not in text:
                missing.append(f"[{section.name}]")
            for f in dataclasses.fields(sub):
                if f"{f.name} =" not in text:
                    missing.append(f"{section.name}.{f.name}")
        elif f"{section.name} =" not in text:
            missing.append(section.name)
    assert missing == []


def test_defaults_are_dev_loopback():
    cfg = config_from_dict({})
    assert cfg.listeners.mta == "127.0.0.1:2525"
    assert cfg.db_url.startswith("sqlite+aiosqlite:///")
    assert cfg.audit.retention_days >= 180
