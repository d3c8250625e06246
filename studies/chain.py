"""Notebooks 01-05 (and the caption features between 04 and 05) on a world outside data/ and results/, as the
pipeline's stages run them: the one chain every study reuses (the classroom preset, the budget sweep, the second
world, the mismatched-pair sweep).

`work` holds raw/<world>/ (the world, written by the study) and receives embeddings/, clusters/, prototypes/,
synthetic/, text_features/, evaluate/ and notebooks/ (the executed copies). Every parameter not given is the
notebook's default, i.e. params.yaml's (the contract test keeps them equal), except that notebook 05 leaves out the
MTT-VL / LoRS students and sets (tm_runs, tm_dir): they belong to the pipeline's own world and settings.
"""

import os
import subprocess
import sys
from pathlib import Path

PAPERMILL = [sys.executable, "-m", "papermill", "--no-progress-bar", "-k", "python3"]


def notebook_params(values: dict) -> list[str]:
    """papermill's -p name value arguments (-r name '' for an empty string)."""
    out = []
    for k, v in values.items():
        out += ["-r", k, ""] if v == "" else ["-p", k, str(v)]  # -r: papermill would read '' as None
    return out


def parameters(work, world: str, n_pairs: int, dataset: str | None = None, cluster: dict | None = None,
               evaluate: dict | None = None, raw=None) -> dict[str, dict]:
    """Each notebook's parameters in the chain, {"01_embed": {name: value}, ...} (values str, int or float):
    `world` names the toy models used (models/<world>/), `dataset` the name written into metrics.json (default
    `world`); `cluster` / `evaluate` are more parameters of notebooks 02 / 05; `raw` the world's images and
    captions when not work/raw/<world> (e.g. data/raw/<world>, read only)."""
    w = Path(work)
    raw = str(Path(raw) if raw else w / "raw" / world)
    return {
        "01_embed": {"dataset_root": raw, "dataset": world, "out_dir": str(w / "embeddings")},
        "02_cluster": {"embeddings_dir": str(w / "embeddings"), "dataset_root": raw, "out_dir": str(w / "clusters"),
                       "n_clusters": n_pairs, **(cluster or {})},
        "03_match": {"embeddings_dir": str(w / "embeddings"), "clusters_dir": str(w / "clusters"),
                     "dataset_root": raw, "out_dir": str(w / "prototypes")},
        "04_synthesize": {"prototypes_dir": str(w / "prototypes"), "embeddings_dir": str(w / "embeddings"),
                          "dataset_root": raw, "dataset": world, "out_dir": str(w / "synthetic")},
        "05_evaluate": {"embeddings_dir": str(w / "embeddings"), "text_features_dir": str(w / "text_features"),
                        "clusters_dir": str(w / "clusters"), "prototypes_dir": str(w / "prototypes"),
                        "synthetic_dir": str(w / "synthetic"), "dataset_root": raw,
                        "encoders_dir": f"models/{world}/toy-encoders", "out_dir": str(w / "evaluate"),
                        "dataset": dataset or world, "n_pairs": n_pairs, "tm_runs": "", "tm_dir": "",
                        **(evaluate or {})},
    }


def commands(work, world: str, n_pairs: int, dataset: str | None = None, cluster: dict | None = None,
             evaluate: dict | None = None, raw=None) -> list[list[str]]:
    """The command lines of the chain, in order (the arguments as for `parameters`): notebooks 01-04, the
    caption features, notebook 05."""
    w = Path(work)
    params = parameters(work, world, n_pairs, dataset, cluster, evaluate, raw)

    def notebook(name):
        return [*PAPERMILL, f"notebooks/{name}.ipynb", str(w / "notebooks" / f"{name}.ipynb"),
                *notebook_params(params[name])]

    return [
        *(notebook(name) for name in ("01_embed", "02_cluster", "03_match", "04_synthesize")),
        [sys.executable, "-m", "pds.text_features", "--embeddings-dir", params["05_evaluate"]["embeddings_dir"],
         "--out", params["05_evaluate"]["text_features_dir"]],
        notebook("05_evaluate"),
    ]


def run(cmds: list[list[str]], env: dict | None = None, cwd=None) -> None:
    """Run the command lines in order from the repository root; stop at the first that fails, naming it."""
    from pds import paths

    inherited = {k: v for k, v in os.environ.items() if k != "PDS_LESSON"}  # the classroom switch is Jupyter's
    env = inherited | {"PDS_PROGRESS": "0"} | (env or {})
    for argv in cmds:
        for a in argv:  # papermill writes into an existing folder only
            if a.endswith(".ipynb") and not a.startswith("notebooks/"):
                Path(a).parent.mkdir(parents=True, exist_ok=True)
        print("+", " ".join(argv[1:] if argv[0] == sys.executable else argv), flush=True)
        if subprocess.run(argv, cwd=cwd or paths.ROOT, env=env).returncode != 0:
            raise RuntimeError(f"failed: {' '.join(argv)}")
