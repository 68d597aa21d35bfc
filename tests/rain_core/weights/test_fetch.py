"""`fetch-weights` against a fake Hub and a local HTTP server: nothing here reaches the network.

The fake Hub is a directory laid out `<repo_id>/<revision>/<path>` with tiny files (the
`tiny` profile's checkpoints and small VAE/CLIP folders), served by monkeypatching the
`hf_hub_download` our module imported. TAESDV comes from an `http.server` on 127.0.0.1 that
honours Range requests and logs every request, so resuming can be checked byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import rain_core.weights.fetch as fetch_module
from cli import main
from rain_core.config import tiny_config
from rain_core.models import TAESDV, PoseGuider
from rain_core.stream.components import RainComponents
from rain_core.weights import profiles
from rain_core.weights.checkpoints import WeightsError
from rain_core.weights.fetch import fetch_weights, git_blob_sha1
from rain_core.weights.loading import check_weights_dir, load_components
from rain_core.weights.lock import LOCK_NAME
from rain_core.weights.manifest import OFFICIAL_WEIGHTS, TAESDV_COMMIT, WeightsManifest
from rain_core.weights.profiles import resolve_profile

HUB_FILES = [target for source in OFFICIAL_WEIGHTS.hub for _, target in source.targets()]


# Fixtures: a network guard, the fake Hub, the local HTTP server ---------------------------

@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection to an address other than loopback fails the test."""
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test tried to reach the network: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _torch_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def taesdv_bytes() -> bytes:
    """A checkpoint with the real 134-key TAESDV layout."""
    torch.manual_seed(0)
    return _torch_bytes(TAESDV().state_dict())


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("hub")
    config = tiny_config()
    networks = dict(RainComponents.build(config).networks())
    rain = root / "Pscgylotti/RAIN-v0.1/main"
    rain.mkdir(parents=True)
    for name, file in (("reference_unet", "reference_unet"), ("denoising_unet", "motion_unet"),
                       ("pose_guider", "pose_guider")):
        torch.save({k: v.half() for k, v in networks[name].state_dict().items()}, rain / f"{file}.pth")
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4, sample_size=32).save_pretrained(
        root / "stabilityai/sd-vae-ft-mse/main"
    )
    clip_dir = root / "lambdalabs/sd-image-variations-diffusers/main/image_encoder"
    clip_config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   image_size=32, patch_size=8, projection_dim=config.clip_embed_dim)
    clip_config.save_pretrained(clip_dir)
    torch.save(CLIPVisionModelWithProjection(clip_config).state_dict(), clip_dir / "pytorch_model.bin")
    return root


@pytest.fixture
def hub_calls(fake_hub: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """Serve `hf_hub_download(local_dir=...)` from the fake Hub; the list logs every call."""
    from huggingface_hub.errors import EntryNotFoundError

    calls: list[tuple[str, str, str]] = []

    def fake_download(repo_id: str, filename: str, *, revision: str, local_dir, **_) -> str:
        calls.append((repo_id, revision, filename))
        source = fake_hub / repo_id / revision / filename
        if not source.is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}@{revision}")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    monkeypatch.setattr(fetch_module, "hf_hub_download", fake_download)
    return calls


class _FileServer(ThreadingHTTPServer):
    files: dict[str, bytes]
    # One dict per request: path, the Range header received, bytes sent.
    requests: list[dict]
    # Bytes to send before hanging up on the next request (an interrupted download).
    cut_after: int | None = None


class _RangeHandler(BaseHTTPRequestHandler):
    server: _FileServer

    def do_GET(self) -> None:
        data = self.server.files.get(self.path)
        asked = self.headers.get("Range")
        record = {"path": self.path, "range": asked, "sent": 0}
        self.server.requests.append(record)
        if data is None:
            self.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1)) if asked else 0
        if start >= len(data) and asked:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut_after is not None:
            body, self.server.cut_after = body[: self.server.cut_after], None
        self.wfile.write(body)
        record["sent"] = len(body)

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def file_server(taesdv_bytes: bytes) -> Iterator[_FileServer]:
    server = _FileServer(("127.0.0.1", 0), _RangeHandler)
    server.files = {"/taesdv.pth": taesdv_bytes}
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _manifest(server: _FileServer, blob: str | None) -> WeightsManifest:
    """The official manifest with TAESDV served by the local server."""
    (taesdv,) = OFFICIAL_WEIGHTS.urls
    url = f"http://127.0.0.1:{server.server_address[1]}/taesdv.pth"
    return dataclasses.replace(OFFICIAL_WEIGHTS, urls=(dataclasses.replace(taesdv, url=url, git_blob_sha1=blob),))


@pytest.fixture
def manifest(file_server: _FileServer, taesdv_bytes: bytes) -> WeightsManifest:
    return _manifest(file_server, _blob_id(taesdv_bytes))


# Fetching ------------------------------------------------------------------------------

def test_full_fetch_into_an_empty_dir(tmp_path, hub_calls, file_server, manifest, taesdv_bytes):
    weights = tmp_path / "weights"
    results = fetch_weights(weights, manifest)

    assert [(r.target, r.action) for r in results] == [(t, "fetched") for t in HUB_FILES + ["taesdv.pth"]]
    assert hub_calls == [(s.repo_id, s.revision, name) for s in OFFICIAL_WEIGHTS.hub for name in s.files]
    assert file_server.requests == [{"path": "/taesdv.pth", "range": None, "sent": len(taesdv_bytes)}]
    assert (weights / "taesdv.pth").read_bytes() == taesdv_bytes
    assert not list(weights.rglob("*.part"))

    lock = json.loads((weights / LOCK_NAME).read_text())
    assert lock["format"] == 1
    assert sorted(lock["files"]) == sorted(HUB_FILES + ["taesdv.pth"])
    for target, entry in lock["files"].items():
        data = (weights / target).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert lock["files"]["motion_unet.pth"]["source"] == "hf://Pscgylotti/RAIN-v0.1@main/motion_unet.pth"
    assert lock["files"]["taesdv.pth"]["source"] == manifest.urls[0].url

    # The layout the loader expects (the fake Hub holds `tiny`-sized checkpoints).
    assert all(status.ok for status in check_weights_dir(tiny_config(), weights))
    components = load_components(tiny_config(), weights)
    assert components.vae is not None and components.image_encoder is not None
    assert resolve_profile("tiny", weights) == ("tiny", weights)


def test_second_run_verifies_and_downloads_nothing(tmp_path, hub_calls, file_server, manifest):
    fetch_weights(tmp_path, manifest)
    lock_before = (tmp_path / LOCK_NAME).read_text()
    hub_calls.clear()
    file_server.requests.clear()

    results = fetch_weights(tmp_path, manifest)

    assert {r.action for r in results} == {"verified"}
    assert hub_calls == [] and file_server.requests == []
    assert (tmp_path / LOCK_NAME).read_text() == lock_before


@pytest.mark.parametrize("target", ["motion_unet.pth", "image_encoder/pytorch_model.bin", "taesdv.pth"])
@pytest.mark.parametrize("damage, message", [("flip", "sha256"), ("truncate", "size")])
def test_a_changed_file_is_an_error_naming_it(tmp_path, hub_calls, manifest, target, damage, message):
    fetch_weights(tmp_path, manifest)
    path = tmp_path / target
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[-10:]
    path.write_bytes(bytes(data))
    hub_calls.clear()

    with pytest.raises(WeightsError, match=message) as info:
        fetch_weights(tmp_path, manifest)
    assert str(path) in str(info.value)
    assert "fetch-weights --dir" in str(info.value)
    assert hub_calls == [], "a damaged file must not be replaced silently"
    assert path.read_bytes() == bytes(data)


def test_a_missing_file_is_downloaded_again_and_checked_against_the_lock(tmp_path, hub_calls, manifest, fake_hub):
    fetch_weights(tmp_path, manifest)
    (tmp_path / "pose_guider.pth").unlink()
    hub_calls.clear()
    results = fetch_weights(tmp_path, manifest)
    assert [r.target for r in results if r.action == "fetched"] == ["pose_guider.pth"]
    assert hub_calls == [("Pscgylotti/RAIN-v0.1", "main", "pose_guider.pth")]

    # Upstream changed since the first download: the new bytes are refused, by name.
    (tmp_path / "pose_guider.pth").unlink()
    hub_file = fake_hub / "Pscgylotti/RAIN-v0.1/main/pose_guider.pth"
    original = hub_file.read_bytes()
    try:
        hub_file.write_bytes(_torch_bytes({"other": torch.zeros(3)}))
        with pytest.raises(WeightsError, match=r"pose_guider\.pth: size .* differs"):
            fetch_weights(tmp_path, manifest)
    finally:
        hub_file.write_bytes(original)


def test_a_newer_pin_in_the_manifest_replaces_the_file_and_its_record(tmp_path, hub_calls, file_server, manifest):
    fetch_weights(tmp_path, manifest)
    torch.manual_seed(1)
    newer = _torch_bytes(TAESDV().state_dict())
    file_server.files["/v2/taesdv.pth"] = newer
    (taesdv,) = manifest.urls
    moved = dataclasses.replace(taesdv, url=taesdv.url.replace("/taesdv.pth", "/v2/taesdv.pth"),
                                git_blob_sha1=_blob_id(newer))
    results = fetch_weights(tmp_path, dataclasses.replace(manifest, urls=(moved,)))

    assert [(r.target, r.action) for r in results if r.action == "fetched"] == [("taesdv.pth", "fetched")]
    assert (tmp_path / "taesdv.pth").read_bytes() == newer
    record = json.loads((tmp_path / LOCK_NAME).read_text())["files"]["taesdv.pth"]
    assert record["source"] == moved.url and record["sha256"] == hashlib.sha256(newer).hexdigest()


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path, hub_calls, file_server, manifest, taesdv_bytes):
    half = len(taesdv_bytes) // 2
    (tmp_path / "taesdv.pth.part").write_bytes(taesdv_bytes[:half])

    fetch_weights(tmp_path, manifest)

    assert file_server.requests == [
        {"path": "/taesdv.pth", "range": f"bytes={half}-", "sent": len(taesdv_bytes) - half}
    ]
    assert (tmp_path / "taesdv.pth").read_bytes() == taesdv_bytes
    assert not (tmp_path / "taesdv.pth.part").exists()


def test_a_dropped_connection_keeps_the_part_and_the_next_run_resumes(tmp_path, hub_calls, file_server, manifest,
                                                                      taesdv_bytes):
    file_server.cut_after = 1000
    resume = r"interrupted at 1000 of \d+ bytes; run again to resume from .*taesdv.pth.part"
    with pytest.raises(WeightsError, match=resume):
        fetch_weights(tmp_path, manifest)
    assert (tmp_path / "taesdv.pth.part").stat().st_size == 1000
    assert not (tmp_path / "taesdv.pth").exists()

    fetch_weights(tmp_path, manifest)
    assert file_server.requests[-1] == {"path": "/taesdv.pth", "range": "bytes=1000-",
                                        "sent": len(taesdv_bytes) - 1000}
    assert (tmp_path / "taesdv.pth").read_bytes() == taesdv_bytes


def test_a_part_that_is_already_whole_is_not_downloaded_again(tmp_path, hub_calls, file_server, manifest,
                                                              taesdv_bytes):
    (tmp_path / "taesdv.pth.part").write_bytes(taesdv_bytes)
    fetch_weights(tmp_path, manifest)
    assert file_server.requests == [{"path": "/taesdv.pth", "range": f"bytes={len(taesdv_bytes)}-", "sent": 0}]
    assert (tmp_path / "taesdv.pth").read_bytes() == taesdv_bytes


def test_a_taesdv_of_another_layout_is_refused_and_removed(tmp_path, hub_calls, file_server):
    other = _torch_bytes(PoseGuider().state_dict())
    file_server.files["/taesdv.pth"] = other
    # Pinned to these very bytes, so that the layout check is what refuses them.
    manifest = _manifest(file_server, _blob_id(other))

    with pytest.raises(WeightsError, match="refused, not a taesdv.pth of the layout") as info:
        fetch_weights(tmp_path, manifest)
    assert "does not fit TAESDV: missing keys: " in str(info.value)
    assert not (tmp_path / "taesdv.pth").exists() and not (tmp_path / "taesdv.pth.part").exists()
    assert "taesdv.pth" not in json.loads((tmp_path / LOCK_NAME).read_text())["files"]


def test_other_bytes_than_the_pinned_blob_are_refused_and_removed(tmp_path, hub_calls, file_server):
    manifest = _manifest(file_server, "0" * 40)
    with pytest.raises(WeightsError, match="not the pinned 0000000000"):
        fetch_weights(tmp_path, manifest)
    assert not (tmp_path / "taesdv.pth").exists() and not (tmp_path / "taesdv.pth.part").exists()


def test_a_hub_error_names_the_file(tmp_path, hub_calls, manifest, fake_hub, monkeypatch):
    source = OFFICIAL_WEIGHTS.hub[0]
    broken = dataclasses.replace(manifest, hub=(dataclasses.replace(source, revision="v9"),))
    with pytest.raises(WeightsError, match=r"hf://Pscgylotti/RAIN-v0.1@v9/reference_unet.pth: cannot download"):
        fetch_weights(tmp_path, broken)


def test_git_blob_id_is_gits(tmp_path, taesdv_bytes):
    path = tmp_path / "taesdv.pth"
    path.write_bytes(taesdv_bytes)
    assert git_blob_sha1(path) == _blob_id(taesdv_bytes)
    if shutil.which("git"):
        assert git_blob_sha1(path) == subprocess.check_output(["git", "hash-object", str(path)], text=True).strip()


def test_the_pinned_taesdv_url_names_one_commit():
    (taesdv,) = OFFICIAL_WEIGHTS.urls
    assert re.fullmatch(r"[0-9a-f]{40}", TAESDV_COMMIT)
    assert taesdv.url == f"https://raw.githubusercontent.com/madebyollin/taesdv/{TAESDV_COMMIT}/taesdv.pth"
    assert taesdv.component == "decoder" and taesdv.target == "taesdv.pth"


# The command line ----------------------------------------------------------------------

def _serve_cli_from(manifest: WeightsManifest, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rain-avatar fetch-weights` fetches the official manifest; here, with TAESDV served locally."""
    monkeypatch.setattr(fetch_module, "fetch_weights", lambda weights_dir: fetch_weights(weights_dir, manifest))


def test_cli_fetches_then_checks_the_directory_for_the_official_profile(tmp_path, hub_calls, manifest, capsys,
                                                                         monkeypatch):
    _serve_cli_from(manifest, monkeypatch)
    code = main(["fetch-weights", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"[fetched] {tmp_path / 'taesdv.pth'}" in out
    assert f"recorded in {tmp_path / LOCK_NAME}" in out
    # The fake Hub's checkpoints are `tiny`-sized: the final check refuses them for `official`.
    assert f"[ok] decoder: {tmp_path / 'taesdv.pth'}" in out
    assert f"[BAD] reference_unet: {tmp_path / 'reference_unet.pth'}: does not fit ReferenceUNet" in out
    assert code == 1


def test_cli_reports_a_damaged_file(tmp_path, hub_calls, manifest, capsys, monkeypatch):
    _serve_cli_from(manifest, monkeypatch)
    main(["fetch-weights", "--dir", str(tmp_path)])
    (tmp_path / "pose_guider.pth").write_bytes(b"junk")
    with pytest.raises(SystemExit) as info:
        main(["fetch-weights", "--dir", str(tmp_path)])
    assert info.value.code == 2
    assert f"error: {tmp_path / 'pose_guider.pth'}: size 4 bytes differs" in capsys.readouterr().err


def test_cli_info_on_an_incomplete_dir_says_how_to_fetch(tmp_path, capsys):
    assert main(["info", "--profile", "official", "--weights", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "[MISSING] reference_unet" in out
    assert f"rain-avatar fetch-weights --dir {tmp_path}`" in out


def test_cli_commands_name_every_missing_part_before_loading(tmp_path, capsys):
    (tmp_path / "taesdv.pth").write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        main(["bench", "--profile", "tiny", "--weights", str(tmp_path), "--device", "cpu"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "profile 'tiny': incomplete weights (reference_unet: " in err
    assert "denoising_unet: " in err and "pose_guider: " in err
    assert f"decoder: {tmp_path / 'taesdv.pth'}: unreadable" in err


# Choosing the profile --------------------------------------------------------------------

def test_requested_official_with_an_incomplete_dir_names_every_missing_part(tmp_path):
    with pytest.raises(WeightsError) as info:
        resolve_profile("official", tmp_path)
    message = str(info.value)
    for part in ("reference_unet", "denoising_unet", "pose_guider", "decoder", "vae", "image_encoder"):
        assert f"{part}: " in message
    assert f"rain-avatar fetch-weights --dir {tmp_path}" in message


def test_a_requested_profile_lacking_one_part_names_only_that_part(tmp_path, hub_calls, manifest):
    fetch_weights(tmp_path, manifest)
    (tmp_path / "motion_unet.pth").unlink()
    with pytest.raises(WeightsError, match=r"profile 'tiny': incomplete weights \(denoising_unet: [^;]*\)$"):
        resolve_profile("tiny", tmp_path)


@pytest.mark.parametrize("weights_dir", [None, "absent", "empty"])
def test_no_requested_profile_and_no_complete_weights(tmp_path, weights_dir, monkeypatch):
    # Without the bundled demo model (an install that left it out), nothing can run.
    monkeypatch.setattr(profiles, "AUTO_PROFILES", (("official", None),))
    if weights_dir is not None:
        weights_dir = tmp_path / weights_dir
        if weights_dir.name == "empty":
            weights_dir.mkdir()
    with pytest.raises(WeightsError, match="no profile has complete weights .*rain-avatar fetch-weights --dir"):
        resolve_profile(None, weights_dir)


def test_no_requested_profile_takes_the_first_complete_one(tmp_path, hub_calls, manifest, monkeypatch):
    fetched = tmp_path / "fetched"
    fetch_weights(fetched, manifest)
    monkeypatch.setattr(profiles, "AUTO_PROFILES", (("tiny", None),))
    assert resolve_profile(None, fetched) == ("tiny", fetched)
    # A bundled fallback (as the demo model is) is one more entry, with its own directory.
    monkeypatch.setattr(profiles, "AUTO_PROFILES", (("official", None), ("tiny", fetched)))
    assert resolve_profile(None, tmp_path / "empty") == ("tiny", fetched)
