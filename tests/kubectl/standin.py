"""A stand-in for `kubectl`, for testing the decisions of Damselfly's setup
script where no Kubernetes API server can run. It is a test double of the
command's interface, not of a cluster: it keeps API objects in a JSON state
file (canned answers in the shapes of the Kubernetes API reference, see
README.md beside it), answers the commands the script uses from them,
changes them as apply, delete, label and annotate would, and records every
call with its standard input.

    KUBECTL_STANDIN_STATE=state.json KUBECTL_STANDIN_LOG=calls.jsonl \
    KUBECTL_STANDIN_REAL=/usr/bin/kubectl python standin.py get pods -n x -o jsonpath=...

Output in `-o jsonpath=` is printed by the real kubectl (`annotate --local`,
which formats local objects without a server), so templates are evaluated
as kubectl evaluates them; a template over a list must start with
`{range .items[*]}`. Anything the stand-in does not know is an error
(exit 2, "standin: ..."), never a guess.
"""

import copy
import json
import os
import subprocess
import sys
import tempfile

import yaml

# resource words -> (kind, apiVersion, namespaced)
RESOURCES = {}
for words, kind, api, namespaced in [
    ("namespaces namespace ns", "Namespace", "v1", False),
    ("nodes node no", "Node", "v1", False),
    ("pods pod po", "Pod", "v1", True),
    ("secrets secret", "Secret", "v1", True),
    ("configmaps configmap cm", "ConfigMap", "v1", True),
    ("serviceaccounts serviceaccount sa", "ServiceAccount", "v1", True),
    ("services service svc", "Service", "v1", True),
    ("events event ev", "Event", "v1", True),
    ("daemonsets daemonset ds daemonsets.apps daemonset.apps", "DaemonSet", "apps/v1", True),
    ("deployments deployment deploy deployments.apps deployment.apps", "Deployment", "apps/v1", True),
    ("replicasets replicaset rs replicasets.apps", "ReplicaSet", "apps/v1", True),
    ("clusterroles clusterrole clusterroles.rbac.authorization.k8s.io", "ClusterRole", "rbac.authorization.k8s.io/v1", False),
    ("clusterrolebindings clusterrolebinding clusterrolebindings.rbac.authorization.k8s.io", "ClusterRoleBinding", "rbac.authorization.k8s.io/v1", False),
    ("roles role roles.rbac.authorization.k8s.io", "Role", "rbac.authorization.k8s.io/v1", True),
    ("rolebindings rolebinding rolebindings.rbac.authorization.k8s.io", "RoleBinding", "rbac.authorization.k8s.io/v1", True),
    ("mutatingwebhookconfigurations mutatingwebhookconfiguration mutatingwebhookconfigurations.admissionregistration.k8s.io",
     "MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", False),
]:
    for word in words.split():
        RESOURCES[word] = (kind, api, namespaced)
KINDS = {kind: (api, namespaced) for kind, api, namespaced in RESOURCES.values()}
# The plural lower-case name the API server uses in messages.
PLURAL = {
    "Namespace": "namespaces", "Node": "nodes", "Pod": "pods", "Secret": "secrets", "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts", "Service": "services", "Event": "events", "DaemonSet": "daemonsets.apps",
    "Deployment": "deployments.apps", "ReplicaSet": "replicasets.apps",
    "ClusterRole": "clusterroles.rbac.authorization.k8s.io",
    "ClusterRoleBinding": "clusterrolebindings.rbac.authorization.k8s.io",
    "Role": "roles.rbac.authorization.k8s.io", "RoleBinding": "rolebindings.rbac.authorization.k8s.io",
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations.admissionregistration.k8s.io",
}
# Flags that take a value when not written as --flag=value.
VALUED = {"-n", "--namespace", "-l", "--selector", "-o", "--output", "-f", "--filename", "--field-selector",
          "-c", "--container", "--tail", "--request-timeout", "--field-manager", "--timeout", "--cascade"}
SHORT = {"-n": "--namespace", "-l": "--selector", "-o": "--output", "-f": "--filename", "-c": "--container",
         "-A": "--all-namespaces"}


class Fail(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def unknown(what):
    raise Fail(f"standin: {what}", 2)


def parse_args(argv):
    words, flags = [], {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and a != "-":
            name, _, value = a.partition("=")
            name = SHORT.get(name, name)
            if not _ and (a in VALUED or name in VALUED):
                i += 1
                value = argv[i]
            elif not _:
                value = "true"
            flags[name] = value
        else:
            words.append(a)
        i += 1
    return words, flags


class State:
    def __init__(self, path):
        self.path = path
        with open(path) as f:
            self.data = json.load(f)
        self.data.setdefault("objects", [])
        self.data.setdefault("lists", {})

    def save(self):
        with open(self.path, "w") as f:
            json.dump(self.data, f, indent=1)

    @property
    def objects(self):
        return self.data["objects"]

    def visible(self, obj, count):
        window = obj.get("standin", {}).get("visible")
        if not window:
            return True
        low, high = window[0], (window[1] if len(window) > 1 else None)
        return count >= low and (high is None or count <= high)

    def find(self, kind, namespace, name):
        count = self.data["lists"].get(kind, 0)
        for obj in self.objects:
            if (obj["kind"] == kind and obj["metadata"]["name"] == name
                    and obj["metadata"].get("namespace") == namespace and self.visible(obj, count)):
                return obj
        return None

    def listing(self, kind, namespace, count_it=True):
        if count_it:
            self.data["lists"][kind] = self.data["lists"].get(kind, 0) + 1
        count = self.data["lists"].get(kind, 0)
        found = [o for o in self.objects if o["kind"] == kind and self.visible(o, count)
                 and (namespace is None or o["metadata"].get("namespace") == namespace)]
        # As the API server lists them: in the order of their keys, namespace then name.
        return sorted(found, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def shown(self, obj):
        """The object as the API returns it: without the stand-in's notes, with
        Pods of a DaemonSet carrying the template's config annotation."""
        out = copy.deepcopy(obj)
        out.pop("standin", None)
        notes = out.get("metadata", {}).get("annotations", {})
        if notes.get("damselfly.io/config") == "@@APPLIED@@":
            notes["damselfly.io/config"] = ""
            for ref in out["metadata"].get("ownerReferences", []):
                owner = self.find(ref["kind"], out["metadata"].get("namespace"), ref["name"])
                if owner:
                    template = owner.get("spec", {}).get("template", {}).get("metadata", {})
                    notes["damselfly.io/config"] = template.get("annotations", {}).get("damselfly.io/config", "")
        return out


def resource(word):
    if word not in RESOURCES:
        unknown(f"unknown resource type {word!r}")
    return RESOURCES[word]


def namespace_of(flags, namespaced):
    if not namespaced:
        return None
    if flags.get("--all-namespaces") == "true":
        return None
    return flags.get("--namespace", "default")


def selector_matches(selector, labels):
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_matches(selector, obj):
    for term in filter(None, (selector or "").split(",")):
        path, value = term.split("=", 1)
        v = obj
        for key in path.split("."):
            v = v.get(key) if isinstance(v, dict) else None
        if (v or "") != value:
            return False
    return True


def not_found(kind, name):
    return Fail(f'Error from server (NotFound): {PLURAL[kind]} "{name}" not found')


def print_objects(state, objs, output, as_list):
    shown = [state.shown(o) for o in objs]
    if output is None:
        if not shown:
            print("No resources found", file=sys.stderr)
        else:
            print("NAME")
            for o in shown:
                print(o["metadata"]["name"])
        return
    if output == "name":
        for o in shown:
            api = KINDS[o["kind"]][0]
            group = "." + api.split("/")[0] if "/" in api else ""
            print(f"{o['kind'].lower()}{group}/{o['metadata']['name']}")
        return
    if output == "json":
        doc = {"apiVersion": "v1", "kind": "List", "items": shown} if as_list else shown[0]
        print(json.dumps(doc, indent=4))
        return
    if output.startswith("jsonpath="):
        template = output[len("jsonpath="):]
        if as_list:
            head = "{range .items[*]}"
            if not template.startswith(head):
                unknown(f"a template over a list must start with {head}: {template}")
            # kubectl formats each local object apart, so the list goes as one
            # object whose items are under another key, and the template follows.
            carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "standin-list"}, "standinItems": shown}
            template = "{range .standinItems[*]}" + template[len(head):]
            sys.stdout.write(real_jsonpath(carrier, template) if shown else "")
        else:
            sys.stdout.write(real_jsonpath(shown[0], template))
        return
    unknown(f"unknown output format {output!r}")


def real_jsonpath(obj, template):
    """What the real kubectl prints for the object with the template."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(obj, f)
        path = f.name
    try:
        out = subprocess.run(
            [os.environ["KUBECTL_STANDIN_REAL"], "annotate", "--local", "-f", path, "damselfly.io/standin-render=1",
             "-o", "jsonpath=" + template],
            env={"KUBECONFIG": "/dev/null", "PATH": os.environ.get("PATH", "")}, capture_output=True, text=True)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        unknown(f"the real kubectl refused the template {template!r}: {out.stderr.strip()}")
    return out.stdout


def select(state, words, flags, count_listing=True):
    """The objects that `TYPE[,TYPE] [NAME...]` or `TYPE/NAME` names, in the
    flags' namespace and matching their selectors; with the `(kind, name)` of
    named ones that do not exist, and whether names were given."""
    if not words:
        unknown("no resource type")
    if "/" in words[0]:
        kind_word, name = words[0].split("/", 1)
        types, names = [kind_word], [name]
    else:
        types, names = words[0].split(","), words[1:]
    objs, missing = [], []
    for t in types:
        kind, _, namespaced = resource(t)
        namespace = namespace_of(flags, namespaced)
        if names:
            for name in names:
                obj = state.find(kind, namespace, name)
                if obj is None:
                    missing.append((kind, name))
                else:
                    objs.append(obj)
        else:
            objs += [o for o in state.listing(kind, namespace, count_listing)
                     if selector_matches(flags.get("--selector"), o["metadata"].get("labels", {}))
                     and field_matches(flags.get("--field-selector"), o)]
    return objs, missing, bool(names), len(types) > 1 or len(names) > 1


def cmd_get(state, words, flags):
    objs, missing, named, several = select(state, words, flags)
    if missing:
        raise not_found(*missing[0])
    print_objects(state, objs, flags.get("--output"), as_list=not named or several)


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def check_server_side(command, flags):
    if flags.get("--server-side") != "true":
        unknown(f"{command} without --server-side")
    if flags.get("--field-manager") != "damselfly-installer":
        unknown(f"{command} without --field-manager=damselfly-installer")
    if flags.get("--filename") != "-":
        unknown(f"{command} not from standard input")


def key_of(doc):
    kind = doc["kind"]
    if kind not in KINDS:
        unknown(f"unknown kind {kind}")
    namespaced = KINDS[kind][1]
    return kind, doc["metadata"].get("namespace", "default") if namespaced else None, doc["metadata"]["name"]


def namespace_problem(state, kind, namespace, name, created):
    if namespace is None or namespace in created:
        return None
    ns = state.find("Namespace", None, namespace)
    if ns is None:
        return f'Error from server (NotFound): error when creating "STDIN": namespaces "{namespace}" not found'
    if ns.get("metadata", {}).get("deletionTimestamp"):
        return (f'Error from server (Forbidden): error when creating "STDIN": {PLURAL[kind]} "{name}" is forbidden: '
                f"unable to create new content in namespace {namespace} because it is being terminated")
    return None


def cmd_apply(state, flags, stdin):
    check_server_side("apply", flags)
    created, errors = set(), []
    for doc in documents(stdin):
        kind, namespace, name = key_of(doc)
        problem = namespace_problem(state, kind, namespace, name, created)
        if problem:
            errors.append(problem)
            continue
        if kind == "Namespace":
            created.add(name)
        existing = state.find(kind, namespace, name)
        stored = copy.deepcopy(doc)
        if namespace is not None:
            stored["metadata"]["namespace"] = namespace
        if existing is not None:
            meta = existing["metadata"]
            for field in ("labels", "annotations"):
                stored["metadata"][field] = {**meta.get(field, {}), **doc["metadata"].get(field, {})}
            for field in ("status", "standin"):
                if field in existing:
                    stored[field] = existing[field]
            state.objects[state.objects.index(existing)] = stored
        else:
            state.objects.append(stored)
        group = KINDS[kind][0]
        group = "." + group.split("/")[0] if "/" in group else ""
        print(f"{kind.lower()}{group}/{name} serverside-applied")
    if errors:
        raise Fail("\n".join(errors))


def differs(want, have):
    if isinstance(want, dict):
        return not isinstance(have, dict) or any(differs(v, have.get(k)) for k, v in want.items())
    return want != have


def cmd_diff(state, flags, stdin):
    check_server_side("diff", flags)
    changed = False
    for doc in documents(stdin):
        kind, namespace, name = key_of(doc)
        problem = namespace_problem(state, kind, namespace, name, set())
        if problem:
            raise Fail(problem.replace("error when creating", "error when diffing"), 2)
        existing = state.find(kind, namespace, name)
        if existing is None or differs(doc, existing):
            changed = True
            shown = copy.deepcopy(doc)
            if kind == "Secret":
                shown["data"] = {k: "***" for k in shown.get("data", {})}
            label = f"{KINDS[kind][0].replace('/', '.')}.{kind}.{namespace or ''}.{name}"
            print(f"diff -u -N /tmp/LIVE/{label} /tmp/MERGED/{label}")
            print(yaml.safe_dump(shown))
    if changed:
        raise Fail("", 1)


def remove(state, obj, printed):
    """Deletes obj and what it owns, as the garbage collector would; an object
    marked stuck (a Pod on a node that does not answer) is only marked."""
    if obj.get("standin", {}).get("stuck"):
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        if obj["kind"] == "Namespace":
            obj.setdefault("status", {})["phase"] = "Terminating"
    elif obj in state.objects:
        state.objects.remove(obj)
    if printed:
        print(f'{obj["kind"].lower()} "{obj["metadata"]["name"]}" deleted')
    kind, name, namespace = obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")
    for other in list(state.objects):
        owned = any(r["kind"] == kind and r["name"] == name for r in other["metadata"].get("ownerReferences", []))
        inside = kind == "Namespace" and other["metadata"].get("namespace") == name
        if (owned and other["metadata"].get("namespace") == namespace) or inside:
            remove(state, other, False)
    if kind == "Namespace" and any(o["metadata"].get("namespace") == name for o in state.objects):
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        obj.setdefault("status", {})["phase"] = "Terminating"
        if obj not in state.objects:
            state.objects.append(obj)


def cmd_delete(state, words, flags):
    if len(words) == 1 and "--selector" not in flags:
        unknown("delete of a whole type without a selector")
    objs, missing, named, _ = select(state, words, flags, count_listing=False)
    for obj in objs:
        remove(state, obj, True)
    if not named and not objs:
        print("No resources found", file=sys.stderr)
    if missing and flags.get("--ignore-not-found") != "true":
        raise Fail("\n".join(str(not_found(kind, name)) for kind, name in missing))


def cmd_mark(state, words, flags, field, verb):
    kind, _, namespaced = resource(words[0])
    obj = state.find(kind, namespace_of(flags, namespaced), words[1])
    if obj is None:
        raise not_found(kind, words[1])
    marks = obj["metadata"].setdefault(field, {})
    for change in words[2:]:
        if change.endswith("-"):
            marks.pop(change[:-1], None)
        else:
            k, v = change.split("=", 1)
            if k in marks and marks[k] != v and flags.get("--overwrite") != "true":
                raise Fail(f"error: '{k}' already has a value ({marks[k]}), and --overwrite is false")
            marks[k] = v
    print(f"{kind.lower()}/{words[1]} {verb}")


def cmd_logs(state, words, flags):
    namespace = flags.get("--namespace", "default")
    container = flags.get("--container", "")
    suffix = "/previous" if flags.get("--previous") == "true" else ""
    if words:
        pods = [words[0]]
    else:
        pods = [o["metadata"]["name"] for o in state.listing("Pod", namespace, count_it=False)
                if selector_matches(flags.get("--selector"), o["metadata"].get("labels", {}))]
    logs = state.data.get("logs", {})
    for pod in pods:
        text = logs.get(f"{pod}/{container}{suffix}", "")
        lines = text.splitlines()
        tail = int(flags.get("--tail", "-1"))
        if tail >= 0:
            lines = lines[-tail:] if tail else []
        for line in lines:
            prefix = f"[pod/{pod}/{container}] " if flags.get("--prefix") == "true" else ""
            print(prefix + line)


def main():
    argv = sys.argv[1:]
    stdin = sys.stdin.read() if "-" in argv and ("-f" in argv or "--filename" in argv) else None
    with open(os.environ["KUBECTL_STANDIN_LOG"], "a") as log:
        log.write(json.dumps({"args": argv, "stdin": stdin}) + "\n")
    state = State(os.environ["KUBECTL_STANDIN_STATE"])
    words, flags = parse_args(argv)
    try:
        if not words:
            unknown("no command")
        command, words = words[0], words[1:]
        if state.data.get("unreachable") and command not in ("config",):
            raise Fail("The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?")
        if command == "version":
            print("Client Version: v1.37.0\nServer Version: v1.36.0")
        elif command == "config" and words == ["current-context"]:
            print("standin")
        elif command == "auth" and words[:1] == ["can-i"]:
            if f"{words[1]}:{words[2]}" in state.data.get("denied", []):
                print("no")
                raise Fail("")
            print("yes")
        elif command == "get":
            cmd_get(state, words, flags)
        elif command == "apply":
            cmd_apply(state, flags, stdin)
        elif command == "diff":
            cmd_diff(state, flags, stdin)
        elif command == "delete":
            cmd_delete(state, words, flags)
        elif command == "label":
            cmd_mark(state, words, flags, "labels", "labeled")
        elif command == "annotate":
            cmd_mark(state, words, flags, "annotations", "annotated")
        elif command == "logs":
            cmd_logs(state, words, flags)
        else:
            unknown(f"unknown command {command!r}")
    except Fail as e:
        state.save()
        if str(e):
            print(str(e), file=sys.stderr)
        sys.exit(e.code)
    state.save()


if __name__ == "__main__":
    main()
