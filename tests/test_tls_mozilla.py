"""sslyze's Mozilla "intermediate" check against the rendered production nginx, serving a certificate chain
from a test CA (tls.mode: files: a leaf for api.example.com and its intermediate, signed by a root that
exists only here, given to sslyze as the trust anchor). nginx and sslyze run together in a network
namespace with only loopback. The self-signed mode renders the same TLS settings; only the certificate
path differs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mfe_deploy.config import loader
from mfe_deploy.render import render
from tests.conftest import REPO, strong_secrets
from tests.tools import for_this_nginx, nginx_binary, nginx_in_namespace

SSLYZE = REPO / ".venv-checks" / "bin" / "sslyze"
DOMAIN = "api.example.com"  # production.yaml's
PORT = 443

if not SSLYZE.exists():
    if os.environ.get("MFE_REQUIRE_CHECKERS"):
        raise RuntimeError(f"{SSLYZE} is missing: run scripts/checks-venv")
    pytest.skip("no .venv-checks (scripts/checks-venv makes it)", allow_module_level=True)


def openssl(*argv: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, argv)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def ca_chain(folder: Path, name: str, ocsp: str | None = None) -> tuple[Path, Path]:
    """root -> intermediate -> leaf (ECDSA P-256, SHA-256, 90 days, SAN): the chain file holds the leaf and
    the intermediate, as a CA delivers it. `ocsp`: the responder the leaf names (authorityInfoAccess)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = folder / "ca.ext"
    ca_ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    leaf_ext = folder / "leaf.ext"
    leaf_ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{name}\n"
        + (f"authorityInfoAccess=OCSP;URI:{ocsp}\n" if ocsp else "")
    )
    root, mid, leaf = folder / "root", folder / "mid", folder / "leaf"
    root_ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-days",
        30,
        "-subj",
        "/CN=mfe test root",
        "-keyout",
        f"{root}.key",
        "-out",
        f"{root}.pem",
        *root_ext,
    )
    for cert, issuer, subject, days, ext in (
        (mid, root, "/CN=mfe test intermediate", 30, ca_ext),
        (leaf, mid, f"/CN={name}", 90, leaf_ext),
    ):
        openssl("req", *ec, "-subj", subject, "-keyout", f"{cert}.key", "-out", f"{cert}.csr")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{cert}.csr",
            "-CA",
            f"{issuer}.pem",
            "-CAkey",
            f"{issuer}.key",
            "-CAcreateserial",
            "-days",
            days,
            "-sha256",
            "-extfile",
            ext,
            "-out",
            f"{cert}.pem",
        )
    chain = folder / "chain.pem"
    chain.write_text(Path(f"{leaf}.pem").read_text() + Path(f"{mid}.pem").read_text())
    return chain, Path(f"{leaf}.key")


def production_nginx(tmp_path: Path, chain: tuple[Path, Path], script: str) -> str:
    """Production's nginx.conf (tls.mode files, this chain) in a loopback-only namespace where the domain is
    127.0.0.1, beside `script` (sh): what both printed."""
    loaded, secrets = loader.load_with_secrets(REPO, "production", environ=strong_secrets())
    assert loaded.env.nginx.tls.mode == "files" and loaded.env.nginx.https_port == PORT
    files = {name: file.text for name, file in render(for_this_nginx(loaded.env), secrets).files.items()}
    done = nginx_in_namespace(
        files["nginx/nginx.conf"],
        tmp_path / "ns",
        {"api-gateway": "127.0.0.1", DOMAIN: "127.0.0.1"},
        ["sh", "-c", script],
        network=True,
        bundle=files,
        certificate=chain,
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def test_production_nginx_passes_sslyze_mozilla_intermediate(tmp_path: Path) -> None:
    script = (
        f'"{nginx_binary()}" -c /etc/nginx/nginx.conf -e stderr && sleep 0.5 && '
        f'"{SSLYZE}" --mozilla_config=intermediate --certinfo_ca_file "{tmp_path / "root.pem"}" '
        f"{DOMAIN}:{PORT}{{127.0.0.1}}; code=$?; "
        f'"{nginx_binary()}" -c /etc/nginx/nginx.conf -e stderr -s quit; exit $code'
    )
    out = production_nginx(tmp_path, ca_chain(tmp_path, DOMAIN), script)
    assert 'Checking results against Mozilla\'s "intermediate" configuration' in out, out
    assert out.startswith("exit 0\n") and f"{DOMAIN}:{PORT}: OK - Compliant." in out, out
    assert "Received Chain:                    api.example.com --> mfe test intermediate" in out, out


def test_files_mode_staples_the_responders_answer(tmp_path: Path) -> None:
    """The CA's OCSP responder (openssl ocsp, on the namespace's loopback) says the leaf is good; nginx
    fetches that answer after a worker's first handshake and sends it in that worker's next ones."""
    from cryptography import x509

    chain = ca_chain(tmp_path, DOMAIN, ocsp="http://127.0.0.1:8888")
    leaf = x509.load_pem_x509_certificate((tmp_path / "leaf.pem").read_bytes())
    expires = leaf.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    (tmp_path / "index.txt").write_text(f"V\t{expires}\t\t{leaf.serial_number:X}\tunknown\t/CN={DOMAIN}\n")
    mid, hello = tmp_path / "mid", f"-connect 127.0.0.1:{PORT} -servername {DOMAIN} -status"
    script = (
        f'openssl ocsp -index "{tmp_path / "index.txt"}" -port 8888 -rsigner "{mid}.pem" -rkey "{mid}.key" '
        f'-CA "{mid}.pem" -nrequest 6 >"{tmp_path / "ocsp.log"}" 2>&1 & OCSP=$!; '
        f'"{nginx_binary()}" -c /etc/nginx/nginx.conf -e stderr && sleep 0.5 && '
        # Each worker fetches on its first handshake and staples from then on: a few handshakes in a row.
        f'for i in 1 2 3 4 5 6; do openssl s_client {hello} -CAfile "{tmp_path / "root.pem"}" </dev/null 2>&1; '
        f"sleep 0.5; done; "
        f'"{nginx_binary()}" -c /etc/nginx/nginx.conf -e stderr -s quit; kill "$OCSP" 2>/dev/null; true'
    )
    out = production_nginx(tmp_path, chain, script)
    assert "OCSP Response Status: successful (0x0)" in out, out
    assert "Cert Status: good" in out, out
    assert "Verify return code: 0 (ok)" in out, out
