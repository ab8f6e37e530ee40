"""Pin a hub repository reference (`org/name` at a branch, tag or commit) to a commit hash.

Online, the hub answers (`HfApi().model_info(...).sha`). Offline, the local Hugging Face
cache knows the commit a branch pointed to when it was downloaded (`refs/<branch>` in the
repo's cache folder), which is exactly what an offline run would load. If neither can tell,
the user gets an error naming the reference and the two ways out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CloError

COMMIT = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class HubPin:
    repo_type: str  # model | dataset
    repo_id: str
    revision: str  # a 40-hex commit hash
    source: str  # recipe (already a hash) | hub | cache

    def as_dict(self) -> dict:
        return {"kind": "hub", "repo_type": self.repo_type, "id": self.repo_id,
                "revision": self.revision, "source": self.source}


def is_commit(revision: str | None) -> bool:
    return bool(revision) and bool(COMMIT.match(revision))


def offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.is_offline_mode() or flag.upper() in {"1", "ON", "YES", "TRUE"}


def _ask_hub(repo_type: str, repo_id: str, revision: str) -> str:
    from huggingface_hub import HfApi

    # HF_ENDPOINT read now (not at import) for mirrors; never a token stored on disk
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or False)
    info = api.dataset_info(repo_id, revision=revision) if repo_type == "dataset" else \
        api.model_info(repo_id, revision=revision)
    if not info.sha:
        raise ValueError("the hub answered without a commit hash")
    return info.sha


def cached_commit(repo_type: str, repo_id: str, revision: str) -> str | None:
    """The commit `revision` pointed to when the repo was last downloaded into the HF cache."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        return commit if is_commit(commit) else None
    return None


def pin_hub(field: str, repo_type: str, repo_id: str, revision: str | None) -> HubPin:
    """Resolve `repo_id@revision` to a commit: as given, from the hub, or from the HF cache."""
    if is_commit(revision):
        return HubPin(repo_type, repo_id, revision, "recipe")
    wanted = revision or DEFAULT_REVISION
    why = "the hub is not reachable (HF_HUB_OFFLINE is set)"
    if not offline():
        try:
            return HubPin(repo_type, repo_id, _ask_hub(repo_type, repo_id, wanted), "hub")
        except Exception as exc:  # noqa: BLE001 - any network/hub failure falls back to the cache
            detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            why = f"the hub did not answer ({type(exc).__name__}{': ' + detail if detail else ''})"
    commit = cached_commit(repo_type, repo_id, wanted)
    if commit:
        return HubPin(repo_type, repo_id, commit, "cache")
    revision_field = {"model.base": "model.revision", "data.source": "data.revision",
                      "translation.model": "translation.revision"}.get(field)
    by_hand = (f"set {revision_field} to a 40-character commit hash from the repo's history page"
               if revision_field else "download it once so the local cache knows its commit")
    raise CloError(
        f"cannot pin {field} = {repo_type} '{repo_id}' at '{wanted}': {why}, "
        f"and it is not in the local Hugging Face cache",
        hint=f"run `clo-recipe lock` where the hub is reachable, or {by_hand}",
    )
