"""``python -m deploy [--check]``: write the generated files, or fail (exit 1) when one is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy import dashboard, promrule

MONITORING = promrule.DEPLOY / "components" / "monitoring"
GENERATED: dict[Path, object] = {
    MONITORING / "infergate-dashboard.json": dashboard.render,
    MONITORING / "prometheusrule.yaml": promrule.render,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if a generated file differs from its source")
    args = p.parse_args(argv)
    stale = []
    for path, make in GENERATED.items():
        text = make()
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.relative_to(promrule.DEPLOY.parent))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(promrule.DEPLOY.parent)}")
    if stale:
        print("stale generated files (run `python -m deploy`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
