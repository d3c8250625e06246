"""Run-consistent stage outputs: each stage writes its folder's files, then LAST a small `manifest.json`
naming the stage, a run token, the sha256 and size of every file it wrote and the tokens of the artefacts
it was made from. Readers open a folder through `open_artifact`, which refuses a folder without its manifest
(an interrupted run), a file that is not the one its run wrote (a folder mixing two runs), and an artefact
made from another run of its inputs than the one it is being combined with (`made_from`).

The token is a hash of the manifest's content (stage, inputs' tokens, params, files' hashes), never random
or time based: the same inputs give byte-identical folders, manifest included, as DVC expects.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = "manifest.json"
TOKEN_CHARS = 16  # hex digits of the run token kept: 64 bits tell runs apart and stay readable in a message

# what to rerun to remake each stage's folder
RERUN = {
    "embed": "the embed stage (notebook 01, dvc repro embed)",
    "cluster": "the cluster stage (notebook 02, dvc repro cluster)",
    "match": "the match stage (notebook 03, dvc repro match)",
    "synthesize": "the synthesize stage (notebook 04, dvc repro synthesize; it resumes image by image)",
    "text_features": "the text_features stage (python -m pds.text_features, dvc repro text_features)",
    "experts": "the tm stage's experts (python -m pds.tm experts, dvc repro tm)",
    "tm": "the tm stage (python -m pds.tm distill, dvc repro tm)",
}
NOTEBOOK = {"embed": "01", "cluster": "02", "match": "03", "synthesize": "04"}  # the stages that are lessons
# the folder names the pipeline gives each stage's output, to name the stage in a read error of a bare file
FOLDER_STAGE = {"embeddings": "embed", "clusters": "cluster", "prototypes": "match", "synthetic": "synthesize",
                "text_features": "text_features", "experts": "experts", "tm": "tm", "lors": "tm"}


def rerun_hint(stage: str) -> str:
    return RERUN.get(stage, f"the {stage} stage")


PIPELINE_FOLDER = {"embed": "data/embeddings", "cluster": "data/clusters", "match": "data/prototypes",
                   "synthesize": "data/synthetic", "text_features": "data/text_features"}  # dvc.yaml's outs


def make_command(stage: str, folder) -> str:
    """The one command that makes `folder` as the output of `stage` (or, for stage `toyworld`, a toy world):
    `make lesson` for a folder of the classroom world (PDS_LESSON, or build/lesson), `dvc repro <stage>` for
    the pipeline's own folder, else the notebook (or module) run with that folder as its output."""
    from pds import paths

    folder = Path(folder).resolve()
    lessons = [d.resolve() for d in (paths.lesson_dir(), paths.resolve("build/lesson")) if d is not None]
    if any(folder.is_relative_to(d) for d in lessons):
        return "`make lesson` (the classroom world)"
    if stage == "toyworld":
        if folder.parent == paths.RAW.resolve():
            return f"`dvc repro toyworld@{folder.name}`"
        return f"`python -m pds.toy.world --out {show(folder)}`"
    if stage in PIPELINE_FOLDER and folder == paths.resolve(PIPELINE_FOLDER[stage]).resolve():
        return f"`dvc repro {stage}`"
    if stage in NOTEBOOK:
        return f"notebook {NOTEBOOK[stage]} run with out_dir = \"{show(folder)}\""
    if stage == "text_features":
        return f"`python -m pds.text_features --embeddings-dir <its embeddings_dir> --out {show(folder)}`"
    return rerun_hint(stage)


def hint_for_path(path) -> str:
    """What to rerun to remake `path`, guessed from its folder's manifest or name."""
    folder = Path(path).parent
    try:
        stage = json.loads((folder / MANIFEST).read_text()).get("stage", "")
    except (OSError, ValueError, AttributeError):
        stage = FOLDER_STAGE.get(folder.name, "")
    return rerun_hint(stage) if stage else "the stage that wrote it (dvc repro)"


def show(path) -> str:
    """A path as a message shows it: relative to the repository root when inside it."""
    from pds import paths

    p = Path(path)
    try:
        return str(p.resolve().relative_to(paths.ROOT))
    except ValueError:
        return str(p)


def file_digest(path) -> dict:
    """{"sha256": hex, "size": bytes} of one file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return {"sha256": h.hexdigest(), "size": os.path.getsize(path)}


@dataclass(frozen=True)
class Artifact:
    """An opened stage folder: its manifest, checked against the files on disk."""

    folder: Path
    stage: str
    token: str
    files: dict = field(default_factory=dict)  # name -> {"sha256", "size"}
    inputs: dict = field(default_factory=dict)  # stage -> token of each artefact it was made from
    params: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # other manifest keys (synthesize: the image keys)


def begin(folder) -> None:
    """Call before a stage writes into `folder`: its old manifest goes first, so if the run dies between two
    writes the folder has none and no reader takes the mix of old and new files for a finished run."""
    (Path(folder) / MANIFEST).unlink(missing_ok=True)


def run_token(stage: str, files: dict, inputs: dict, params: dict) -> str:
    text = json.dumps({"stage": stage, "inputs": inputs, "params": params, "files": files}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:TOKEN_CHARS]


def _inputs(made_from) -> dict:
    out = {}
    for a in made_from or ():
        if not isinstance(a, Artifact):
            raise TypeError(f"made_from takes opened artefacts (pds.artifacts.open_artifact), got {type(a).__name__}.")
        out[a.stage] = a.token
    return dict(sorted(out.items()))


def write_manifest(folder, stage: str, files, made_from=(), params: dict | None = None,
                   extra: dict | None = None) -> Artifact:
    """Hash `files` (names inside `folder`, all written already) and write `folder/manifest.json` last.

    made_from: the opened input artefacts (their stage -> token is recorded); params: JSON-able settings that
    made the files; extra: more keys kept in the manifest (not part of the token). Returns the Artifact.
    """
    from pds import data

    folder = Path(folder)
    if stage not in RERUN:
        raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(RERUN)}.")
    digests = {name: file_digest(folder / name) for name in sorted(set(files))}
    inputs, params = _inputs(made_from), dict(params or {})
    token = run_token(stage, digests, inputs, params)
    data.save_json(folder / MANIFEST, {"stage": stage, "token": token, "inputs": inputs, "params": params,
                                       "files": digests, **(extra or {})})
    return Artifact(folder, stage, token, digests, inputs, params, dict(extra or {}))


def read_manifest(folder) -> dict | None:
    """The manifest's content, or None when there is none; a manifest that is not JSON is named."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{show(path)} is not valid JSON ({e}): rerun {hint_for_path(path)}.") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{show(path)} is not a manifest (expected a JSON object): rerun {hint_for_path(path)}.")
    return manifest


def open_artifact(folder, stage: str, made_from=(), names=None) -> Artifact:
    """Open the output folder of `stage`, checking that it is one finished run: its manifest exists, names
    `stage`, and every listed file (or only `names`) is on disk with the size and sha256 its run wrote.

    made_from: opened artefacts this one must have been made from (the same run of each); a mismatch stops with
    one line naming both folders and the stage to rerun.
    """
    folder = Path(folder)
    hint = rerun_hint(stage)
    if not folder.is_dir():
        raise FileNotFoundError(f"{show(folder)} does not exist: make it first with {make_command(stage, folder)}.")
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{show(folder)} has no {MANIFEST}: its run did not finish (or the folder was not "
                                f"written by a stage): rerun {hint}.")
    if manifest.get("stage") != stage or "token" not in manifest:
        if "token" not in manifest and manifest.get("stage", stage) == stage:
            raise ValueError(f"{show(folder)} is incomplete (its run stopped before every file was written): "
                             f"rerun {hint}.")
        raise ValueError(f"{show(folder)} holds the output of {manifest.get('stage')!r}, not of {stage!r}: point "
                         f"the path at {stage}'s folder, or rerun {hint}.")
    files = manifest.get("files", {})
    for name in files if names is None else names:
        path = folder / name
        if name not in files:
            raise ValueError(f"{show(path)} is not listed in {show(folder / MANIFEST)}: rerun {hint}.")
        if not path.is_file():
            raise FileNotFoundError(f"{show(path)} is listed in {show(folder / MANIFEST)} but missing: rerun {hint}.")
        want = files[name]
        if os.path.getsize(path) != want.get("size") or file_digest(path)["sha256"] != want.get("sha256"):
            raise ValueError(f"{show(path)} is not the file run {manifest['token']} of {stage} wrote (changed since, "
                             f"or left by another run): rerun {hint}.")
    known = {"stage", "token", "inputs", "params", "files"}
    art = Artifact(folder, stage, manifest["token"], files, dict(manifest.get("inputs", {})),
                   dict(manifest.get("params", {})), {k: v for k, v in manifest.items() if k not in known})
    for upstream in made_from or ():
        check_made_from(art, upstream)
    return art


def check_made_from(art: Artifact, upstream: Artifact) -> None:
    """Refuse `art` unless it was made from exactly the run of `upstream` the caller combines it with."""
    recorded = art.inputs.get(upstream.stage)
    if recorded == upstream.token:
        return
    made = f"{upstream.stage} run {recorded}" if recorded else f"no {upstream.stage} output"
    raise ValueError(f"{show(art.folder)} was made from {made}, but {show(upstream.folder)} holds {upstream.stage} "
                     f"run {upstream.token}: rerun {rerun_hint(art.stage)}.")
