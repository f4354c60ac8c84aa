"""``manage.py deploy_config``: the deployment's files (nginx site, systemd units, environment
file) rendered from deploy/templates/ for one host.

One source for what docs/deploy.md explains, what the topology tests run and what an operator
installs: the examples shipped in deploy/ are this command's output with its defaults (a unit
test keeps them up to date), and tests/support/topology.py renders the same templates for
127.0.0.1 and runs them.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.template import Context, Engine

TEMPLATES = Path(settings.BASE_DIR) / "deploy" / "templates"

#: output file (relative to --out) -> (template, extra context)
FILES = {
    "nginx/rtcsite.conf": ("nginx-site.conf", {}),
    "systemd/rtcsite-web@.service": ("daphne.service", {"kind": "web"}),
    "systemd/rtcsite-media@.service": ("daphne.service", {"kind": "media"}),
    "systemd/rtcsite-maintain.service": ("maintain.service", {}),
    "systemd/rtcsite-maintain.timer": ("maintain.timer", {}),
    "rtcsite.env.example": ("rtcsite.env", {}),
}


def render(context: dict) -> dict[str, str]:
    """Every file of ``FILES``, rendered with ``context`` (see ``Command.context``)."""
    engine = Engine(dirs=[str(TEMPLATES)], autoescape=False)
    return {
        name: engine.get_template(template).render(Context({**context, **extra}))
        for name, (template, extra) in FILES.items()
    }


class Command(BaseCommand):
    help = (
        "Write the deployment's files for one host into --out: nginx/rtcsite.conf, systemd "
        "units for N web and M media Daphne processes and the maintenance timer, and "
        "rtcsite.env.example. With no options: the examples shipped in deploy/. "
        "See docs/deploy.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, required=True, help="Folder to write into.")
        parser.add_argument("--server-name", default="rtc.example.org", help="nginx server_name.")
        parser.add_argument(
            "--root", default="/srv/rtcsite", help="The checkout: WorkingDirectory of the units."
        )
        parser.add_argument(
            "--data-dir",
            help="Holds staticfiles/, media/ and recordings/ (default: --root).",
        )
        parser.add_argument("--venv", help="The virtualenv (default: <root>/.venv).")
        parser.add_argument(
            "--run-dir",
            default="/run/rtcsite",
            help="Where the Daphne processes' Unix sockets are (a systemd RuntimeDirectory).",
        )
        parser.add_argument("--env-file", default="/etc/rtcsite/rtcsite.env")
        parser.add_argument("--user", default="rtcsite", help="User and group of the processes.")
        parser.add_argument("--web", type=int, default=2, help="Web processes (one per core).")
        parser.add_argument("--media", type=int, default=1, help="Media processes.")
        parser.add_argument("--recordings-prefix", default="/_recordings/")
        parser.add_argument("--client-max-body-size", default="8m")
        parser.add_argument(
            "--monitor",
            default="127.0.0.1:9180",
            metavar="ADDRESS:PORT",
            help="Where nginx answers /metrics, /healthz and /readyz for Prometheus and the "
            "load balancer (never the public server).",
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--tls",
            nargs=2,
            metavar=("CERT", "KEY"),
            help="HTTPS on 443 with this certificate chain and key, http:// redirected "
            "(default: Let's Encrypt's paths for --server-name).",
        )
        mode.add_argument(
            "--http",
            metavar="ADDRESS:PORT",
            help="Plain HTTP on this address instead of HTTPS (a test host, or TLS ended "
            "elsewhere).",
        )

    def handle(self, *args, **options):
        context = self.context(options)
        out: Path = options["out"]
        for name, text in render(context).items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            self.stdout.write(str(path))

    @staticmethod
    def context(options: dict) -> dict:
        if options["web"] < 1 or options["media"] < 1:
            raise CommandError("--web and --media need at least one process each.")
        prefix = options["recordings_prefix"]
        if not (prefix.startswith("/") and prefix.endswith("/")):
            raise CommandError("--recordings-prefix must start and end with '/'.")
        root = options["root"].rstrip("/")
        data = (options["data_dir"] or root).rstrip("/")
        run_dir = options["run_dir"].rstrip("/")
        name = options["server_name"]
        tls = not options["http"]
        cert, key = options["tls"] or (
            f"/etc/letsencrypt/live/{name}/fullchain.pem",
            f"/etc/letsencrypt/live/{name}/privkey.pem",
        )
        return {
            "server_name": name,
            "origin": f"https://{name}" if tls else f"http://{options['http']}",
            "tls": tls,
            "tls_cert": cert,
            "tls_key": key,
            "listen": options["http"],
            "root": root,
            "venv": (options["venv"] or f"{root}/.venv").rstrip("/"),
            "static_root": f"{data}/staticfiles",
            "media_root": f"{data}/media",
            "recordings_root": f"{data}/recordings",
            "recordings_prefix": prefix,
            "run_dir": run_dir,
            "run_dir_name": run_dir.removeprefix("/run/"),
            "env_file": options["env_file"],
            "user": options["user"],
            "web_sockets": [f"{run_dir}/web-{n}.sock" for n in range(1, options["web"] + 1)],
            "media_sockets": [f"{run_dir}/media-{n}.sock" for n in range(1, options["media"] + 1)],
            "client_max_body_size": options["client_max_body_size"],
            "monitor": options["monitor"],
        }
