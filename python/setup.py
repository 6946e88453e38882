"""Build steps pyproject.toml cannot say: the version comes from the source
tree's VERSION file, and the protobuf messages are generated at build time
with protoc (Debian's protobuf-compiler) from proto/amber.proto into the
built package as amber/amber_pb2.py, plus amber/amber_pb2_grpc.py when
grpc_python_plugin (protobuf-compiler-grpc) is installed. Nothing is
generated at import time.

The .proto and VERSION are looked up next to this file (an sdist carries
copies) and then in the source tree above it; $AMBER_PROTO overrides."""
import os
import re
import shutil
import subprocess
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))


def _find(name, *rel):
    for d in (HERE, os.path.dirname(HERE)):
        p = os.path.join(d, *rel, name) if rel else os.path.join(d, name)
        if os.path.exists(p):
            return p
    return None


def version():
    p = _find("VERSION")
    if not p:
        raise SystemExit("amber: VERSION not found next to setup.py or in the source tree")
    with open(p) as f:
        return f.read().strip()


def proto():
    p = os.environ.get("AMBER_PROTO") or _find("amber.proto", "proto")
    if not p or not os.path.exists(p):
        raise SystemExit("amber: proto/amber.proto not found (set AMBER_PROTO)")
    return p


def generate(outdir):
    """protoc --python_out (and the gRPC stubs) into outdir, package-relative."""
    src = proto()
    protoc = shutil.which("protoc")
    if not protoc:
        raise SystemExit("amber: protoc not found (apt-get install protobuf-compiler)")
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        argv = [protoc, "--proto_path", os.path.dirname(src), "--python_out", tmp]
        plugin = shutil.which("grpc_python_plugin")
        if plugin:
            argv += ["--plugin=protoc-gen-grpc_python=" + plugin, "--grpc_python_out", tmp]
        subprocess.run(argv + [src], check=True)
        for name in ("amber_pb2.py", "amber_pb2_grpc.py"):
            p = os.path.join(tmp, name)
            if not os.path.exists(p):
                continue
            with open(p) as f:
                text = f.read()
            # The stubs import the messages as a top-level module.
            text = re.sub(r"^import amber_pb2 as", "from . import amber_pb2 as", text, flags=re.M)
            with open(os.path.join(outdir, name), "w") as f:
                f.write(text)


class BuildPy(build_py):
    def run(self):
        super().run()
        generate(os.path.join(self.build_lib, "amber"))


class Sdist(sdist):
    """An sdist builds without the source tree: carry VERSION and the proto."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        shutil.copy(_find("VERSION"), os.path.join(base_dir, "VERSION"))
        os.makedirs(os.path.join(base_dir, "proto"), exist_ok=True)
        shutil.copy(proto(), os.path.join(base_dir, "proto", "amber.proto"))


setup(version=version(), cmdclass={"build_py": BuildPy, "sdist": Sdist})
