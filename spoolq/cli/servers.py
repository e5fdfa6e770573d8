"""Long-running servers: the node daemon, the standalone beanstalkd and STOMP front-ends."""

from __future__ import annotations

import sys

import click

from ..errors import InvalidArgument, SpoolqError
from ._common import fail, spool_options


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SPOOLQ_CONFIG",
              help="Node config file (TOML) [env: SPOOLQ_CONFIG].")
@click.option("--spool", "spool_dir", envvar="SPOOLQ_SPOOL", type=click.Path(file_okay=False),
              help="Spool directory (overrides the config) [env: SPOOLQ_SPOOL].")
@click.option("--listen", default=None, help="HOST:PORT to serve on (default 127.0.0.1:7070; port 0: any free).")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, help="Serve HTTPS with this certificate.")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None, help="... and this private key.")
@click.option("--durability", type=click.Choice(["full", "normal"]), default=None, help="Overrides the config.")
@click.option("--log-json", is_flag=True, default=None, help="Log one JSON object per line.")
@click.option("--beanstalk", default=None, metavar="HOST:PORT",
              help="Also speak the beanstalkd protocol there (loopback, or unix:PATH).")
@click.option("--check-config", is_flag=True,
              help="Only validate the config (and flags): exit 0 when good, else print what is wrong and exit 2.")
def node(config_path: str | None, spool_dir: str | None, listen: str | None, tls_cert: str | None,
         tls_key: str | None, durability: str | None, log_json: bool | None, beanstalk: str | None,
         check_config: bool) -> None:
    """Run the node daemon: forward the outbox to peers, receive their batches, serve the HTTP API.

    SIGTERM/SIGINT stop it gracefully; SIGHUP reloads peers, routes and tokens from --config.
    Under systemd (Type=notify) it reports READY=1 once it serves. The dashboard is at /ui/.
    """
    from ..node.config import load_config

    cfg = load_config(config_path, spool=spool_dir, listen=listen, tls_cert=tls_cert, tls_key=tls_key,
                      durability=durability, log_json=log_json or None, beanstalk=beanstalk)
    if check_config:
        where = cfg.source or "no config file (defaults)"
        click.echo(f"config OK: {where}: listen {cfg.listen}, spool {cfg.spool or '(default)'}, "
                   f"{len(cfg.peers)} peers, {len(cfg.routes)} routes, {len(cfg.tokens)} tokens")
        return
    from ..node.daemon import run_node

    sys.exit(run_node(cfg))


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def beanstalkd(args: tuple[str, ...]) -> None:
    """Run a standalone beanstalkd-compatible server (takes beanstalkd's flags; -h for them)."""
    from ..beanstalk.standalone import main as bs_main

    sys.exit(bs_main(list(args)))


@click.command()
@spool_options
@click.option("--listen", default="127.0.0.1:61613", show_default=True, metavar="HOST:PORT",
              help="Where to serve STOMP (loopback: no login needed).")
@click.option("--tls-cert", default=None, type=click.Path(dir_okay=False), help="TLS certificate (PEM).")
@click.option("--tls-key", default=None, type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option("--heart-beat", "heart_beat", default="10000,10000", show_default=True, metavar="SX,SY",
              help="Server heart-beat offer in ms: can send every SX, wants every SY (0: none).")
def stomp(spool_dir: str | None, durability: str, listen: str, tls_cert: str | None, tls_key: str | None,
          heart_beat: str) -> None:
    """Run a standalone STOMP 1.2 server on the spool (/queue/CHANNEL, /topic/NAME)."""
    from ..stomp.main import run

    try:
        try:
            sx, sy = (int(x) for x in heart_beat.split(","))
        except ValueError:
            raise InvalidArgument(f"--heart-beat {heart_beat!r} must be two integers: SX,SY") from None
        sys.exit(run(spool_dir, listen, durability=durability, tls_cert=tls_cert, tls_key=tls_key,
                     heartbeat=(sx, sy)))
    except SpoolqError as e:
        fail(e)
