#!/usr/bin/python3
"""Checks the Dockerfile without a Docker engine: its stages and build arguments, that
every TORCH value has its LibTorch and runtime stages, that every COPY source exists (in
the build context, not excluded by .dockerignore, or made by an earlier stage), that the
image runs as a non-root user, that every runtime package exists in Debian 12 and that they
cover every shared library the built binaries link (readelf NEEDED, mapped with dpkg -S),
and that the default command uses flags the server accepts.

Usage: check_dockerfile.py REPO_DIR BIN_DIR"""
import fnmatch
import pathlib
import re
import shlex
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from binary_flags import accepted_flags, flag_name  # noqa: E402

BINARIES = ("ompq-server", "ompq-worker", "ompqctl")
# In every debian:12 image (Essential, or needed by apt itself).
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6"}
errors = []


def fail(message):
    errors.append(message)
    print("FAIL:", message)


def instructions(text):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    result, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        keyword, _, rest = current.strip().partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    return result


def apt_packages(run):
    """Packages an `apt-get install` in a RUN line names."""
    packages = []
    for command in re.split(r"&&|;", run):
        words = shlex.split(command)
        if words[:2] == ["apt-get", "install"]:
            packages += [w for w in words[2:] if not w.startswith("-")]
    return packages


def installed_packages(packages):
    result = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *packages],
                            capture_output=True, text=True)
    return {line.split()[0] for line in result.stdout.splitlines() if line.endswith("install ok installed")}


def package_exists(package, installed):
    return package in installed or subprocess.run(["apt-cache", "show", package], capture_output=True).returncode == 0


def path_variants(path):
    """The spellings dpkg may have recorded a library under (merged /usr, symlinks)."""
    variants = set()
    for p in (path, str(pathlib.Path(path).resolve())):
        variants |= {p, re.sub(r"^/usr/lib/", "/lib/", p), re.sub(r"^/lib/", "/usr/lib/", p)}
    return variants


def linked_packages(binaries):
    """{(binary, library): Debian package or None} for the libraries each binary links
    directly (readelf NEEDED), resolved by ldd and mapped with one dpkg -S call."""
    links = {}
    for binary in binaries:
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", subprocess.run(
            ["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout)
        resolved = dict(re.findall(r"^\s*(\S+) => (/\S+)", subprocess.run(
            ["ldd", str(binary)], capture_output=True, text=True, check=True).stdout, re.M))
        for library in needed:
            links[(binary.name, library)] = path_variants(resolved[library]) if library in resolved else set()
    paths = sorted(set().union(*links.values()))
    owners = {}
    for line in subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True).stdout.splitlines():
        package, _, path = line.partition(": ")
        owners[path] = package.split(":")[0]
    return {key: next((owners[v] for v in sorted(variants) if v in owners), None)
            for key, variants in links.items()}


def dockerignored(relative, patterns):
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = relative.split("/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), pattern) or fnmatch.fnmatch("/".join(parts[:i]), "*/" + pattern.removeprefix("**/"))
               for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def main():
    repo, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    steps = instructions((repo / "Dockerfile").read_text())
    ignore = [l.strip() for l in (repo / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]

    global_args = {}
    stages = []  # {"name", "base", "steps", "args"}
    for keyword, rest in steps:
        if keyword == "FROM":
            words = rest.split()
            stages.append({"name": words[2] if len(words) == 3 and words[1].upper() == "AS" else None,
                           "base": words[0], "steps": [], "args": {}})
        elif not stages:
            if keyword != "ARG":
                fail(f"only ARG may come before the first FROM, not {keyword}")
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            stages[-1]["steps"].append((keyword, rest))
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                stages[-1]["args"][name] = default
    names = [s["name"] for s in stages]
    print(f"{len(stages)} stages: {names}; build arguments before FROM: {global_args}")
    if global_args.get("TORCH") != "debian":
        fail("ARG TORCH must default to debian (CPU)")

    # Each TORCH value: a torch-VALUE stage (LibTorch) and a runtime-VALUE stage.
    torch_values = [n.removeprefix("torch-") for n in names if n and n.startswith("torch-")]
    if sorted(torch_values) != ["cuda", "debian"]:
        fail(f"expected torch-debian and torch-cuda stages, found {torch_values}")
    for value in torch_values:
        if f"runtime-{value}" not in names:
            fail(f"TORCH={value} has no runtime-{value} stage")
    cuda = stages[names.index("torch-cuda")] if "torch-cuda" in names else {"args": {}, "steps": []}
    if not cuda["args"].get("LIBTORCH_URL", "").startswith("https://download.pytorch.org/libtorch/"):
        fail("the torch-cuda stage needs ARG LIBTORCH_URL with a default from download.pytorch.org")
    if not any(k == "ENV" and "/opt/libtorch" in r and "CMAKE_PREFIX_PATH" in r for k, r in cuda["steps"]):
        fail("the torch-cuda stage must point CMAKE_PREFIX_PATH at /opt/libtorch")

    for index, stage in enumerate(stages):
        base = stage["base"]
        if "${TORCH}" in base:
            for value in torch_values:
                if base.replace("${TORCH}", value) not in names[:index]:
                    fail(f"stage {stage['name']}: FROM {base} with TORCH={value} names no earlier stage")
        elif base not in names[:index] and base != "debian:12":
            fail(f"stage {stage['name']}: base {base} is neither debian:12 nor an earlier stage")
        for keyword, rest in stage["steps"]:
            if keyword == "ADD":
                fail(f"stage {stage['name']}: use COPY (or curl in RUN), not ADD")
            if keyword != "COPY":
                continue
            words = rest.split()
            options = [w for w in words if w.startswith("--")]
            sources = [w for w in words if not w.startswith("--")][:-1]
            source_stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
            if source_stage is None:
                for source in sources:
                    if source == ".":
                        continue
                    if not (repo / source).exists() or dockerignored(source.rstrip("/"), ignore):
                        fail(f"stage {stage['name']}: COPY {source} is not in the build context")
            elif source_stage not in names[:index]:
                fail(f"stage {stage['name']}: COPY --from={source_stage} names no earlier stage")
            elif source_stage == "build":
                build_runs = " ".join(r for k, r in stages[names.index("build")]["steps"] if k == "RUN")
                for source in sources:
                    binary = pathlib.PurePosixPath(source).name
                    if not source.startswith("/src/build/bin/") or binary not in build_runs or binary not in BINARIES:
                        fail(f"COPY --from=build {source}: not a binary the build stage builds")
            else:
                producer = " ".join(r for k, r in stages[names.index(source_stage)]["steps"])
                for source in sources:
                    if source.split("/")[2] not in producer:
                        fail(f"COPY --from={source_stage} {source}: that stage does not create it")
    build_base = stages[0]
    runs = " ".join(r for k, r in build_base["steps"] if k == "RUN")
    if "scripts/install-deps.sh" not in runs or not any(
            k == "RUN" and "scripts/build.sh" in r for k, r in stages[names.index("build")]["steps"]):
        fail("the build stages must use scripts/install-deps.sh and scripts/build.sh")
    # build.sh hands its arguments to `cmake --build`, which takes target names only after
    # --target (a bare name fails the image build: "Unknown argument ompq-server").
    for k, r in stages[names.index("build")]["steps"]:
        if k != "RUN" or "scripts/build.sh" not in r:
            continue
        for command in re.split(r"&&|;", r):
            words = shlex.split(command)
            if "scripts/build.sh" not in words:
                continue
            args = words[words.index("scripts/build.sh") + 1:]
            targets = args[args.index("--target") + 1:] if "--target" in args else []
            for word in args:
                if not word.startswith("-") and word not in targets:
                    fail(f"scripts/build.sh {' '.join(args)}: cmake --build takes '{word}' "
                         "only after --target")
            for target in targets:
                if target not in BINARIES:
                    fail(f"scripts/build.sh --target {target}: not one of {BINARIES}")

    final = stages[-1]
    user = [r for k, r in final["steps"] if k == "USER"]
    if not user or not re.fullmatch(r"[1-9]\d*(:\d+)?", user[-1]):
        fail(f"the final stage must set a numeric non-root USER, got {user}")
    exposed = {p for k, r in final["steps"] if k == "EXPOSE" for p in r.split()}
    if not {"50051", "9464"} <= exposed:
        fail(f"EXPOSE must include 50051 and 9464, got {sorted(exposed)}")
    cmd = [r for k, r in final["steps"] if k == "CMD"]
    import json
    command = json.loads(cmd[-1]) if cmd else []
    if not command or command[0] != "ompq-server":
        fail(f"CMD should start ompq-server, got {command}")
    else:
        flags = accepted_flags(bin_dir / "ompq-server")
        for arg in command[1:]:
            if flag_name(arg) and flag_name(arg) not in flags:
                fail(f"CMD uses --{flag_name(arg)}, which ompq-server does not accept")

    # Runtime packages: exist in Debian 12 and cover what the binaries link.
    runtime = {}
    for stage in stages:
        if stage["name"] and stage["name"].startswith("runtime"):
            runtime[stage["name"]] = [p for k, r in stage["steps"] if k == "RUN" for p in apt_packages(r)]
    installed = installed_packages([p for packages in runtime.values() for p in packages])
    for stage_name, packages in runtime.items():
        for package in packages:
            if not package_exists(package, installed):
                fail(f"{stage_name}: package {package} is not in Debian (apt-cache show fails)")
    print(f"runtime packages: {runtime}")
    debian_runtime = set(runtime.get("runtime-base", [])) | set(runtime.get("runtime-debian", [])) | BASE_IMAGE_PACKAGES
    for (binary, library), package in linked_packages([bin_dir / b for b in BINARIES]).items():
        if package is None:
            fail(f"{binary}: {library} belongs to no Debian package")
        elif package not in debian_runtime:
            fail(f"{binary} links {library} from {package}, which the runtime stages do not install")
    if errors:
        raise SystemExit(f"{len(errors)} problem(s)")
    print("ok: the Dockerfile's stages, sources, user and runtime packages check out")


if __name__ == "__main__":
    main()
