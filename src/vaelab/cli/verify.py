"""``vaelab verify RUN``: is every file of a run as it was written?"""

from __future__ import annotations

import argparse


def cmd_verify(args: argparse.Namespace) -> int:
    from vaelab.verify import DAMAGED, INTACT, MISSING, UNVERIFIED, resume_advice, verify_run

    checks = verify_run(args.run)
    for check in checks:
        print(check.line())
    counts = {s: sum(c.status == s for c in checks) for s in (DAMAGED, MISSING, UNVERIFIED)}
    if not any(counts.values()):
        print(f"{args.run}: all {len(checks)} files intact")
        return 0
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(f"{args.run}: {summary}, {len(checks) - sum(counts.values())} {INTACT}")
    last = next(c for c in checks if c.name == "checkpoints/last.pt")
    if last.status in (DAMAGED, MISSING):
        print(f"to continue: {resume_advice(args.run)}")
    return 2


def register(command) -> None:
    p = command(
        "verify",
        cmd_verify,
        "check every file of a run against the SHA-256 recorded when it was written: "
        "intact, damaged, missing, or no checksum (an older run); exit 0 only if all intact",
    )
    p.add_argument("run", metavar="RUN", help="a run directory written by vaelab train")
