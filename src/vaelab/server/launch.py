"""Start the explorer: check the address, bind the socket, run uvicorn until Ctrl+C.

Loopback only unless asked: a host that is not 127.0.0.1 / ::1 / localhost needs
``allow_remote=True`` and prints a warning, because the API has no authentication.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path

from vaelab.errors import VaelabError

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> bool:
    """Whether ``host`` is loopback; a remote host needs ``allow_remote`` and is warned of."""
    if is_loopback(host):
        return True
    if not allow_remote:
        raise VaelabError(
            f"--host {host} is not a loopback address: anyone who can reach this machine "
            "could use the server; add --allow-remote if that is what you want"
        )
    sys.stderr.write(
        f"vaelab: warning: serving on {host}, reachable from other machines; "
        "the explorer has no authentication\n"
    )
    return False


def check_serve_extra() -> None:
    """One clear line when FastAPI or uvicorn is missing."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise VaelabError(
            f"vaelab serve needs {' and '.join(missing)}: pip install 'vaelab[serve]'"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise VaelabError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = "pick another with --port" if exc.errno == 98 else "check --host and --port"
        raise VaelabError(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def serve(
    run_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 8000,
    open_browser: bool = False,
    allow_remote: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    """Serve the explorer for ``run_dir`` until interrupted."""
    check_serve_extra()
    if not (0 <= port <= 65535):
        raise VaelabError(f"--port must be between 0 and 65535, got {port}")
    loopback = check_host(host, allow_remote)
    import uvicorn

    from vaelab.run import load_run
    from vaelab.server.app import create_app

    run = load_run(run_dir)
    sock = bind(host, port)
    try:
        trusted = sorted({*LOOPBACK_NAMES, host}) if loopback else None
        app = create_app(run, trusted_hosts=trusted)
        url = url_of(sock, host)
        log(
            f"vaelab explorer for {run.path} ({run.config.model}, d={run.config.latent_dim}, "
            f"epoch {run.epoch}) at {url}  (Ctrl+C stops)"
        )
        sys.stdout.flush()
        if open_browser:
            threading.Timer(0.5, webbrowser.open, [url]).start()
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
