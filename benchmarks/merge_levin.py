"""Merge the JSON files of several ``levin.py`` runs over disjoint image subsets into one.

On a 2-core CPU two single-thread runs (e.g. ``--images "im[12]_kernel*"`` and
``--images "im[34]_kernel*"``) use the machine fully; this joins them into the full-set
table with the same scoring and layout::

    python benchmarks/merge_levin.py results/levin_fast.json --markdown results/levin_fast.md \
        results/levin_fast_a.json results/levin_fast_b.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import write_json, write_text
from levin import markdown, summarise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("parts", type=Path, nargs="+")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    parts = [json.loads(p.read_text()) for p in args.parts]
    runs = {json.dumps({k: v for k, v in p["run"].items() if k != "images"}, sort_keys=True) for p in parts}
    if len(runs) != 1:
        raise SystemExit("the parts were not run with the same method, preset, seed and reference")
    images = sorted((record for p in parts for record in p["images"]), key=lambda r: r["name"])
    names = [r["name"] for r in images]
    if len(set(names)) != len(names):
        raise SystemExit("the parts overlap: an image appears twice")
    merged = {
        **parts[0],
        "run": {**parts[0]["run"], "images": " + ".join(p["run"]["images"] for p in parts)},
        "machine": {**parts[0]["machine"], "concurrent_runs": len(parts)},
        "images": images,
        "summary": summarise(images),
    }
    write_json(args.out, merged)
    if args.markdown is not None:
        write_text(args.markdown, markdown(merged))


if __name__ == "__main__":
    main()
