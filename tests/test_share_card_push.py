"""The model card renders and parses (YAML front matter, huggingface_hub.ModelCard), and
`push` uploads a bundle to a hub stand-in on 127.0.0.1 with the token from HF_TOKEN only."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from share_stages import use_share_stages, write_inputs
from typer.testing import CliRunner

from clo_recipes.engine.run import execute
from clo_recipes.errors import CloError
from clo_recipes.runner.door import export_run, prepare
from clo_recipes.runner.testing import write_recipe
from clo_recipes.share.push import push_bundle

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """A finished CLO + SFT run of a hub model (pinned from a fake offline cache), exported."""
    from huggingface_hub import constants

    use_share_stages(monkeypatch, tmp_path / "calls.log")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    refs = tmp_path / "hub" / "models--tiny-org--tiny-llama" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(COMMIT)
    recipe = write_inputs(tmp_path / "project")
    recipe["model"] = {"base": "tiny-org/tiny-llama"}
    plan = prepare(write_recipe(recipe, tmp_path / "project"), ["train.epochs=3"]).plan
    assert execute(plan).ok
    return export_run(plan.run_dir, tmp_path / "bundle", license="apache-2.0").path


def front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_model_card_renders_and_parses(bundle):
    text = (bundle / "README.md").read_text()
    meta = front_matter(text)
    assert meta["base_model"] == "tiny-org/tiny-llama" and meta["base_model_relation"] == "adapter"
    assert meta["library_name"] == "peft" and meta["license"] == "apache-2.0"
    assert meta["language"] == ["es", "en"] and "datasets" not in meta  # local data is not a hub dataset
    assert {"clo-recipes", "cross-lingual-optimization", "clo"} <= set(meta["tags"])
    results = meta["model-index"][0]["results"]
    fidelity = next(r for r in results if r["task"]["name"] == "Language fidelity")
    # stand-in evaluate: clo answers 3 of 4 Spanish prompts in Spanish, every English one in English
    assert {m["type"]: m["value"] for m in fidelity["metrics"]} == {"fidelity_es": 75.0, "fidelity_en": 100.0}

    from huggingface_hub import ModelCard

    card = ModelCard(text)
    assert card.data.base_model == "tiny-org/tiny-llama"
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("fidelity_es", 75.0), ("fidelity_en", 100.0)]

    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| model | fidelity_es"))
    rows = {line.split(" | ")[0]: line for line in lines[lines.index(header):] if line.startswith("| ")}
    assert rows["| clo"].startswith("| clo | 75.0 [") and rows["| base"].startswith("| base | 0.0 [")
    assert rows["| sft"].startswith("| sft | 50.0 [")
    assert "clo-recipe run recipe.lock.yaml --from-bundle ." in text
    assert "clo-recipe run recipe.yaml --set train.epochs=3.0" in text  # the command that made the run
    assert "![fidelity](stages/report-" in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("path/to/this/folder")' in text


class HubStandIn(BaseHTTPRequestHandler):
    """The three hub endpoints `create_repo` + `upload_folder` use, recording what they get."""

    def log_message(self, *args):
        pass

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            return self._reply(401, {"error": "Invalid credentials"})
        if self.path == "/api/repos/create":
            self.server.created = json.loads(body)
            return self._reply(200, {"url": f"{self.server.url}/{self.server.created['organization']}/"
                                            f"{self.server.created['name']}"})
        if self.path == "/api/validate-yaml":  # the card's metadata, checked before the commit
            content = json.loads(body)["content"]
            self.server.validated = yaml.safe_load(content.split("---\n")[1])
            return self._reply(200, {"warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files]})
        if "/commit/" in self.path:
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.server.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "header":
                    self.server.summary = item["value"]["summary"]
            repo = self.path.split("/api/models/")[1].split("/commit/")[0]
            return self._reply(200, {"commitUrl": f"{self.server.url}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40})
        return self._reply(404, {"error": f"no route {self.path}"})


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), HubStandIn)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.token, server.seen, server.files = "hf_standInWriteToken42", [], {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.shutdown()
    server.server_close()


def test_push_uploads_the_bundle_with_the_environment_token(bundle, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    result = push_bundle(bundle, "me/tiny-clo-es", commit_message="first")
    assert hub.created["name"] == "tiny-clo-es" and hub.created["organization"] == "me"
    local = {p.relative_to(bundle).as_posix(): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    assert hub.files == local and hub.summary == "first"
    assert result.files == len(local) and result.commit_url.endswith("a" * 40)
    card = hub.files["README.md"].decode()
    assert 'from_pretrained("me/tiny-clo-es")' in card and "path/to/this/folder" not in card
    # the card's digest in bundle.json follows the edit
    import hashlib

    assert json.loads(local["bundle.json"])["files"]["README.md"] == hashlib.sha256(local["README.md"]).hexdigest()
    assert {path for path, _ in hub.seen} == {"/api/repos/create", "/api/validate-yaml",
                                              "/api/models/me/tiny-clo-es/preupload/main",
                                              "/api/models/me/tiny-clo-es/commit/main"}
    assert hub.validated["base_model"] == "tiny-org/tiny-llama"
    assert all(f"Bearer {hub.token}" == auth for _, auth in hub.seen)
    assert not any(hub.token.encode() in content for content in hub.files.values())


def test_push_takes_the_token_from_the_environment_only(bundle, hub, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    from huggingface_hub import constants

    token_file = tmp_path / "token"
    token_file.write_text(hub.token)  # what `hf auth login` leaves behind: not used
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    with pytest.raises(CloError, match="HF_TOKEN is not set"):
        push_bundle(bundle, "me/tiny-clo-es")
    assert hub.seen == []

    monkeypatch.setenv("HF_TOKEN", "hf_wrongTokenValue")
    with pytest.raises(CloError) as caught:
        push_bundle(bundle, "me/tiny-clo-es")
    assert "HTTP 401" in caught.value.render() and "refused" in caught.value.render()
    assert "hf_wrongTokenValue" not in caught.value.render()


def test_push_command_exports_a_run_directory_on_the_fly(bundle, hub, monkeypatch, tmp_path):
    from clo_recipes.cli import app

    monkeypatch.setenv("HF_TOKEN", hub.token)
    run_dir = next((tmp_path / "project" / "runs").iterdir())
    result = CliRunner().invoke(app, ["push", str(run_dir), "me/from-run"])
    assert result.exit_code == 0, result.output
    assert "pushed" in result.output and "README.md" in hub.files and "recipe.lock.yaml" in hub.files
    assert any(path.startswith("stages/pairs-") for path in hub.files)
