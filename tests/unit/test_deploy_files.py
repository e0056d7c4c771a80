"""The deployment files agree with the server and with each other.

docker-compose.yml, deploy/nginx.conf, the Dockerfile, .dockerignore and the Procfile
are checked structurally: names of settings, URLs, ports, upstreams, headers,
stickiness, the non-root user and the health check. Each check asserts that what it
looks for is there, so a file that drifts (or loses a section) fails here instead of
at `docker compose up`. When a compose CLI is installed, `config -q` also validates
the file; when nginx is installed, `nginx -t` validates the load balancer's config.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import yaml  # PyYAML: in the `test` extra

from server.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROCFILE = ROOT / "Procfile"
PYPROJECT = ROOT / "pyproject.toml"

INSTANCES = ("switchboard-1", "switchboard-2")
SHARED = ("SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_REDIS_URL", "SWITCHBOARD_REDIS_PREFIX", "SWITCHBOARD_JWT_SECRET")
# What the tests pretend the operator exported; everything else takes the file's defaults.
OPERATOR_ENV = {"SWITCHBOARD_JWT_SECRET": "deploy-test-secret-deploy-test-secret-42"}


# --------------------------------------------------------------------------- settings


def valid_env_names() -> set[str]:
    """Every environment variable the server reads: prefix + field name, or the field's aliases."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = {"PORT"}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if alias is None:
            names.add(f"{prefix}{name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:  # AliasChoices
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
    return names


def default_of(name: str) -> Any:
    return Settings.model_fields[name].default


# --------------------------------------------------------------------------- compose


_VAR = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        op, arg = match.group(3), match.group(4)
        value = env.get(name)
        if op is None:
            return value or ""
        missing = not value if op.startswith(":") else value is None
        if not missing:
            return value or ""
        if op.endswith("-"):
            return arg
        raise KeyError(f"${{{name}}} is required: {arg}")

    return _VAR.sub(substitute, text)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return node


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as parsed (YAML anchors and merge keys resolved); interpolated when env is given."""
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return interpolate_tree(data, env) if env is not None else data


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def build_context(service: dict[str, Any]) -> str | None:
    build = service.get("build")
    if isinstance(build, dict):
        return str(build.get("context", "."))
    return None if build is None else str(build)


def command_list(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value or []]


def healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    return " ".join(command_list(test))


def instance_port(service: dict[str, Any]) -> int:
    env = environment(service)
    return int(env.get("SWITCHBOARD_PORT") or env.get("PORT") or dockerfile_port())


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    result = []
    for line in lines:
        instr, _, rest = line.partition(" ")
        result.append((instr.upper(), rest.strip()))
    return result


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, rest in dockerfile_instructions():
        if instr != "ENV":
            continue
        parts = shlex.split(rest)
        if parts and "=" not in parts[0]:
            env[parts[0]] = " ".join(parts[1:])
        else:
            env.update(part.split("=", 1) for part in parts)  # type: ignore[arg-type]
    return env


def dockerfile_port() -> int:
    env = dockerfile_env()
    return int(env.get("SWITCHBOARD_PORT") or env.get("PORT") or default_of("port"))


def healthcheck_argv() -> list[str]:
    checks = [rest for instr, rest in dockerfile_instructions() if instr == "HEALTHCHECK"]
    assert len(checks) == 1, "the Dockerfile needs exactly one HEALTHCHECK"
    match = re.search(r"\bCMD\s+(.*)$", checks[0])
    assert match, "HEALTHCHECK has no CMD"
    command = match.group(1).strip()
    argv = json.loads(command) if command.startswith("[") else ["/bin/sh", "-c", command]
    assert isinstance(argv, list) and argv
    return [str(part) for part in argv]


# --------------------------------------------------------------------------- nginx


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None
    parent: Directive | None = field(default=None, repr=False)

    def children(self, name: str) -> list[Directive]:
        return [child for child in self.block or [] if child.name == name]

    def walk(self) -> Iterator[Directive]:
        for child in self.block or []:
            yield child
            yield from child.walk()


_TOKEN = re.compile(r"""\s+|#[^\n]*|"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)'|([{};])|([^\s{};"'#]+)""")


def parse_nginx(text: str) -> Directive:
    """A small parser of nginx's configuration syntax into a tree of directives."""
    root = Directive("<main>", [], [])
    stack = [root]
    words: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        assert match, f"nginx.conf: cannot tokenize at {text[position:position + 40]!r}"
        position = match.end()
        dq, sq, punct, word = match.groups()
        if punct is None and dq is None and sq is None and word is None:
            continue  # whitespace or comment
        if punct is None:
            words.append(dq if dq is not None else sq if sq is not None else word)
            continue
        if punct == ";":
            assert words, "nginx.conf: empty directive"
            current = stack[-1]
            assert current.block is not None
            current.block.append(Directive(words[0], words[1:], None, current))
        elif punct == "{":
            assert words, "nginx.conf: block without a name"
            current = stack[-1]
            assert current.block is not None
            block = Directive(words[0], words[1:], [], current)
            current.block.append(block)
            stack.append(block)
        else:
            assert not words and len(stack) > 1, "nginx.conf: unbalanced '}'"
            stack.pop()
        words = []
    assert len(stack) == 1 and not words, "nginx.conf: unterminated block or directive"
    return root


def nginx() -> Directive:
    return parse_nginx(NGINX_CONF.read_text(encoding="utf-8"))


def http_block(conf: Directive) -> Directive:
    blocks = conf.children("http")
    assert len(blocks) == 1, "nginx.conf needs one http block (it is mounted as the whole nginx.conf)"
    return blocks[0]


def upstreams(conf: Directive) -> dict[str, Directive]:
    found = {d.args[0]: d for d in http_block(conf).children("upstream")}
    assert found, "nginx.conf defines no upstream"
    return found


def socketio_location(conf: Directive) -> Directive:
    for directive in http_block(conf).walk():
        if directive.name == "location" and directive.args and directive.args[-1].rstrip("/") == "/socket.io":
            return directive
    raise AssertionError("nginx.conf has no `location /socket.io/`")


def effective(location: Directive, name: str) -> list[Directive]:
    """The directives `name` in force in a location: nginx inherits them from the
    innermost enclosing level that defines any (all or nothing)."""
    level: Directive | None = location
    while level is not None:
        found = level.children(name)
        if found:
            return found
        level = level.parent
    return []


def proxy_headers(location: Directive) -> dict[str, str]:
    return {d.args[0].lower(): d.args[1] for d in effective(location, "proxy_set_header")}


def evaluate_map(conf: Directive, variable: str, values: dict[str, str]) -> str:
    """The value nginx's `map` gives `variable` for a request whose variables are `values`."""
    maps = [d for d in http_block(conf).children("map") if d.args[1] == variable]
    assert len(maps) == 1, f"nginx.conf: no single map defines {variable}"
    source = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), ""), maps[0].args[0])
    default = ""
    regexes: list[tuple[re.Pattern[str], str]] = []
    for entry in maps[0].block or []:
        value = entry.args[0] if entry.args else ""
        if entry.name == "default":
            default = value
        elif entry.name.startswith("~*"):
            regexes.append((re.compile(entry.name[2:], re.IGNORECASE), value))
        elif entry.name.startswith("~"):
            regexes.append((re.compile(entry.name[1:]), value))
        elif entry.name.lstrip("\\") == source:
            return value
    for pattern, value in regexes:
        if pattern.search(source):
            return value
    return default


def resolve(conf: Directive, value: str, request: dict[str, str]) -> str:
    """A directive argument with map-defined variables replaced by their value for `request`."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: evaluate_map(conf, "$" + m.group(1), request), value)


def upstream_for(conf: Directive, request: dict[str, str]) -> Directive:
    location = socketio_location(conf)
    passes = location.children("proxy_pass")
    assert len(passes) == 1, "location /socket.io/ needs one proxy_pass"
    target = resolve(conf, passes[0].args[0], request)
    name = urlsplit(target).netloc
    groups = upstreams(conf)
    assert name in groups, f"/socket.io/ request {request} goes to {target!r}, not an upstream group"
    return groups[name]


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, f"not an nginx time: {value!r}"
    return int(match.group(1)) * units[match.group(2) or "s"]


def size_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG])?", value)
    assert match, f"not an nginx size: {value!r}"
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[(match.group(2) or "").lower()]


# =========================================================================== compose


def test_compose_has_the_stack() -> None:
    services = load_compose(OPERATOR_ENV)["services"]
    assert {"postgres", "redis", "migrate", *INSTANCES, "lb"} <= set(services)

    postgres, redis = services["postgres"], services["redis"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert "pg_isready" in healthcheck_text(postgres)
    volumes = [str(v) for v in postgres.get("volumes", [])]
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in volumes), "PostgreSQL data needs a volume"
    named = {v.split(":")[0] for v in volumes if not v.startswith((".", "/"))}
    assert named <= set(load_compose()["volumes"] or {}), "named volumes must be declared"
    assert str(redis["image"]).startswith("redis:7")
    assert "redis-cli ping" in healthcheck_text(redis)


def test_instances_share_store_broker_prefix_and_key() -> None:
    raw = load_compose()["services"]
    for name in SHARED:
        values = {service: environment(raw[service]).get(name) for service in (*INSTANCES, "migrate")}
        assert None not in values.values(), f"{name} must be set on every instance and on migrate: {values}"
        assert len(set(values.values())) == 1, f"{name} differs between services: {values}"
    secret = environment(raw[INSTANCES[0]])["SWITCHBOARD_JWT_SECRET"]
    # Production mode with a secret written in a public file would let anyone mint tokens.
    assert re.fullmatch(r"\$\{SWITCHBOARD_JWT_SECRET:\?[^}]+\}", secret), secret
    with pytest.raises(KeyError, match="SWITCHBOARD_JWT_SECRET"):
        load_compose({})


def test_instances_build_the_image_and_start_after_migrate_and_redis() -> None:
    services = load_compose(OPERATOR_ENV)["services"]
    migrate = services["migrate"]
    assert command_list(migrate.get("command")) == ["python", "-m", "server", "migrate"]
    assert depends_on(migrate).get("postgres") == "service_healthy"
    assert build_context(migrate) == "."
    for name in INSTANCES:
        service = services[name]
        assert build_context(service) == ".", f"{name} must be built from this repository"
        assert service.get("image") == migrate.get("image"), "migrate must run the instances' image"
        assert "command" not in service, f"{name} must run the image's CMD (python -m server serve)"
        deps = depends_on(service)
        assert deps.get("migrate") == "service_completed_successfully", deps
        assert deps.get("redis") == "service_healthy", deps
        env = environment(service)
        assert env.get("SWITCHBOARD_HOST") == "0.0.0.0"
        assert env.get("SWITCHBOARD_ENV") == "production"
    assert {name: "service_healthy" for name in INSTANCES}.items() <= depends_on(services["lb"]).items()


def test_every_switchboard_variable_named_is_a_real_setting() -> None:
    valid = valid_env_names()
    assert {"SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_PORT", "PORT"} <= valid
    named: dict[str, set[str]] = {}
    for path in (COMPOSE, PROCFILE, DOCKERFILE, NGINX_CONF):
        for name in re.findall(r"\bSWITCHBOARD_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")):
            named.setdefault(name, set()).add(path.name)
    assert len(named) >= len(SHARED), "the deployment files name fewer settings than they must"
    unknown = {name: sorted(files) for name, files in named.items() if name not in valid}
    assert not unknown, f"not settings of server.config.Settings: {unknown}"


def test_compose_environment_loads_as_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    services = load_compose(OPERATOR_ENV)["services"]
    monkeypatch.chdir(tmp_path)
    for service in ("migrate", *INSTANCES):
        for name in list(os.environ):
            if name.startswith("SWITCHBOARD_") or name == "PORT":
                monkeypatch.delenv(name)
        for name, value in {**dockerfile_env(), **environment(services[service])}.items():
            monkeypatch.setenv(name, value)
        settings = load_settings()  # raises ConfigError on a bad value
        assert settings.env == "production"
        assert settings.hmac_secret() == OPERATOR_ENV["SWITCHBOARD_JWT_SECRET"]


def test_store_and_broker_urls_name_the_compose_services() -> None:
    services = load_compose(OPERATOR_ENV)["services"]
    env = environment(services[INSTANCES[0]])
    postgres = environment(services["postgres"])

    db = urlsplit(env["SWITCHBOARD_DATABASE_URL"])
    assert db.scheme in {"postgresql", "postgres"}
    assert db.hostname == "postgres" and (db.port or 5432) == 5432
    assert db.username == postgres["POSTGRES_USER"]
    assert db.password == postgres["POSTGRES_PASSWORD"]
    assert db.path == "/" + postgres.get("POSTGRES_DB", postgres["POSTGRES_USER"])
    assert "ports" not in services["postgres"] and "PGPORT" not in postgres

    redis = urlsplit(env["SWITCHBOARD_REDIS_URL"])
    assert redis.scheme == "redis"
    assert redis.hostname == "redis" and (redis.port or 6379) == 6379
    assert "--port" not in command_list(services["redis"].get("command"))


def test_only_the_load_balancer_is_published() -> None:
    services = load_compose(OPERATOR_ENV)["services"]
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert list(published) == ["lb"], f"only lb may publish ports: {published}"
    (mapping,) = published["lb"]
    container_port = int(str(mapping).rsplit(":", 1)[-1].split("/")[0])
    listens = [d for d in http_block(nginx()).walk() if d.name == "listen"]
    assert [d.args[0].rsplit(":", 1)[-1] for d in listens] == [str(container_port)]

    mounts = [str(v).split(":") for v in services["lb"].get("volumes", [])]
    conf_mounts = [m for m in mounts if m[1] == "/etc/nginx/nginx.conf"]
    assert conf_mounts, "lb must mount deploy/nginx.conf as /etc/nginx/nginx.conf"
    assert (ROOT / conf_mounts[0][0]).resolve() == NGINX_CONF.resolve()
    assert str(services["lb"]["image"]).startswith("nginx")


# =========================================================================== nginx


def test_every_upstream_names_both_instances_on_their_port() -> None:
    services = load_compose(OPERATOR_ENV)["services"]
    instances = sorted(name for name in services if name.startswith("switchboard-"))
    assert len(instances) >= 2
    expected = {f"{name}:{instance_port(services[name])}" for name in instances}
    for name, group in upstreams(nginx()).items():
        servers = {d.args[0] for d in group.children("server")}
        assert servers == expected, f"upstream {name}: {servers} != {expected}"


def test_socketio_location_upgrades_websockets_with_long_timeouts() -> None:
    conf = nginx()
    location = socketio_location(conf)
    assert [d.args for d in effective(location, "proxy_http_version")] == [["1.1"]]
    headers = proxy_headers(location)
    assert headers.get("upgrade") == "$http_upgrade"
    connection = headers.get("connection", "")
    assert resolve(conf, connection, {"http_upgrade": "websocket"}).lower() == "upgrade"
    assert resolve(conf, connection, {"http_upgrade": ""}).lower() in {"", "close", "keep-alive"}

    services = load_compose(OPERATOR_ENV)["services"]
    env = environment(services[INSTANCES[0]])
    silence = float(env.get("SWITCHBOARD_PING_INTERVAL", default_of("ping_interval"))) + float(
        env.get("SWITCHBOARD_PING_TIMEOUT", default_of("ping_timeout"))
    )
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        found = effective(location, name)
        assert found, f"/socket.io/ needs {name} (nginx's 60 s default is too close to the heartbeat)"
        assert seconds(found[-1].args[0]) > silence, f"{name} must exceed ping interval + timeout ({silence} s)"

    body = effective(location, "client_max_body_size")
    assert body, "set client_max_body_size to admit the largest Socket.IO message"
    assert size_bytes(body[-1].args[0]) >= Settings().transport_max_message_bytes


def test_polling_sessions_are_sticky() -> None:
    conf = nginx()

    def sticky(group: Directive) -> bool:
        return bool(group.children("ip_hash") or group.children("sticky") or group.children("hash"))

    # Every request of a long-polling session, and its upgrade to WebSocket, carries
    # the sid one instance created: they must hash to that instance.
    for request in (
        {"http_upgrade": "", "arg_sid": ""},  # polling handshake
        {"http_upgrade": "", "arg_sid": "Zm9vYmFy"},  # poll / post of that session
        {"http_upgrade": "websocket", "arg_sid": "Zm9vYmFy"},  # its upgrade to WebSocket
    ):
        group = upstream_for(conf, request)
        assert sticky(group), f"{request} goes to upstream {group.args[0]}, which is not sticky"
    # A WebSocket-only connection may go anywhere; it still must reach an upstream group.
    upstream_for(conf, {"http_upgrade": "websocket", "arg_sid": ""})


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if binary is None:
        pytest.skip("nginx is not installed; the structural checks above cover deploy/nginx.conf")
    # `nginx -t` resolves upstream host names: point them at localhost; keep temp files here.
    text = re.sub(r"\bswitchboard-\d+(?=:\d+)", "127.0.0.1", NGINX_CONF.read_text(encoding="utf-8"))
    temps = "".join(f"    {kind}_temp_path {tmp_path / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = re.sub(r"\bhttp\s*\{\n", lambda m: m.group(0) + temps, text, count=1)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(conf), "-g", f"pid {tmp_path / 'nginx.pid'};"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


# =========================================================================== compose CLI


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_cli_validates_the_file(tmp_path: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no compose CLI: the docker CLI here has no `compose` plugin and docker-compose is not "
                    "installed; the structural checks above cover docker-compose.yml")
    empty_env_file = tmp_path / "empty.env"  # so a developer's .env cannot change the outcome
    empty_env_file.write_text("", encoding="utf-8")
    base = [*cli, "--env-file", str(empty_env_file), "-f", str(COMPOSE)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "COMPOSE_", "POSTGRES_"))}
    ok = subprocess.run([*base, "config", "-q"], cwd=ROOT, env={**env, **OPERATOR_ENV},
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    missing = subprocess.run([*base, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "SWITCHBOARD_JWT_SECRET" in missing.stderr, missing.stderr


# =========================================================================== Procfile


def test_procfile_serves_on_port_and_migrates_on_release() -> None:
    processes: dict[str, str] = {}
    for line in PROCFILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, command = line.partition(":")
            assert sep, f"Procfile line without 'name:': {line!r}"
            processes[name.strip()] = command.strip()
    assert set(processes) == {"web", "release"}, processes

    web = shlex.split(processes["web"])
    assert web[:4] == ["python", "-m", "server", "serve"], web
    options = dict(zip(web[4::2], web[5::2], strict=True))
    assert options.get("--port") in {"$PORT", "${PORT}"}, web
    assert options.get("--host") == "${SWITCHBOARD_HOST:-0.0.0.0}", web
    assert shlex.split(processes["release"]) == ["python", "-m", "server", "migrate"]

    # The CLI still takes these options.
    usage = subprocess.run([sys.executable, "-m", "server", "serve", "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0, usage.stderr
    for option in options:
        assert option in usage.stdout, f"`python -m server serve` has no {option}"


# =========================================================================== Dockerfile


def test_dockerfile_installs_the_package_and_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    (base,) = [rest for instr, rest in instructions if instr == "FROM"]
    assert base.split()[0].startswith("python:3.11-slim"), base

    env = dockerfile_env()
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("SWITCHBOARD_ENV") == "production"

    users = [rest.split(":")[0] for instr, rest in instructions if instr == "USER"]
    assert users and users[-1] not in {"root", "0"}, f"the image must end as a non-root user: {users}"
    assert any(instr == "RUN" and "useradd" in rest and users[-1] in rest for instr, rest in instructions)

    runs = [rest for instr, rest in instructions if instr == "RUN"]
    assert any(re.search(r"\bpip install (--\S+ )*\.(\s|$)", run) for run in runs), "install with `pip install .`"

    (cmd,) = [rest for instr, rest in instructions if instr == "CMD"]
    assert json.loads(cmd) == ["python", "-m", "server", "serve", "--host", "0.0.0.0"]


def test_dockerfile_copies_what_pyproject_packages() -> None:
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", pyproject["project"]["readme"]} | {pattern.rstrip("*.") for pattern in includes}
    copied: set[str] = set()
    for instr, rest in dockerfile_instructions():
        if instr in {"COPY", "ADD"}:
            parts = [part for part in shlex.split(rest) if not part.startswith("--")]
            copied.update(part.rstrip("/") for part in parts[:-1])
    assert needed <= copied, f"the image misses {sorted(needed - copied)}"

    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    excluded = [p for p in copied if any(fnmatch(p, pat.lstrip("/")) for pat in patterns if not pat.startswith("!"))]
    assert not excluded, f".dockerignore excludes what the Dockerfile copies: {excluded}"
    for must in (".venv", ".git", ".env", "*.db", ".pytest_cache", ".mypy_cache"):
        assert must in patterns, f".dockerignore must exclude {must}"
    assert any("node_modules" in p for p in patterns)


def test_dockerfile_exposes_the_port_the_server_listens_on() -> None:
    exposed = [int(port.split("/")[0]) for instr, rest in dockerfile_instructions() if instr == "EXPOSE"
               for port in rest.split()]
    assert exposed == [dockerfile_port()]
    services = load_compose(OPERATOR_ENV)["services"]
    assert {instance_port(services[name]) for name in INSTANCES} == set(exposed)


class _Health(BaseHTTPRequestHandler):
    status = 200
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.paths.append(self.path)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_probes_healthz(status: int, healthy: bool) -> None:
    argv = healthcheck_argv()
    if argv[0] == "python":
        argv[0] = sys.executable
    handler = type("Health", (_Health,), {"status": status, "paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {k: v for k, v in os.environ.items() if k not in {"SWITCHBOARD_PORT", "PORT"}}
        env["SWITCHBOARD_PORT"] = str(server.server_address[1])
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert handler.paths == ["/healthz"]
    assert (result.returncode == 0) is healthy, result.stderr
