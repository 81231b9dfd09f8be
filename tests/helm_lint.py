"""Runs real `helm lint` (Helm v4's Go library, from the helm-sdkpy package
in the venv scripts/test.sh makes) on a chart with sets of values.

    python helm_lint.py CHART_DIR [-f values.yaml]...

helm-sdkpy's Lint takes no values, so the chart is copied to a temporary
directory with the values merged into its values.yaml, as `helm lint -f`
merges them. Prints each message as `SEVERITY PATH`, and exits 1 if any is
a warning or an error (`helm lint --strict`). helm-sdkpy does not pass the
messages' text on, so a failure names the file; Helm's own log (on stderr)
says what was missing, e.g. `missing required values message="..."`.
"""

import argparse
import asyncio
import os
import shutil
import sys
import tempfile

import yaml

import helm_sdkpy
from render_chart import merge

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("chart")
    parser.add_argument("-f", "--values", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        chart = os.path.join(tmp, os.path.basename(os.path.normpath(args.chart)))
        shutil.copytree(args.chart, chart)
        with open(os.path.join(chart, "values.yaml")) as f:
            values = yaml.safe_load(f) or {}
        for path in args.values:
            with open(path) as f:
                values = merge(values, yaml.safe_load(f) or {})
        with open(os.path.join(chart, "values.yaml"), "w") as f:
            yaml.safe_dump(values, f)
        config = helm_sdkpy.Configuration(namespace="damselfly-system")
        result = asyncio.run(helm_sdkpy.Lint(config).run(chart))
    worst = 0
    for message in result.get("Messages") or []:
        severity = message.get("Severity", 0)
        worst = max(worst, severity)
        print(f"{SEVERITY.get(severity, severity)} {message.get('Path')}")
    print(f"{helm_sdkpy.get_version()}: {result.get('TotalChartsLinted')} chart(s) linted")
    sys.exit(1 if worst >= 2 else 0)


if __name__ == "__main__":
    main()
