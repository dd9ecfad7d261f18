"""Print a world: ``python -m auditgen.world [--seed S] [--hosts N] [--people N] [--file F] [--yaml]``.

The same world the service builds (AUDITGEN_WORLD, on by default) from the same settings (AUDITGEN_SEED,
AUDITGEN_WORLD_HOSTS, AUDITGEN_WORLD_PEOPLE, AUDITGEN_WORLD_FILE), in the world file format: edit it and
load it back with AUDITGEN_WORLD_FILE.
"""

from __future__ import annotations

import argparse
import sys

import orjson
import yaml

from auditgen.world.build import DEFAULT_HOSTS, DEFAULT_PEOPLE, build
from auditgen.world.files import WorldError, load, to_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auditgen.world", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", default=None, help="AUDITGEN_SEED (unset: a world of seed None)")
    parser.add_argument("--hosts", type=int, default=DEFAULT_HOSTS, help="AUDITGEN_WORLD_HOSTS")
    parser.add_argument("--people", type=int, default=DEFAULT_PEOPLE, help="AUDITGEN_WORLD_PEOPLE")
    parser.add_argument("--file", default=None, help="AUDITGEN_WORLD_FILE: check and print this file")
    parser.add_argument("--yaml", action="store_true", help="YAML instead of JSON")
    args = parser.parse_args(argv)
    try:
        world = load(args.file) if args.file else build(args.seed, args.hosts, args.people)
    except (WorldError, ValueError) as e:
        print(f"world: {e}", file=sys.stderr)
        return 2
    data = to_data(world)
    if args.yaml:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, width=110))
    else:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
