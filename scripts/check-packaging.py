#!/usr/bin/env python3
"""Static checks of the packaging files that cannot be run here (no
container engine): the Dockerfile (parsed by dockerfile-parse, the parser
of OpenShift's build tools) and deploy/compose.yaml (parsed by PyYAML).

  python3 scripts/check-packaging.py      # exit 1 with every problem listed

Dockerfile: multi-stage; the runtime stage is distroless or static/scratch,
runs as a non-root user, copies only from the build stage, sets no secret;
the build uses the locked dependencies; .dockerignore keeps keys, stores
and build outputs out of the context. compose.yaml: PostgreSQL with a
health check, two or more issuer replicas serving from PostgreSQL behind
one name, a gateway whose configuration file exists, the root key as a
secret file, no password or key written in the file, every image pinned
to a tag other than latest.
"""
import re
import sys
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|ROOT_KEY(?!_FILE)|PRIVATE)", re.I)


def dockerfile():
    p = DockerfileParser(path=str(ROOT / "Dockerfile"))
    lines = p.structure
    froms = [i for i, l in enumerate(lines) if l["instruction"] == "FROM"]
    check(len(froms) >= 2, "Dockerfile: not multi-stage (one FROM)")
    if not froms:
        return
    stages = []
    for n, start in enumerate(froms):
        end = froms[n + 1] if n + 1 < len(froms) else len(lines)
        stages.append(lines[start:end])
    build_names = set()
    for st in stages[:-1]:
        m = re.search(r"\bAS\s+(\S+)", st[0]["value"], re.I)
        if m:
            build_names.add(m.group(1))
    runtime = stages[-1]
    base = runtime[0]["value"].split()[0]
    check(
        base.startswith("gcr.io/distroless/") or base in ("scratch",) or "static" in base,
        f"Dockerfile: runtime base {base} is neither distroless nor static",
    )
    check(":latest" not in base and ":" in base, f"Dockerfile: runtime base {base} is not pinned to a tag")
    users = [l["value"].strip() for l in runtime if l["instruction"] == "USER"]
    check(users, "Dockerfile: the runtime stage sets no USER (it would run as root)")
    if users:
        user = users[-1].split(":")[0]
        check(user not in ("0", "root"), f"Dockerfile: the runtime runs as {users[-1]}")
    for l in runtime:
        if l["instruction"] == "COPY":
            m = re.search(r"--from=(\S+)", l["value"])
            check(
                m and m.group(1) in build_names,
                f"Dockerfile:{l['startline'] + 1}: runtime COPY not from a build stage: {l['value']}",
            )
        if l["instruction"] == "ENTRYPOINT":
            check(l["value"].strip().startswith("["), "Dockerfile: ENTRYPOINT is not in exec form")
    for l in lines:
        if l["instruction"] in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", l["value"]):
                check(
                    not SECRET_NAME.search(name),
                    f"Dockerfile:{l['startline'] + 1}: {l['instruction']} {name} looks like a secret baked into the image",
                )
    builds = " ".join(l["value"] for l in lines if l["instruction"] == "RUN")
    check("--locked" in builds and "--release" in builds, "Dockerfile: the build is not `cargo build --release --locked`")
    ignore = (ROOT / ".dockerignore").read_text().split()
    for must in ("target/", ".git/", "keyward-data/", "**/*.key", "deploy/secrets/", "deploy/.env"):
        check(must in ignore, f".dockerignore: {must} is not excluded")


def compose():
    path = ROOT / "deploy" / "compose.yaml"
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services") or {}
    check("postgres" in services, "compose: no postgres service")
    pg = services.get("postgres", {})
    check("healthcheck" in pg, "compose: postgres has no health check")

    def command(s):
        c = s.get("command") or []
        return c if isinstance(c, list) else c.split()

    issuers = [n for n, s in services.items() if command(s)[:1] == ["serve"]]
    check(len(issuers) >= 2, f"compose: {len(issuers)} issuer replica(s), want 2 or more")
    for n in issuers:
        s = services[n]
        url = (s.get("environment") or {}).get("KEYWARD_DATABASE_URL", "")
        check(url.startswith("postgres://"), f"compose: {n} does not use PostgreSQL")
        check(
            (s.get("depends_on") or {}).get("postgres", {}).get("condition") == "service_healthy",
            f"compose: {n} does not wait for a healthy postgres",
        )
        aliases = (((s.get("networks") or {}).get("default") or {}).get("aliases")) or []
        check("keyward" in aliases, f"compose: {n} is not reachable as `keyward`")
        check("root_key" in (s.get("secrets") or []), f"compose: {n} does not get the root key secret")
        check(s.get("read_only") is True, f"compose: {n} has a writable root file system")
    gws = [n for n, s in services.items() if command(s)[:1] == ["gateway"]]
    check(len(gws) == 1, "compose: no gateway service")
    for n in gws:
        for v in services[n].get("volumes") or []:
            src = v.split(":")[0]
            check((path.parent / src).exists(), f"compose: {n} mounts {src}, which does not exist")
    secrets = doc.get("secrets") or {}
    check("root_key" in secrets and "file" in secrets["root_key"], "compose: the root key is not a secret file")
    for n, s in services.items():
        image = s.get("image", "")
        if image and not image.startswith("keyward:"):
            check(":" in image and not image.endswith(":latest"), f"compose: {n} image {image} is not pinned")
        for k, v in (s.get("environment") or {}).items():
            if SECRET_NAME.search(k) and not k.endswith("_FILE"):
                check(
                    isinstance(v, str) and v.startswith("${"),
                    f"compose: {n} sets {k} to a literal value (a secret in the file)",
                )
            if isinstance(v, str) and "://" in v and "@" in v:
                userinfo = v.split("://", 1)[1].split("@", 1)[0]
                check(":" not in userinfo or "${" in userinfo, f"compose: {n} {k} carries a literal password")


dockerfile()
compose()
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print("Dockerfile and deploy/compose.yaml: ok")
