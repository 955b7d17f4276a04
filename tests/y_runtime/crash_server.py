"""A gateway fragment run as a subprocess by test_crash.py: MLLP intake + Y worker, killed with SIGKILL.

    python crash_server.py DB_URL TMP_DIR PORT_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from support import FakeDmp, make_services, sender_entry  # noqa: E402

from mssante.y.mllp import start_mllp  # noqa: E402
from mssante.y.worker import YWorker  # noqa: E402


async def main(db_url: str, tmp: Path, port_file: Path) -> None:
    services = await make_services(db_url, tmp, senders=[sender_entry()], create=False)
    server = await start_mllp(services, host="127.0.0.1", port=0)
    worker = YWorker(services, dmp=FakeDmp(), poll_interval=0.05)
    worker.start()
    tmp_file = port_file.with_suffix(".tmp")
    tmp_file.write_text(str(server.port))
    tmp_file.replace(port_file)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
