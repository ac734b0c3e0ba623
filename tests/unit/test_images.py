"""The container images and the one-machine compose file, checked without docker.

Dockerfiles: the dependencies are installed, at the versions of constraints.txt, in a layer built before any code
is copied (so a code change reuses it), and the code is installed with ``--no-deps``. ``.dockerignore`` keeps
version control, tests, run outputs, media, journals, caches and weights out of the build context.
``deploy/compose.yaml``: PostgreSQL with a volume and a health check, the app started only once the database is
healthy, its database URL from an env file or a secret (never written in the file), its port published on
127.0.0.1 only, media and journal on volumes.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "deploy" / "Dockerfile.cpu", REPO / "deploy" / "Dockerfile.cuda"]
IMAGE_ROOT = "/home/ray/bigsister-ray"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _copied(args: str) -> list[str]:
    parts = [p for p in args.split() if not p.startswith("--")]
    return parts[:-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_are_a_layer_before_the_code(dockerfile):
    steps = _instructions(dockerfile)
    copies = [(i, _copied(args)) for i, (word, args) in enumerate(steps) if word == "COPY"]
    runs = [(i, args) for i, (word, args) in enumerate(steps) if word == "RUN"]
    first_code = min(i for i, srcs in copies if any(s.startswith("bigsister_ray") for s in srcs))
    deps_copy = next(i for i, srcs in copies if set(srcs) == {"pyproject.toml", "constraints.txt"})
    deps_run = next(i for i, args in runs if "-c constraints.txt" in args and "pip install" in args)
    code_run = next(i for i, args in runs if "--no-deps" in args)
    assert deps_copy < deps_run < first_code < code_run, steps
    # only the two files the dependency list comes from are in the context of the dependency layer
    assert all(set(srcs) <= {"pyproject.toml", "constraints.txt"} for i, srcs in copies if i < deps_run)
    assert "pyproject.toml" in steps[deps_run][1]  # the list is read from pyproject.toml, not written twice
    assert re.search(r"pip install [^&]*--no-deps [^&]*\"\.(\[[^\]]*\])?\"", steps[code_run][1])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_builds_without_decord_where_it_has_no_wheel(dockerfile):
    text = dockerfile.read_text()
    assert "import bigsister_ray" in text
    imported = {name.strip() for names in re.findall(r"(?<!from )\bimport ([\w., ]+)", text) for name in names.split(",")}
    assert "decord" not in imported, "the image check must not require decord"


def _ignored(patterns: list[str], path: str) -> bool:
    """Docker's rule, enough for these patterns: the last matching pattern wins; ``**/`` matches any depth."""
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        candidates = [pat, pat.removeprefix("**/")] if pat.startswith("**/") else [pat]
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        hit = any(fnmatch.fnmatch(pre, c) for c in candidates for pre in prefixes) or (
            pat.startswith("**/") and any(fnmatch.fnmatch(p, pat[3:]) for p in parts))
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_small_and_the_copied_files_in():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for path in (".git/HEAD", "tests/unit/test_images.py", "tests/data/clip.mp4", "runs/r1/model.pt", "media/cam.mp4",
                 "journal/shard-0.jsonl", "bigsister_ray/__pycache__/cli.cpython-311.pyc", "best/model.pt",
                 "bigsister-demo/bigsister.db", "deploy/bigsister.env", "deploy/secrets/db_password",
                 "bigsister_ray.egg-info/PKG-INFO"):
        assert _ignored(patterns, path), f".dockerignore lets {path} into the build context"
    for dockerfile in DOCKERFILES:
        for word, args in _instructions(dockerfile):
            if word == "COPY":
                for src in _copied(args):
                    assert not _ignored(patterns, src), f"{dockerfile.name} copies {src}, which .dockerignore drops"
    assert not _ignored(patterns, "bigsister_ray/cli.py") and not _ignored(patterns, "deploy/serve_config.yaml")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())


def test_compose_has_the_database_and_the_app(compose):
    services = compose["services"]
    assert set(services) == {"db", "app"}
    db = services["db"]
    assert re.fullmatch(r"postgres:15(\.\d+)*(-\w+)?", db["image"])
    assert any(v.split(":")[0] in compose["volumes"] and v.endswith("/var/lib/postgresql/data") for v in db["volumes"])
    health = db["healthcheck"]
    assert "pg_isready" in " ".join(health["test"]) and health["retries"] >= 1
    assert "POSTGRES_PASSWORD" not in db.get("environment", {}), "the password comes from a secret file"
    assert db["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")


def test_compose_app_waits_for_a_healthy_database_and_takes_its_url_from_outside(compose):
    app = compose["services"]["app"]
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["command"][:2] == ["bigsister", "serve"]
    environment = app.get("environment", {})
    assert "BIGSISTER_DATABASE__URL" not in environment, "the database URL (with its password) must not be literal"
    env_files = [e["path"] if isinstance(e, dict) else e for e in app.get("env_file", [])]
    from_secret = any("DATABASE" in str(s).upper() for s in app.get("secrets", []))
    assert env_files or from_secret
    text = (REPO / "deploy" / "compose.yaml").read_text()
    literal = [ln for ln in text.splitlines()
               if re.search(r"postgres(ql)?(\+\w+)?://", ln) and not ln.lstrip().startswith("#")]
    assert not literal, f"a database URL written in compose.yaml: {literal}"
    for secret in compose.get("secrets", {}).values():
        assert "file" in secret or "environment" in secret


def test_compose_publishes_the_api_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert "127.0.0.1:8000:8000" in compose["services"]["app"]["ports"]
    assert "ports" not in compose["services"]["db"], "the database is reached on the compose network only"


def test_compose_keeps_media_and_journal_on_volumes(compose):
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["app"]["volumes"]}
    for folder in ("media", "journal"):  # serve.streams.media_root and serve.shards.journal_dir, relative to WORKDIR
        assert mounts.get(f"{IMAGE_ROOT}/{folder}") in compose["volumes"], f"{folder} is not on a named volume"
    assert compose["services"]["app"]["build"]["dockerfile"] in {"deploy/Dockerfile.cpu", "deploy/Dockerfile.cuda"}
