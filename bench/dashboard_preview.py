"""A preview of the Grafana dashboard from a real run, where Grafana itself cannot run:
the compose services (with the demo profile's shoppers) as processes on the embedded
broker, a real Prometheus scraping them with the compose stack's job names, and every
panel of deploy/grafana/dashboards/recq.json drawn from Prometheus' answers to the
panel's own PromQL (query_range), as one PNG.

    .venv/bin/python bench/dashboard_preview.py --minutes 6 --out docs/dashboard-preview.png

Needs a `prometheus` binary on PATH (Debian: `apt-get install prometheus`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recq.embedded_kafka import EmbeddedKafka, free_port
from recq.processes import StageProcess
from schemas.settings import StageSettings
from tests.deploy.compose_spec import DEPLOY, Stack, local_env

SERVICES = ("worker", "learner", "serve", "shoppers")
RECQ = str(Path(sys.executable).with_name("recq"))


def prometheus_config(ports: dict[str, int]) -> str:
    jobs = "\n".join(
        f"  - job_name: {name}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']"
        for name, port in ports.items()
    )
    return f"global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nscrape_configs:\n{jobs}\n"


def query_range(url: str, expr: str, start: float, end: float) -> list[dict[str, object]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 10})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as r:
        answer = json.loads(r.read())
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def render(url: str, start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "recq.json").read_text())
    panels = dashboard["panels"]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.0 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for target in panel["targets"]:
            for series in query_range(url, target["expr"], start, end):
                points = series["values"]  # type: ignore[index]
                xs = [(float(t) - start) / 60 for t, _ in points]  # type: ignore[misc]
                ys = [float(v) for _, v in points]  # type: ignore[misc]
                ax.plot(xs, ys, label=legend(target["legendFormat"], series["metric"]))  # type: ignore[arg-type]
        ax.set_title(panel["title"], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("minutes", fontsize=7)
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        ax.set_ylabel({"reqps": "per second", "ms": "ms"}.get(unit, ""), fontsize=7)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("recq dashboard (preview: Prometheus answering the dashboard's queries)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=Path("reports/dashboard-preview.png"))
    args = parser.parse_args()
    binary = shutil.which("prometheus")
    if binary is None:
        sys.exit("needs a prometheus binary on PATH (Debian: apt-get install prometheus)")
    stack = Stack.load()
    with tempfile.TemporaryDirectory(prefix="recq-preview-") as tmp:
        root = Path(tmp)
        kafka = EmbeddedKafka(root / "kafka", cache_dir=StageSettings().cache_dir)
        bootstrap = kafka.start().bootstrap_servers
        unique = uuid.uuid4().hex[:8]
        ports = {name: free_port() for name in SERVICES}

        def env(name: str) -> dict[str, str]:
            return local_env(stack, name, bootstrap=bootstrap, unique=unique, root=root,
                             metrics_port=ports.get(name, 0))  # fmt: skip

        (root / "prometheus.yml").write_text(prometheus_config(ports))
        prom_port = free_port()
        processes = []
        try:
            subprocess.run([RECQ, *stack.services["topics"]["command"]], env=env("topics"),
                           check=True, capture_output=True)  # fmt: skip
            prom = StageProcess({}, root / "prometheus.log", [
                binary, f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ]).start()  # fmt: skip
            processes.append(prom)
            for name in SERVICES:
                command = [RECQ, *stack.services[name]["command"]]
                processes.append(StageProcess(env(name), root / f"{name}.log", command).start())
            start = time.time()
            with Progress() as progress:
                task = progress.add_task("stack running", total=args.minutes * 60)
                while time.time() - start < args.minutes * 60:
                    time.sleep(1)
                    progress.update(task, completed=time.time() - start)
            end = time.time()
            render(f"http://127.0.0.1:{prom_port}", start, end, args.out)
            print(f"wrote {args.out}")
        finally:
            for process in reversed(processes):
                process.stop(timeout_s=60)
            kafka.stop()


if __name__ == "__main__":
    main()
