"""The PEP 517 backend of `pip install .`: builds the bptt module with CMake and packs it as a wheel.

Only the standard library: no setuptools, no network. CMake configures the source tree in a build
directory (a temporary one, or `--config-settings build-dir=DIR`, which is configured once and
then rebuilt, so that a second install is quick), builds the target bptt_python (with ccache when
it is installed) and the module goes into a wheel with its metadata from pyproject.toml and the
version from CMakeLists.txt. The module is compiled against the interpreter that runs pip and
Debian's pybind11, NumPy and libraries, which must be installed (.ci/install-deps); it uses the
interpreter's own site-packages, not pip's empty build environment, to find NumPy.

    pip install .                                   # or: pip install --user . / in a venv
    pip install . --config-settings build-dir=build-py
"""
import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _version():
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        match = re.search(r"project\(bptt\s+VERSION\s+([0-9.]+)", f.read())
    if not match:
        raise RuntimeError("CMakeLists.txt: no project(bptt VERSION ...)")
    return match.group(1)


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _metadata():
    p = _project()
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {p['name']}",
        f"Version: {_version()}",
        f"Summary: {p['description']}",
        f"Requires-Python: {p['requires-python']}",
    ]
    lines += [f"Requires-Dist: {d}" for d in p.get("dependencies", [])]
    return "\n".join(lines) + "\n"


def _tag():
    interpreter = f"cp{sys.version_info.major}{sys.version_info.minor}"
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{interpreter}-{interpreter}-{platform}"


def _dist_info():
    return f"bptt-{_version()}.dist-info"


def _environment():
    """The environment for CMake: without pip's build isolation, which hides site-packages."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONNOUSERSITE"):
        env.pop(key, None)
    return env


def _run(command, env):
    print("bptt_build:", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, env=env, stdout=sys.stderr)


def _build_module(build_dir):
    """Configures (once) and builds the module in build_dir; returns its path."""
    env = _environment()
    if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        configure = ["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release", "-DBPTT_PYTHON=ON",
                     "-DBPTT_BUILD_TESTS=OFF", "-DBPTT_BUILD_BENCH=OFF", f"-DPython_EXECUTABLE={sys.executable}"]
        if shutil.which("ccache"):
            configure += ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache", "-DCMAKE_C_COMPILER_LAUNCHER=ccache"]
        _run(configure, env)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    _run(["cmake", "--build", build_dir, "--target", "bptt_python", "-j", jobs], env)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    module = os.path.join(build_dir, "python", "bptt" + suffix)
    if not os.path.exists(module):
        raise RuntimeError(f"the build made no {module}: is it configured for this Python ({sys.executable})?")
    return module


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


# PEP 517 hooks.

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, _dist_info())
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata())
    return _dist_info()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    settings = config_settings or {}
    build_dir = settings.get("build-dir")
    scratch = None
    if not build_dir:
        scratch = tempfile.mkdtemp(prefix="bptt-wheel-")
        build_dir = scratch
    try:
        module = _build_module(os.path.abspath(build_dir))
        with open(module, "rb") as f:
            module_bytes = f.read()
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    info = _dist_info()
    files = {
        os.path.basename(module): module_bytes,
        f"{info}/METADATA": _metadata().encode(),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: bptt_build\nRoot-Is-Purelib: false\nTag: {_tag()}\n".encode(),
    }
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    name = f"bptt-{_version()}-{_tag()}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return name


def build_sdist(sdist_directory, config_settings=None):
    """The source tree as bptt-VERSION.tar.gz, without build output, runs and caches."""
    base = f"bptt-{_version()}"
    name = f"{base}.tar.gz"
    skip = re.compile(r"^(build[^/]*|models|\.git|corpora/downloads)(/|$)|(^|/)__pycache__(/|$)")
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for folder, dirs, files in os.walk(ROOT):
            rel = os.path.relpath(folder, ROOT)
            rel = "" if rel == "." else rel + "/"
            dirs[:] = sorted(d for d in dirs if not skip.search(rel + d))
            for f in sorted(files):
                if not skip.search(rel + f) and not f.endswith(".safetensors"):
                    tar.add(os.path.join(folder, f), arcname=f"{base}/{rel}{f}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata().encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return name
