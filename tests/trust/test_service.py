"""`mssante.trust.service.start` with the gateway's real Config and Metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from mssante.config import config_from_dict
from mssante.observability.metrics import Metrics
from mssante.trust import service
from mssante.trust.listeblanche import build_liste_blanche_xml

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def services_for(tmp_path: Path, trust: dict[str, object]) -> SimpleNamespace:
    cfg = config_from_dict(
        {"data_dir": str(tmp_path), "operator": {"domain": "gw.mssante.fr"}, "trust": trust}
    )
    return SimpleNamespace(config=cfg, metrics=Metrics(), now=lambda: NOW, trust=None)


async def test_start_loads_the_configured_list_and_feeds_metrics(tmp_path: Path) -> None:
    (tmp_path / "lb.xml").write_bytes(
        build_liste_blanche_xml(
            [(f"d{i}.mssante.fr", "CN=mx.op.fr,OU=1,O=OP,ST=Paris (75),C=FR", "") for i in range(7)], NOW
        )
    )
    s = services_for(tmp_path, {"list_path": "lb.xml", "refresh_minutes": 60})  # relative to the data dir
    svc = await service.start(s)
    try:
        assert s.trust is svc.state and len(s.trust.policy.liste.by_domain) == 7
        assert s.trust.policy.submission("gw.mssante.fr").ok
        rendered = s.metrics.render().decode()
        assert "mssante_trust_domains 7.0" in rendered
        assert 'mssante_trust_refresh_total{outcome="installed"} 1.0' in rendered
        assert (tmp_path / "trust" / "liste-blanche.xml").exists()  # last good cached
    finally:
        await svc.stop()


async def test_no_list_configured_fails_closed(tmp_path: Path) -> None:
    s = services_for(tmp_path, {})
    svc = await service.start(s)
    assert not s.trust.loaded and not s.trust.policy.submission("x.mssante.fr").ok
    await svc.stop()
