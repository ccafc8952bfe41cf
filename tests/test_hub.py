"""Released weights by name against a local HTTP server (the base URL is a setting), the download cache and its
checksums, offline errors, and save_pretrained folders."""
from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from pathlib import Path

import pytest
import torch

from cnx2lite import hub
from cnx2lite.checkpoints import load_pretrained
from cnx2lite.commands import main
from cnx2lite.factory import create_model, load_model
from cnx2lite.fcmae import FCMAE
from conftest import make_image_folder, randomize_


class _Server:
    """A static file server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, root: Path) -> None:
        self.requests = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def released(tmp_path, monkeypatch):
    """The official layout served locally: an FCMAE checkpoint as the official repo saves it, and an in1k one."""
    torch.manual_seed(0)
    fcmae = randomize_(FCMAE("convnextv2_atto", decoder_dim=64))
    classifier = randomize_(create_model("convnextv2_atto"))
    (tmp_path / "host" / "pt_only").mkdir(parents=True)
    (tmp_path / "host" / "im1k").mkdir()
    torch.save({"model": fcmae.state_dict()}, tmp_path / "host" / "pt_only" / "convnextv2_atto_1k_224_fcmae.pt")
    torch.save({"model_ema": classifier.state_dict(), "model": classifier.state_dict()},
               tmp_path / "host" / "im1k" / "convnextv2_atto_1k_224_ema.pt")
    server = _Server(tmp_path / "host")
    monkeypatch.setenv(hub.URL_ENV, server.url)
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    yield server, fcmae, classifier
    server.httpd.shutdown()


def test_weights_by_name_download_once_then_come_from_the_cache(released):
    server, fcmae, _ = released
    model = create_model("convnextv2_atto", num_classes=0)
    load_pretrained(model, "convnextv2_atto.fcmae")
    torch.testing.assert_close(model.stages[2][3].grn.gamma, fcmae.encoder.stages[2][3].grn.gamma)
    assert server.requests == 1
    load_pretrained(create_model("convnextv2_atto", num_classes=0), "convnextv2_atto.fcmae")
    assert server.requests == 1  # checked against the recorded size and sha256, not downloaded again
    cached = Path(hub.cache_dir()) / "convnextv2_atto_1k_224_fcmae.pt"
    assert (cached.parent / (cached.name + ".sha256.json")).is_file()


def test_offline_mode_asks_no_server_and_still_reads_the_cache(released, monkeypatch):
    server, fcmae, _ = released
    monkeypatch.setenv(hub.OFFLINE, "1")
    with pytest.raises(OSError, match=r"not downloading .*convnextv2_atto_1k_224_fcmae\.pt: \$CNX2LITE_OFFLINE is set"):
        hub.weights_path("convnextv2_atto.fcmae")
    assert server.requests == 0
    monkeypatch.setenv(hub.OFFLINE, "0")  # off again: downloaded once, then read from the cache offline
    hub.weights_path("convnextv2_atto.fcmae")
    monkeypatch.setenv(hub.OFFLINE, "1")
    assert hub.weights_path("convnextv2_atto.fcmae").is_file() and server.requests == 1


def test_a_corrupted_cache_file_is_downloaded_again(released):
    server, fcmae, _ = released
    path = hub.weights_path("convnextv2_atto.fcmae")
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    model = create_model("convnextv2_atto", num_classes=0)
    load_pretrained(model, "convnextv2_atto.fcmae")
    assert server.requests == 2
    torch.testing.assert_close(model.downsample_layers[0][0].weight, fcmae.encoder.downsample_layers[0][0].weight)


@pytest.mark.parametrize("served", ["cut short", "an HTML page"])
def test_a_download_that_is_not_the_weights_is_never_kept(served, released, monkeypatch):
    """A transfer cut short of its Content-Length, or a proxy's page served under the file's name, was kept in the cache
    with a size and sha256 record, and trusted on every later use, offline too (round 15)."""
    server, _, _ = released
    host = Path(server.httpd.RequestHandlerClass.keywords["directory"])
    weights = host / "pt_only" / "convnextv2_atto_1k_224_fcmae.pt"
    if served == "an HTML page":
        weights.write_text("<html><body>Please log in</body></html>")
    else:
        class Short(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(weights.stat().st_size))
                self.end_headers()
                self.wfile.write(weights.read_bytes()[:1000])  # then the connection closes

            def log_message(self, *args) -> None:
                pass

        short = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
        threading.Thread(target=short.serve_forever, daemon=True).start()
        monkeypatch.setenv(hub.URL_ENV, f"http://127.0.0.1:{short.server_address[1]}")
    says = ("the transfer was cut short (1000 of" if served == "cut short" else
            "what arrived is not a checkpoint torch reads (it is a text file)")
    with pytest.raises(OSError, match=f"cannot download .*convnextv2_atto_1k_224_fcmae.pt: {re.escape(says)}"):
        hub.weights_path("convnextv2_atto.fcmae")
    assert not list(Path(hub.cache_dir()).glob("*")), "nothing of it may stay in the cache"


def test_create_model_pretrained_tag_and_another_head(released):
    _, _, classifier = released
    model = create_model("convnextv2_atto", pretrained="in1k")
    torch.testing.assert_close(model.head.weight, classifier.head.weight)
    ten = create_model("convnextv2_atto", pretrained="in1k", num_classes=10)  # keeps its own 10-class head
    assert ten.head.weight.shape == (10, 320)
    torch.testing.assert_close(ten.stages[3][1].pwconv1.weight, classifier.stages[3][1].pwconv1.weight)
    with pytest.raises(ValueError, match="no released weights named 'convnextv2_atto.in22k-in1k': convnextv2_atto is "
                                         "released as convnextv2_atto.fcmae, convnextv2_atto.in1k "):
        create_model("convnextv2_atto", pretrained="in22k-in1k")


def test_collapse_measures_a_released_checkpoint_by_name(released, tmp_path, capsys):
    """The positive control of the collapse curves: the paper's own FCMAE encoder, by name (downloaded once)."""
    server, _, _ = released
    data = make_image_folder(tmp_path / "images", classes=2, val=2)
    with pytest.raises(SystemExit) as exit_info:
        main(["collapse", "--encoder", "released FCMAE=convnextv2_atto.fcmae", "--data", str(data), "--img-size", "64",
              "--images", "2", "--resamples", "5", "--rank-resamples", "2", "--point", "gelu", "--output",
              str(tmp_path / "out")])
    assert exit_info.value.code == 0 and server.requests == 1
    assert "| released FCMAE | GELU | 1 |" in (tmp_path / "out" / "collapse.md").read_text()


def test_a_released_name_of_another_variant_is_refused_before_its_download(released):
    server, _, _ = released
    with pytest.raises(ValueError, match="convnextv2_tiny.fcmae holds convnextv2_tiny weights, but the model is "
                                         "convnextv2_atto: .*nothing was downloaded"):
        load_pretrained(create_model("convnextv2_atto", num_classes=0), "convnextv2_tiny.fcmae")
    with pytest.raises(ValueError, match="holds convnextv2_tiny weights, but model is convnextv2_atto: give a name of "
                                         r"convnextv2_atto \(e.g. convnextv2_atto.in1k\)"):
        load_model("convnextv2_tiny.in1k", model="convnextv2_atto")
    assert server.requests == 0
    assert load_model("convnextv2_atto.fcmae", model="convnextv2_atto")[0].variant == "convnextv2_atto"
    assert server.requests == 1


def test_offline_is_one_line_naming_the_url_and_the_way_out(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(hub.URL_ENV, "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(OSError, match=r"cannot download http://127\.0\.0\.1:9/pt_only/convnextv2_atto_1k_224_fcmae"
                                      r"\.pt .*give its path where you gave the name"):
        hub.weights_path("convnextv2_atto.fcmae")
    assert not list((tmp_path / "cache").glob("*"))  # no partial file left
    data = make_image_folder(tmp_path / "images")
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--preset", "smoke", "--data", str(data), "--output", str(tmp_path / "runs"),
              "--pretrained", "convnextv2_atto.fcmae"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "cannot download" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["collapse", "--encoder", "paper=convnextv2_atto.fcmae", "--data", str(data)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "cannot download" in err


def test_save_pretrained_round_trip_and_architecture_check(tmp_path):
    model = randomize_(create_model("convnextv2_atto", num_classes=7, grn_aggregation="l1"))
    folder = hub.save_pretrained(model, tmp_path / "mine")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = create_model("convnextv2_atto", num_classes=7, grn_aggregation="l1")
    load_pretrained(loaded, folder)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="grn_aggregation: saved 'l1', model 'l2'"):
        load_pretrained(create_model("convnextv2_atto", num_classes=7), folder)


def test_a_file_put_in_the_cache_by_hand_is_used_offline(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.URL_ENV, "http://127.0.0.1:9")  # offline
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path))
    encoder = randomize_(create_model("convnextv2_atto", num_classes=0))
    torch.save(encoder.state_dict(), tmp_path / "convnextv2_atto_1k_224_fcmae.pt")  # fetched elsewhere
    model = create_model("convnextv2_atto", num_classes=0, pretrained="fcmae")
    torch.testing.assert_close(model.stages[1][0].pwconv1.weight, encoder.stages[1][0].pwconv1.weight)
    assert (tmp_path / "convnextv2_atto_1k_224_fcmae.pt.sha256.json").is_file()


def test_load_model_reads_a_saved_folder_with_its_architecture(tmp_path):
    from cnx2lite.factory import load_model

    saved = randomize_(create_model("convnextv2_femto", num_classes=0, grn_aggregation="mean"))
    hub.save_pretrained(saved, tmp_path / "femto")
    model, _ = load_model(tmp_path / "femto")
    assert model.dims == saved.dims and model.grn_aggregation == "mean"
    with pytest.raises(ValueError, match=f"^{tmp_path / 'femto'}: the saved weights are of another architecture "
                                         r"\(dims: .*\): build the model with the saved settings \(--model"):
        load_pretrained(create_model("convnextv2_atto", num_classes=0), tmp_path / "femto")
    torch.testing.assert_close(model.stages[2][1].grn.gamma, saved.stages[2][1].grn.gamma)


def test_save_pretrained_never_overwrites_a_config_json_that_is_not_a_saved_models(tmp_path):
    from cnx2lite import create_model, save_pretrained

    (tmp_path / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(FileExistsError, match="its config.json would be overwritten and is not a saved model's"):
        save_pretrained(create_model("convnextv2_atto"), tmp_path)
    assert (tmp_path / "config.json").read_text() == '{"my": "settings"}'
    (tmp_path / "model.safetensors").write_text("my notes")  # a file of that name does not make the folder a save
    with pytest.raises(FileExistsError, match="its config.json and model.safetensors would be overwritten"):
        save_pretrained(create_model("convnextv2_atto"), tmp_path)
    assert (tmp_path / "model.safetensors").read_text() == "my notes"
    saved = save_pretrained(create_model("convnextv2_atto"), tmp_path / "saved")
    save_pretrained(create_model("convnextv2_atto", num_classes=3), saved)  # a save replaces a save
    umask = os.umask(0)
    os.umask(umask)
    assert {(saved / name).stat().st_mode & 0o777 for name in ("config.json", "model.safetensors")} == {0o666 & ~umask}


def test_a_safetensors_file_loads_as_weights_ours_or_timms(tmp_path):
    """A save's own model.safetensors reads as its folder (architecture included); any other .safetensors file as a
    bare state dict in any known layout, e.g. timm's from the Hugging Face hub; a damaged one is named."""
    import timm
    from safetensors.torch import save_file

    saved = randomize_(create_model("convnextv2_femto", num_classes=0, grn_aggregation="mean"))
    folder = hub.save_pretrained(saved, tmp_path / "femto")
    model, _ = load_model(folder / "model.safetensors")
    assert model.dims == saved.dims and model.grn_aggregation == "mean"
    torch.testing.assert_close(model.stages[3][0].pwconv2.weight, saved.stages[3][0].pwconv2.weight)

    reference = randomize_(timm.create_model("convnextv2_atto", pretrained=False, num_classes=10)).eval()
    save_file(reference.state_dict(), str(tmp_path / "timm.safetensors"))
    ours = create_model("convnextv2_atto", num_classes=10)
    assert load_pretrained(ours, tmp_path / "timm.safetensors").source_format == "timm"
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(images), reference(images), rtol=1e-4, atol=1e-4)

    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes((tmp_path / "timm.safetensors").read_bytes()[:20] + b"!" * 10)
    with pytest.raises(ValueError, match=f"{damaged} is truncated or not a safetensors file"):
        load_model(damaged)


def test_a_weights_cache_that_cannot_be_a_folder_names_its_setting(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "a_file" / "weights"))
    with pytest.raises(ValueError, match=r"a_file is a file\): set \$CNX2LITE_CACHE to a folder"):
        hub.weights_path("convnextv2_atto.fcmae")
