#!/usr/bin/env python3
"""Write synthetic Annuaire Santé extractions in the exact real formats (SPECS.md §5).

    python scripts/gen_annuaire.py --out /tmp/ann --mss 600000 --pa 2000000 --zip --next-day

Files: Extraction_Correspondance_MSSante_<ts>.txt (31 columns), PS_LibreAcces_Personne_activite_<ts>.txt
(56 columns; ``--layout split`` writes the newer layout + PS_LibreAcces_SavoirFaire_<ts>.txt), and with
``--own N`` an operator-side Operateur_BAL_<ts>.txt (public columns + Liste rouge). ``--next-day`` also
writes the following day's files (about 1 % of rows changed, removed or added) into OUT/next/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annuaire.synthetic import Spec, generate  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mss", type=int, default=10_000, help="rows of the MSSanté extraction")
    p.add_argument("--pa", type=int, default=30_000, help="rows of Personne_activite")
    p.add_argument("--own", type=int, default=0, help="rows of the operator-side file (10 %% liste rouge)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--layout", choices=["56", "split"], default="56")
    p.add_argument("--zip", action="store_true", help="also write .zip archives")
    p.add_argument("--next-day", action="store_true", help="also write the next day's files in OUT/next")
    p.add_argument("--ts", default="202611230300", help="AAAAMMJJhhmm in the file names")
    a = p.parse_args()
    t0 = time.perf_counter()
    spec = Spec(mss_rows=a.mss, pa_rows=a.pa, own_rows=a.own, seed=a.seed, layout=a.layout, ts=a.ts)
    files = generate(a.out, spec, make_zip=a.zip)
    if a.next_day:
        nxt = Spec(mss_rows=a.mss, pa_rows=a.pa, own_rows=a.own, seed=a.seed, layout=a.layout, day=1,
                   ts=str(int(a.ts) + 10000))
        files.update({f"next_{k}": v for k, v in generate(a.out / "next", nxt, make_zip=a.zip).items()})
    for k, v in files.items():
        print(f"{k}\t{v}\t{v.stat().st_size / 1e6:.1f} MB")
    print(f"generated in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
