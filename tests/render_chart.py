"""Renders a Damselfly Helm chart the way `helm template` does, for the
subset of Helm's template language the charts in charts/ restrict
themselves to (charts/README.md lists it), so their tests run where no helm
binary can be installed. Anything outside the subset is an error, never a
silent difference.

    python render_chart.py CHART_DIR [-f values.yaml]... [--name RELEASE] [--namespace NS]

Prints the rendered objects as one YAML stream, like `helm template`.
"""

import argparse
import os
import re
import sys

import yaml


class RenderError(Exception):
    pass


def merge(base, override):
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base.get(k), v) if k in base else v
        return out
    return override


TOKEN = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def tokenize(text):
    """Text and actions, with Helm's `{{-` and `-}}` whitespace trimming applied."""
    parts = []
    pos = 0
    for m in TOKEN.finditer(text):
        chunk = text[pos:m.start()]
        if m.group(1):
            chunk = chunk.rstrip(" \t\n")
        parts.append(("text", chunk))
        parts.append(("action", m.group(2), bool(m.group(3))))
        pos = m.end()
    parts.append(("text", text[pos:]))
    out = []
    trim_next = False
    for p in parts:
        if p[0] == "text":
            out.append(("text", p[1].lstrip(" \t\n") if trim_next else p[1]))
            trim_next = False
        else:
            out.append(("action", p[1]))
            trim_next = p[2]
    return out


def parse(tokens, i=0, stop=("end",)):
    """A list of nodes up to a stopping keyword; returns (nodes, index, keyword)."""
    nodes = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in stop:
            return nodes, i + 1, word
        if word == "if":
            cond = value[2:].strip()
            body, i, ended = parse(tokens, i + 1, ("end", "else"))
            other = []
            if ended == "else":
                other, i, _ = parse(tokens, i, ("end",))
            nodes.append(("if", cond, body, other))
            continue
        if word == "range":
            source = value[5:].strip()
            body, i, _ = parse(tokens, i + 1, ("end",))
            nodes.append(("range", source, body))
            continue
        if word.startswith("/*"):
            i += 1
            continue
        nodes.append(("expr", value))
        i += 1
    if "end" in stop:
        raise RenderError("an `if` or `range` has no `end`")
    return nodes, i, None


def split_args(text):
    return re.findall(r'"(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+', text)


def term(word, ctx):
    if word.startswith('"'):
        return yaml.safe_load(word)
    if re.fullmatch(r"-?\d+", word):
        return int(word)
    if word in ("true", "false"):
        return word == "true"
    if word == ".":
        return ctx
    if word.startswith("$."):
        ctx, word = ROOT[0], word[1:]
    if word.startswith("."):
        value = ctx
        for key in word[1:].split("."):
            if not isinstance(value, dict):
                raise RenderError(f"{word}: not a map")
            value = value.get(key)
        return value
    raise RenderError(f"`{word}` is outside the supported template subset")


def to_yaml(value):
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def truthy(v):
    return v not in (None, False, 0, "", [], {})


def call(fn, args):
    if fn == "quote":
        v = args[-1]
        # Go's %q, as sprig's quote uses: control characters escaped too.
        text = ("" if v is None else str(v)).replace("\\", "\\\\").replace('"', '\\"')
        return '"' + text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + '"'
    if fn == "toYaml":
        return to_yaml(args[-1])
    if fn == "nindent":
        return "\n" + "\n".join(" " * args[0] + line if line else line for line in str(args[1]).split("\n"))
    if fn == "indent":
        return "\n".join(" " * args[0] + line if line else line for line in str(args[1]).split("\n"))
    if fn == "required":
        if not truthy(args[1]):
            raise RenderError(args[0])
        return args[1]
    if fn == "not":
        return not truthy(args[0])
    if fn == "and":
        return all(truthy(a) for a in args)
    if fn == "or":
        return next((a for a in args if truthy(a)), args[-1])
    if fn == "int":
        # sprig's int: numbers and numeric strings; anything else is 0.
        try:
            return int(float(args[-1]))
        except (TypeError, ValueError):
            return 0
    if fn == "gt":
        if type(args[0]) is not type(args[1]) or not isinstance(args[0], (int, float)):
            # Go's templates refuse to compare an int with a float (values are floats: convert with int).
            raise RenderError(f"gt: incompatible types for comparison: {args[0]!r} and {args[1]!r}")
        return args[0] > args[1]
    if fn == "fail":
        raise RenderError(args[0])
    raise RenderError(f"function `{fn}` is outside the supported template subset")


FUNCTIONS = {"quote", "toYaml", "nindent", "indent", "required", "not", "and", "or", "int", "gt", "fail"}


def arguments(words, ctx):
    """The values of a function's arguments; `( fn arg… )` is a call whose result is one argument."""
    out = []
    i = 0
    while i < len(words):
        if words[i] == "(":
            depth, j = 1, i + 1
            while j < len(words) and depth:
                depth += {"(": 1, ")": -1}.get(words[j], 0)
                j += 1
            if depth:
                raise RenderError(f"unclosed `(` in `{' '.join(words)}`")
            inner = words[i + 1 : j - 1]
            if not inner or inner[0] not in FUNCTIONS:
                raise RenderError(f"`({' '.join(inner)})` is outside the supported template subset")
            out.append(call(inner[0], arguments(inner[1:], ctx)))
            i = j
        else:
            out.append(term(words[i], ctx))
            i += 1
    return out


def evaluate(expr, ctx):
    value = None
    first = True
    for command in expr.split("|"):
        words = split_args(command.strip())
        if not words:
            raise RenderError(f"empty command in `{expr}`")
        if words[0] in FUNCTIONS:
            args = arguments(words[1:], ctx)
            if not first:
                args.append(value)
            value = call(words[0], args)
        else:
            if len(words) != 1 or not first:
                raise RenderError(f"`{command.strip()}` is outside the supported template subset")
            value = term(words[0], ctx)
        first = False
    return value


# The top-level context, which `$` names inside a `range`.
ROOT = [None]


def render_nodes(nodes, ctx):
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            v = evaluate(node[1], ctx)
            out.append("" if v is None else (str(v).lower() if isinstance(v, bool) else str(v)))
        elif node[0] == "range":
            items = evaluate(node[1], ctx)
            if not isinstance(items, (list, type(None))):
                raise RenderError(f"`range {node[1]}` is over a list only, in the supported template subset")
            for item in items or []:
                out.append(render_nodes(node[2], item))
        else:
            _, cond, body, other = node
            out.append(render_nodes(body if truthy(evaluate(cond, ctx)) else other, ctx))
    return "".join(out)


def render_template(text, ctx):
    ROOT[0] = ctx
    nodes, _, _ = parse(tokenize(text), 0, ())
    return render_nodes(nodes, ctx)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("chart")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--name", default="release-name")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args()
    with open(os.path.join(args.chart, "Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    with open(os.path.join(args.chart, "values.yaml")) as f:
        values = yaml.safe_load(f) or {}
    for path in args.values:
        with open(path) as f:
            values = merge(values, yaml.safe_load(f) or {})
    ctx = {
        "Values": values,
        "Release": {"Name": args.name, "Namespace": args.namespace, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion")},
    }
    templates = os.path.join(args.chart, "templates")
    docs = []
    for name in sorted(os.listdir(templates)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(templates, name)) as f:
            try:
                rendered = render_template(f.read(), ctx)
            except RenderError as e:
                print(f"Error: {args.chart}/templates/{name}: {e}", file=sys.stderr)
                sys.exit(1)
        if rendered.strip():
            # As helm does, refuse a template that renders to something that is not YAML.
            try:
                list(yaml.safe_load_all(rendered))
            except yaml.YAMLError as e:
                print(f"Error: {args.chart}/templates/{name}: the output is not YAML: {e}", file=sys.stderr)
                sys.exit(1)
            for doc in rendered.split("\n---\n"):
                if doc.strip() and any(not l.startswith("#") and l.strip() for l in doc.splitlines()):
                    docs.append(f"# Source: {chart['name']}/templates/{name}\n{doc.strip()}\n")
    sys.stdout.write("---\n" + "---\n".join(docs))


if __name__ == "__main__":
    main()
