"""The physical limit of a proxy on this machine: nginx (Debian's, one worker, keep-alive upstream,
no buffering) and tokenmeter (one worker, SQLite ledger, journal on) in front of the same mock.

    python bench/nginx_baseline.py [--quick]

Uses bench/run.py's mock, server start-up, load generator and CPU sampler, interleaving the two
targets per cell. Prints, per mode and concurrency, requests/s and CPU per request of each and
tokenmeter's share of nginx's throughput. Needs `nginx` on PATH (Debian: nginx-light).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness

NGINX_CONF = """daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fastcgi;
  uwsgi_temp_path {work}/nginx-uwsgi;
  scgi_temp_path {work}/nginx-scgi;
  upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def start_nginx(work: Path, mock: str, out: Path) -> harness.Target:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = harness.free_port()
    mock_port = int(mock.rsplit(":", 1)[1])
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, port=port, mock_port=mock_port))
    target = harness.Target("nginx", f"http://127.0.0.1:{port}/v1")
    harness.start_server(target, [nginx, "-c", str(conf), "-p", str(work)], out, timeout=30)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s windows, 1 s warm-up")
    parser.add_argument("--conc", default="1 64")
    args = parser.parse_args()
    args.duration, args.warmup = (3.0, 1.0) if args.quick else (10.0, 2.0)
    work = Path(tempfile.mkdtemp(prefix="tokenmeter-nginx-"))
    sampler = harness.Sampler()
    rows = []
    try:
        mock = harness.start_mock(work).url.removesuffix("/v1")
        targets = [start_nginx(work, mock, work), harness.start_tokenmeter(1, work, mock, work)]
        for t in targets:
            assert t.proc is not None
            sampler.watch(t.label, t.proc.pid)
        sampler.start()
        for mode in harness.MODES:
            for conc in (int(c) for c in args.conc.split()):
                runs = [harness.measure(t, "mock-gpt", mode, conc, args, sampler) for t in targets]
                rows.append((mode, conc, *runs))
    finally:
        sampler.done.set()
        for proc in reversed(harness.STARTED):
            harness.stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    print("| mode | c | nginx rps | nginx CPU ms/req | tokenmeter rps | tokenmeter CPU ms/req "
          "| tokenmeter / nginx rps |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for mode, conc, ngx, tm in rows:
        print(
            f"| {mode} | {conc} | {ngx['rps']:,.0f} | {ngx.get('cpu_ms_per_request')} "
            f"| {tm['rps']:,.0f} | {tm.get('cpu_ms_per_request')} "
            f"| {tm['rps'] / ngx['rps']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
