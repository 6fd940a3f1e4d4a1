# Configuration, validation and the artefact layout shared by every rule file.

from leopart.config import validate_config
from leopart.data.toy import DESIGN_VERSION as TOY_DESIGN_VERSION
from leopart.errors import LeopartError


try:
    validate_config(config)
except LeopartError as _exc:
    raise WorkflowError(str(_exc)) from None
validate(config, "../schemas/config.schema.yaml", set_default=True)


def _sorted_keys(node):
    """Nested dicts with sorted keys, so that `params:` reprs do not depend on key order."""
    if isinstance(node, dict):
        return {k: _sorted_keys(node[k]) for k in sorted(node)}
    if isinstance(node, list):
        return [_sorted_keys(v) for v in node]
    return node


# Reformatting or reordering the config file must not rerun anything: canonical key order.
_canonical = _sorted_keys(dict(config))
config.clear()
config.update(_canonical)


R = f"results/{config['run']}"
DATASET = config["dataset"]
NUM_CLASSES = DATASET["num_classes"]
THREADS = config.get("threads", 2)
SPLITS = ["train", "val"]
ENV = "../../environment.yml"


def fmt(x):
    """A number as it appears in artefact paths: 0.09 -> '0.09', 2.0 -> '2'."""
    return f"{float(x):g}"


wildcard_constraints:
    model=r"[A-Za-z0-9_-]+",
    split=r"train|val|trainaug",
    k=r"\d+",
    ck=r"\d+",
    cs=r"\d+",
    seed=r"\d+",
    wt=r"[0-9.e-]+",
    mt=r"[0-9.e-]+",
    pm=r"\d+|none",
    fit=r"val|val-first\d+|trainval",


# ---- models -------------------------------------------------------------------------------
MODELS = config["models"]
ROW_MODELS = {row: config["rows"][row] for row in ("dino", "leopart")}
ATTN_FILES = config["attention"].get("files") or {}
USE_ATTN_FILES = bool(ATTN_FILES.get("train"))


def embeddings_of(model):
    return MODELS[model].get("embeddings") or {}


def is_reduced(model):
    """True when the model's embeddings are pre-computed and already PCA-reduced."""
    emb = embeddings_of(model)
    return bool(emb.get("train")) and bool(emb.get("reduced"))


def is_imported(model):
    return bool(embeddings_of(model).get("train"))


# ---- artefact paths -----------------------------------------------------------------------
def manifest_path(split):
    return f"{R}/dataset/{split}.parquet"


def gt_path(split):
    return f"{R}/gt/{split}.npy"


def tokens_path(model, split):
    return f"{R}/features/{model}/{split}_tokens.npy"


def cls_attn_path(model, split):
    return f"{R}/features/{model}/{split}_cls_attn.npy"


def attn_mask_path(split):
    """Foreground hint masks used by CBFE: imported files or the attention model's own."""
    if USE_ATTN_FILES:
        return f"{R}/attention/files/{split}.npy"
    return f"{R}/attention/{config['attention']['model']}/{split}.npy"


def val_fit():
    """The PCA/k-means protocol of rows DINO and +Leopart: all val or the first N images."""
    limit = config["overcluster"].get("val_limit")
    return f"val-first{limit}" if limit else "val"


def reduced_path(model, fit, split):
    """PCA-reduced tokens (N, h, w, dim) of `split` under protocol `fit`."""
    if is_reduced(model):
        return f"{R}/embeddings/{model}/{split}.npy"
    return f"{R}/pca/{model}/{fit}/{split}.npy"


CB = config["cbfe"]
FG = config["fg_clustering"]
CD = config["cd"]
# Wildcard patterns of the CBFE / foreground-clustering / CD artefact folders.
CBFE_PAT = f"{R}/cbfe/{{model}}/k{{ck}}_seed{{cs}}"
FGK_PAT = f"{R}/cbfe/{{model}}/k{{ck}}_seed{{cs}}/fg_k{{k}}_seed{{seed}}"
CD_PAT = f"{R}/cbfe/{{model}}/k{{ck}}_seed{{cs}}/fg_k{{k}}_seed{{seed}}/cd_wt{{wt}}"
IM_PAT = f"{R}/cbfe/{{model}}/k{{ck}}_seed{{cs}}/fg_k{{k}}_seed{{seed}}/cd_wt{{wt}}/mt{{mt}}_pm{{pm}}"


def cbfe_dir(model):
    return f"{R}/cbfe/{model}/k{CB['k']}_seed{CB['seed']}"


def fgk_dir(model, k, seed):
    return f"{cbfe_dir(model)}/fg_k{k}_seed{seed}"


def cd_dir(model):
    return fgk_dir(model, CD["k"], CD["seed"])


def pm_tag():
    pm = CD.get("preferred_modules")
    return str(pm) if pm else "none"


def infomap_dir(model):
    return f"{cd_dir(model)}/cd_wt{fmt(CD['weight_threshold'])}/mt{fmt(CD['markov_time'])}_pm{pm_tag()}"


def logp(rule_name, tag):
    return f"{R}/logs/{rule_name}/{tag}.log"


def benchp(rule_name, tag):
    return f"{R}/benchmarks/{rule_name}/{tag}.tsv"


def gpu_resources():
    return 1 if config["features"].get("device") == "cuda" else 0


TRAINING = config.get("training") or {}
#: backbone file written by each trainer: the EMA teacher for DINO, the student for Leopart
TRAINED_BACKBONE = {"dino": "backbone_teacher.pt", "leopart": "backbone_student.pt"}


def retrained_by(model):
    """The training kind that (re)trains `model` in this run, or None."""
    for kind, section in TRAINING.items():
        if section and section.get("retrain") and section.get("model", kind) == model:
            return kind
    return None


def train_manifest(kind):
    """The manifest a trainer reads its images from (images.source: manifest), else none."""
    images = (TRAINING.get(kind) or {}).get("images", {})
    return manifest_path(images.get("split", "train")) if images.get("source") == "manifest" else []


def toy_design_of(kind):
    """The toy design version a trainer's rendered images follow (None for a manifest's images)."""
    images = (TRAINING.get(kind) or {}).get("images", {})
    return TOY_DESIGN_VERSION if images.get("source") == "toy" else None


def weights_file(model):
    """The checkpoint a model needs as an input file, or [] for random init."""
    kind = retrained_by(model)
    if kind:
        return f"{R}/train/{kind}/{TRAINED_BACKBONE[kind]}"
    w = MODELS[model]["weights"]
    if w["source"] == "random":
        return []
    if w.get("path"):
        return w["path"]
    return f"resources/weights/{model}.pth"


def raw_tokens(model, split):
    """Raw (not reduced) tokens of a model: imported file or inference output."""
    if is_imported(model):
        return f"{R}/embeddings/{model}/{split}.npy"
    return tokens_path(model, split)


OC = config["overcluster"]


def overcluster_metrics(model):
    return expand(
        f"{R}/overcluster/{model}/{val_fit()}/k{OC['k']}_seed{{seed}}/metrics.json", seed=OC["seeds"]
    )


def table_inputs():
    lp = ROW_MODELS["leopart"]
    return {
        "dino": overcluster_metrics(ROW_MODELS["dino"]),
        "leopart": overcluster_metrics(lp),
        "cbfe": expand(
            f"{fgk_dir(lp, FG['k'], '{seed}')}/hungarian.json", seed=FG["seeds"]
        ),
        "cd": f"{infomap_dir(lp)}/metrics.json",
        "upper_bound": f"{cd_dir(lp)}/many_to_one.json",
    }
