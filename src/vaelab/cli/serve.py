"""``vaelab serve RUN``: the latent-space explorer in the browser."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    from vaelab.server.launch import serve

    serve(args.run, args.host, args.port, args.open, args.allow_remote)
    return 0


def register(command) -> None:
    p = command(
        "serve", cmd_serve, "explore a run's latent space in the browser (a local web page)"
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (the server has no authentication)",
    )
