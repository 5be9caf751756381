"""`picket explain` as users run it: words, JSON, exit codes and error messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.cli import main

ROOT = Path(__file__).parents[2]
THREE_TIER = str(ROOT / "examples" / "01-three-tier")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_denied_says_who_isolates_and_that_no_rule_admits(capsys):
    code, out, _ = run(
        capsys,
        "explain",
        "-f",
        THREE_TIER,
        "--from",
        "shop/frontend",
        "--to",
        "shop/database",
        "--port",
        "5432",
    )
    assert code == 1
    assert out.splitlines()[0] == (
        "denied: shop/database is isolated for ingress by shop/database-from-backend; "
        "no ingress rule of [shop/database-from-backend] admits shop/frontend on 5432/TCP"
    )
    assert (
        "near miss: shop/database-from-backend spec.ingress[0] admits 5432/TCP but not "
        "from shop/frontend" in out
    )


def test_allowed_names_the_admitting_rule(capsys):
    code, out, _ = run(
        capsys,
        "explain",
        "-f",
        THREE_TIER,
        "--from",
        "shop/backend",
        "--to",
        "shop/database",
        "--port",
        "5432/tcp",
    )
    assert code == 0
    assert out.startswith("allowed: shop/backend -> shop/database on 5432/TCP")
    assert "shop/database-from-backend spec.ingress[0] admits shop/backend" in out
    assert "shop/backend is not isolated for egress" in out


def test_json_output(capsys):
    code, out, _ = run(
        capsys,
        "explain",
        "-f",
        THREE_TIER,
        "--from",
        "shop/frontend",
        "--to",
        "shop/backend",
        "--port",
        "8080",
        "-o",
        "json",
    )
    doc = json.loads(out)
    assert code == 0 and doc["allowed"] is True
    assert doc["ingress"]["allowedBy"] == [
        {"policy": "shop/backend-from-frontend", "rule": "spec.ingress[0]"}
    ]
    assert doc["egress"]["isolated"] is False
    assert (doc["from"], doc["to"], doc["port"], doc["protocol"]) == (
        "shop/frontend",
        "shop/backend",
        8080,
        "TCP",
    )


def test_ip_endpoints(capsys):
    folder = str(ROOT / "examples" / "04-ipblock-one-address")
    assert (
        run(
            capsys,
            "explain",
            "-f",
            folder,
            "--from",
            "198.19.200.7",
            "--to",
            "billing/api",
            "--port",
            "443",
        )[0]
        == 0
    )
    code, out, _ = run(
        capsys,
        "explain",
        "-f",
        folder,
        "--from",
        "198.19.200.9",
        "--to",
        "billing/api",
        "--port",
        "443",
    )
    assert code == 1
    assert out.splitlines()[0].endswith(
        "no ingress rule of [billing/api-from-one-address] admits 198.19.200.9 on 443/TCP"
    )
    assert "198.19.200.9 is not a pod under NetworkPolicy: no egress policy applies" in out


def test_matrix_json_has_the_lab_shape(capsys):
    code, out, _ = run(
        capsys,
        "explain",
        "-f",
        THREE_TIER,
        "--matrix",
        "--namespaces",
        "shop",
        "--port",
        "5432",
        "-o",
        "json",
    )
    doc = json.loads(out)
    assert code == 0
    assert set(doc) == {"port", "protocol", "results"}
    assert (doc["port"], doc["protocol"]) == (5432, "TCP")
    assert doc["results"]["shop/backend"] == {"shop/database": True, "shop/frontend": True}
    assert doc["results"]["shop/frontend"]["shop/database"] is False
    assert all(src not in row for src, row in doc["results"].items())


def test_matrix_text(capsys):
    code, out, _ = run(capsys, "explain", "-f", THREE_TIER, "--matrix", "--port", "5432")
    assert code == 0
    assert "shop/frontend X            X             -" in out


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


BAD_POLICY = """\
apiVersion: v1
kind: Namespace
metadata: {name: y}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-db, namespace: y}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 5432, endPort: 5000}]
"""


def test_bad_manifest_names_file_object_and_field(capsys, tmp_path):
    path = write(tmp_path, BAD_POLICY)
    code, out, err = run(
        capsys, "explain", "-f", path, "--from", "1.2.3.4", "--to", "y/x", "--port", "80"
    )
    assert code == 2 and out == ""
    assert err.strip() == (
        f"picket explain: {path} (document 2): NetworkPolicy y/allow-db is invalid: "
        "spec.ingress[0].ports[0].endPort: Invalid value: 5000: must be greater than or "
        "equal to `port`"
    )


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        pytest.param(
            "a: [b", ["--from", "1.2.3.4", "--to", "1.2.3.5"], "cannot read", id="yaml-syntax"
        ),
        pytest.param(
            "- just\n- a list\n",
            ["--from", "1.2.3.4", "--to", "1.2.3.5"],
            "a manifest must be an object",
            id="not-an-object",
        ),
        pytest.param(
            "kind: Namespace\napiVersion: v1\nmetadata: {name: y}\n",
            ["--from", "y/nope", "--to", "1.2.3.5"],
            "no pod 'y/nope'",
            id="unknown-pod",
        ),
        pytest.param(
            "kind: Namespace\napiVersion: v1\nmetadata: {name: y}\n",
            ["--from", "1.2.3.4", "--to", "1.2.3.5", "--port", "http"],
            "port 'http' is not a number",
            id="bad-port",
        ),
        pytest.param(
            "kind: Namespace\napiVersion: v1\nmetadata: {name: y}\n",
            ["--from", "1.2.3.4", "--to", "1.2.3.5", "--port", "80/ICMP"],
            "protocol 'ICMP'",
            id="bad-protocol",
        ),
        pytest.param(
            "kind: Namespace\napiVersion: v1\nmetadata: {name: y}\n---\n"
            "kind: Namespace\napiVersion: v1\nmetadata: {name: y}\n",
            ["--from", "1.2.3.4", "--to", "1.2.3.5"],
            "already defined",
            id="duplicate",
        ),
    ],
)
def test_bad_input_exits_2(capsys, tmp_path, text, args, message):
    path = write(tmp_path, text)
    if "--port" not in args:
        args = [*args, "--port", "80"]
    code, _, err = run(capsys, "explain", "-f", path, *args)
    assert code == 2
    assert message in err


def test_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "explain", "-f", str(tmp_path / "nope"), "--matrix", "--port", "80")
    assert code == 2 and "no such file or directory" in err


def test_ignored_kinds_are_noted(capsys, tmp_path):
    path = write(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n")
    code, _, err = run(capsys, "explain", "-f", path, "--matrix", "--port", "80")
    assert code == 0 and "ConfigMap has no effect on NetworkPolicy" in err


def test_list_documents_are_read(capsys, tmp_path):
    items = BAD_POLICY.replace("endPort: 5000", "endPort: 5433")
    docs = list(yaml.safe_load_all(items))
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    code, out, _ = run(
        capsys, "explain", "-f", str(path), "--from", "1.2.3.4", "--to", "1.2.3.5", "--port", "80"
    )
    assert code == 0 and out.startswith("allowed")


def test_console_script_exit_status():
    exe = shutil.which("picket", path=str(Path(sys.executable).parent))
    assert exe, "the picket console script is installed in the venv"
    proc = subprocess.run(
        [
            exe,
            "explain",
            "-f",
            THREE_TIER,
            "--from",
            "shop/frontend",
            "--to",
            "shop/database",
            "--port",
            "5432",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout.startswith("denied:")
