"""Upload a bundle to a Hugging Face hub repository.

The token comes from the environment (`HF_TOKEN`) and nowhere else: not from a token file a
past `hf auth login` left on disk, so what `push` can write to is what the caller exported.
`HF_ENDPOINT` points it at another hub (a mirror, an enterprise hub, a test server).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CloError
from ..secrets import redact
from .bundle import CARD, INDEX, read_index, write_index
from .card import FOLDER_PLACEHOLDER


@dataclass
class PushResult:
    repo_url: str
    commit_url: str
    files: int


def name_repo_in_card(bundle: Path, repo_id: str) -> None:
    """Let the card's loading snippet name the repo instead of a local folder."""
    card = bundle / CARD
    text = card.read_text(encoding="utf-8")
    named = text.replace(FOLDER_PLACEHOLDER, json.dumps(repo_id))
    if named != text:
        card.write_text(named, encoding="utf-8")
        index = json.loads((bundle / INDEX).read_text(encoding="utf-8"))
        index.pop("files", None)
        write_index(bundle, index)


def push_bundle(bundle: Path, repo_id: str, *, private: bool = False, commit_message: str | None = None,
                endpoint: str | None = None) -> PushResult:
    """Create `repo_id` (if needed) and upload the bundle folder to it in one commit."""
    bundle = Path(bundle).expanduser().resolve()
    index = read_index(bundle)
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise CloError("HF_TOKEN is not set", hint="export HF_TOKEN=<a write token from your hub settings>; "
                       "push reads the token from the environment only")
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        raise CloError("the hub is switched off in this shell (HF_HUB_OFFLINE is set)",
                       hint="unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to push")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    name_repo_in_card(bundle, repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or f"clo-recipes: {index.get('name')} ({index.get('method')})"
    try:
        repo = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=bundle, commit_message=message)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        detail = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        hint = {401: "the token in HF_TOKEN was refused", 403: "HF_TOKEN may lack write access to this namespace",
                404: "check the repo id (namespace/name)"}.get(status, "see the hub's message above")
        raise CloError(f"pushing to {repo_id} failed (HTTP {status}): {detail}", hint=hint) from None
    except ValueError as exc:  # e.g. the hub's metadata check of README.md
        raise CloError(f"the hub refused the upload of {bundle}: {redact(str(exc))}",
                       hint="if it names README.md's metadata, fix its front matter (or re-export) and push again") from None
    except Exception as exc:  # noqa: BLE001 - the client's transport errors (refused, DNS, TLS) vary by version
        raise CloError(f"cannot push to {api.endpoint}: {type(exc).__name__}: {redact(str(exc))}",
                       hint="check the network, HF_ENDPOINT and the repo id") from None
    files = sum(1 for path in bundle.rglob("*") if path.is_file())
    return PushResult(str(repo), commit.commit_url, files)
