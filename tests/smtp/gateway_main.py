"""Run one gateway MTA in its own process (crash tests, benchmarks).

    python tests/smtp/gateway_main.py OPERATOR_JSON LISTE_XML [HOST:PORT]

Builds Services from the operator's config (tables created if missing), starts the MTA (and the
submission listeners when SUBMISSION=1 in the environment), prints "READY <mta port> <sub port>" and
serves until killed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mssante.app import Services  # noqa: E402
from mssante.config import config_from_dict  # noqa: E402
from mssante.observability.audit import Audit  # noqa: E402
from mssante.observability.metrics import Metrics  # noqa: E402
from mssante.smtp.server import start_mta, start_submission  # noqa: E402
from mssante.store.base import Base  # noqa: E402
from mssante.store.db import make_engine, make_sessions  # noqa: E402
from mssante.trust.listeblanche import parse_liste_blanche  # noqa: E402
from mssante.trust.state import TrustState  # noqa: E402
from pki.validation import Validator  # noqa: E402

import mssante.store.models  # noqa: E402,F401
import mssante.store.queue  # noqa: E402,F401


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def main() -> None:
    cfg = config_from_dict(json.loads(Path(sys.argv[1]).read_text()))
    address = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1:0"
    engine = make_engine(cfg.db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    sessions = make_sessions(engine)
    trust = TrustState(local_domains=sorted(cfg.all_local_domains))
    trust.install(parse_liste_blanche(Path(sys.argv[2]).read_bytes()), utcnow())
    t = cfg.tls
    services = Services(config=cfg, engine=engine, sessions=sessions, audit=Audit(sessions, utcnow), metrics=Metrics(),
                        validator=Validator.from_files(t.anchors, t.intermediates, t.crls), trust=trust)
    mta = await start_mta(services, address)
    sub_port = 0
    if os.environ.get("SUBMISSION") == "1":
        host = address.rpartition(":")[0]
        sub = await start_submission(services, submission=f"{host}:0", submissions="")
        sub_port = sub.addresses["submission"][1]
    print(f"READY {mta.port} {sub_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await mta.stop()


if __name__ == "__main__":
    asyncio.run(main())
