# Configuration (validated once, schema defaults filled) and the artefact layout shared by every
# rule file.

import os
import re
from collections import namedtuple
from pathlib import PurePosixPath

from leopart.config import complete_config_with_derived
from leopart.data.classes import TOY_CLASSES
from leopart.data.folder import internal_class_names
from leopart.data.voc import default_class_names
from leopart.data.toy import DESIGN_VERSION as TOY_DESIGN_VERSION
from leopart.errors import LeopartError
from leopart.report import GRID_COLUMNS, LABEL_FREE_GRID_COLUMN, TABLE_ROWS
from leopart.cd.infomap_env import AUTHORS_VERSION
from leopart.table import LABEL_FREE, cbfe_row_name, cd_row_name


def _sorted_keys(node):
    """Nested dicts with sorted keys, so that `params:` reprs do not depend on key order."""
    if isinstance(node, dict):
        return {k: _sorted_keys(node[k]) for k in sorted(node)}
    if isinstance(node, list):
        return [_sorted_keys(v) for v in node]
    return node


# Validate, fill the schema's defaults and put the keys in canonical order (reformatting or
# reordering the config file must not rerun anything). Cluster counts left null are derived from
# dataset.num_classes here, once (DERIVED records which, for the table's provenance). Every rule
# reads `config[key]` from here on.
try:
    _completed, DERIVED = complete_config_with_derived(config)
except LeopartError as _exc:
    raise WorkflowError(str(_exc)) from None
config.clear()
config.update(_sorted_keys(_completed))


RUN_DIR = f"results/{config['run']}"
DATASET = config["dataset"]
#: the dataset.pvoc section; empty for the toy dataset
PVOC_CONFIG = DATASET.get("pvoc") or {}
NUM_CLASSES = DATASET["num_classes"]


#: class names in label-index order (0 = background, dataset.background_class swapped to 0),
#: written into every metric JSON
def _class_names():
    if DATASET["kind"] == "toy":
        return TOY_CLASSES
    if DATASET["kind"] == "folder" or DATASET["background_class"]:
        return internal_class_names(NUM_CLASSES, DATASET.get("class_names"), DATASET["background_class"])
    return default_class_names(NUM_CLASSES, DATASET.get("class_names"))


CLASS_NAMES = _class_names()
#: false for a folder without masks: a label-free run (choices without GT, rows "need labels")
HAS_MASKS = DATASET["kind"] != "folder" or bool(DATASET["folder"].get("masks"))
#: the label-free rows of CBFE and CD: with masks beside the paper's rows (label_free.rows);
#: without masks the CBFE threshold itself is label-free and the label-free CD row is added
LABEL_FREE_ROWS = config["label_free"]["rows"] or not HAS_MASKS
#: suffix of a CBFE seed whose threshold is chosen without labels (k<K>_seed<s>-labelfree/)
LABEL_FREE_SEED = "-labelfree"
THREADS = config["threads"]
SPLITS = ["train", "val"]
ENV = "../../environment.yml"


def path_number(x):
    """A number as it appears in artefact paths: 0.09 -> '0.09', 2.0 -> '2'."""
    return f"{float(x):g}"


wildcard_constraints:
    model=r"[A-Za-z0-9_-]+",
    split=r"train|val|trainaug",
    k=r"\d+",
    seed=r"\d+",
    cbfe_k=r"\d+",
    cbfe_seed=r"\d+(?:-labelfree)?",
    weight_threshold=r"[0-9.e-]+",
    markov_time=r"[0-9.e-]+",
    preferred_modules=r"\d+|none",
    infomap_behaviour=r"authors|current",
    fit=r"val|val-first\d+|trainval",


JobFiles = namedtuple("JobFiles", ["log", "benchmark"])


def job_files(rule_name, tag):
    """The log and benchmark files of a job of `rule_name`, named by `tag` (wildcards allowed)."""
    return JobFiles(
        log=f"{RUN_DIR}/logs/{rule_name}/{tag}.log",
        benchmark=f"{RUN_DIR}/benchmarks/{rule_name}/{tag}.tsv",
    )


# ---- models -------------------------------------------------------------------------------
MODELS = config["models"]
ROW_MODELS = {row: config["rows"][row] for row in ("dino", "leopart")}
ATTENTION_FILES = config["attention"].get("files") or {}
USE_ATTENTION_FILES = bool(ATTENTION_FILES.get("train"))


def embeddings_of(model):
    return MODELS[model].get("embeddings") or {}


def is_reduced(model):
    """True when the model's embeddings are pre-computed and already PCA-reduced."""
    emb = embeddings_of(model)
    return bool(emb.get("train")) and emb["reduced"]


def is_imported(model):
    return bool(embeddings_of(model).get("train"))


def _imported_source(model):
    """The files (and reduced flag) a model's tokens are imported from, or None for inference."""
    emb = embeddings_of(model)
    if not emb.get("train"):
        return None
    return (os.path.realpath(emb["train"]), os.path.realpath(emb["val"]), bool(emb["reduced"]))


# Models whose tokens are imported from the same files share every artefact: the first such model
# (in sorted order) owns them, so one embeddings file is imported, reduced and clustered once.
_SOURCE_OWNER = {}
for _name in sorted(MODELS):
    if _imported_source(_name) is not None:
        _SOURCE_OWNER.setdefault(_imported_source(_name), _name)


def artefact_model(model):
    """The model name under which `model`'s artefacts live (another model's with the same imports)."""
    source = _imported_source(model)
    return model if source is None else _SOURCE_OWNER[source]


# ---- artefact paths -----------------------------------------------------------------------
def manifest_path(split):
    return f"{RUN_DIR}/dataset/{split}.parquet"


def gt_path(split):
    return f"{RUN_DIR}/gt/{split}.npy"


def tokens_path(model, split):
    return f"{RUN_DIR}/features/{model}/{split}_tokens.npy"


def cls_attn_path(model, split):
    return f"{RUN_DIR}/features/{model}/{split}_cls_attn.npy"


def attn_mask_path(split):
    """Foreground hint masks used by CBFE: imported files or the attention model's own."""
    if USE_ATTENTION_FILES:
        return f"{RUN_DIR}/attention/files/{split}.npy"
    return f"{RUN_DIR}/attention/{artefact_model(config['attention']['model'])}/{split}.npy"


OVERCLUSTER_CONFIG = config["overcluster"]


def val_fit():
    """The PCA/k-means protocol of rows DINO and +Leopart (the `fit` wildcard): all val images
    ('val') or the first overcluster.val_limit of them ('val-first<N>')."""
    limit = OVERCLUSTER_CONFIG["val_limit"]
    return f"val-first{limit}" if limit else "val"


def val_limit_of(fit):
    """The number of val images protocol `fit` uses (None = all): the inverse of val_fit()."""
    match = re.fullmatch(r"val-first(\d+)", fit)
    return int(match.group(1)) if match else None


def reduced_path(model, fit, split):
    """PCA-reduced tokens (N, h, w, dim) of `split` under protocol `fit`."""
    if is_reduced(model):
        return f"{RUN_DIR}/embeddings/{model}/{split}.npy"
    return f"{RUN_DIR}/pca/{model}/{fit}/{split}.npy"


CBFE_CONFIG = config["cbfe"]
FG_CLUSTERING_CONFIG = config["fg_clustering"]
CD_CONFIG = config["cd"]
# Wildcard patterns of the nested artefact folders: CBFE (its k-means K and seed), then the
# foreground k-means (K and seed), then the CD edge list (weight threshold), then Infomap
# (markov time, preferred number of modules ("none" when unset) and behaviour, cd.infomap).
CBFE_DIR_PATTERN = f"{RUN_DIR}/cbfe/{{model}}/k{{cbfe_k}}_seed{{cbfe_seed}}"
FG_KMEANS_DIR_PATTERN = f"{CBFE_DIR_PATTERN}/fg_k{{k}}_seed{{seed}}"
CD_EDGES_DIR_PATTERN = f"{FG_KMEANS_DIR_PATTERN}/cd_wt{{weight_threshold}}"
INFOMAP_DIR_PATTERN = f"{CD_EDGES_DIR_PATTERN}/mt{{markov_time}}_pm{{preferred_modules}}_{{infomap_behaviour}}"


#: seeds of the K=cbfe.k clustering and of the K=cd.k overclustering: one artefact branch each
CBFE_SEEDS = CBFE_CONFIG["seeds"]
CD_CLUSTERING_SEEDS = CD_CONFIG["clustering_seeds"]


def cbfe_dir(model, cbfe_seed):
    return f"{RUN_DIR}/cbfe/{model}/k{CBFE_CONFIG['k']}_seed{cbfe_seed}"


def fg_kmeans_dir(model, cbfe_seed, k, seed):
    return f"{cbfe_dir(model, cbfe_seed)}/fg_k{k}_seed{seed}"


def cd_dir(model, cbfe_seed, cd_seed):
    return fg_kmeans_dir(model, cbfe_seed, CD_CONFIG["k"], cd_seed)


def preferred_modules_tag():
    preferred = CD_CONFIG["preferred_modules"]
    return str(preferred) if preferred else "none"


#: the Infomap behaviour of row +CD (cd.infomap) and the other one, which
#: cd.compare_infomap_seeds reports as a row of its own on the same graphs
INFOMAP_BEHAVIOUR = CD_CONFIG["infomap"]
OTHER_INFOMAP_BEHAVIOUR = {"authors": "current", "current": "authors"}[INFOMAP_BEHAVIOUR]
COMPARE_INFOMAP_SEEDS = CD_CONFIG["compare_infomap_seeds"]


# Infomap behaviour "authors" runs infomap 2.2.0 from a build shared by all runs under
# cd.infomap_envs (rule infomap_env builds it once and records it for this run); "current" runs
# the installed release and needs nothing built.
INFOMAP_ENV_RECORD = f"{RUN_DIR}/infomap_env/infomap-{AUTHORS_VERSION}.json"
INFOMAP_ENV_INPUT = [INFOMAP_ENV_RECORD] if INFOMAP_BEHAVIOUR == "authors" else []


def infomap_env_input(wildcards):
    """The infomap 2.2.0 build record when the job's Infomap behaviour is "authors", else nothing."""
    return [INFOMAP_ENV_RECORD] if wildcards.infomap_behaviour == "authors" else []


def infomap_seeds(behaviour):
    """The Infomap seeds run under `behaviour`: cd.seeds for cd.infomap's, else cd.compare_infomap_seeds."""
    return CD_CONFIG["seeds"] if behaviour == INFOMAP_BEHAVIOUR else COMPARE_INFOMAP_SEEDS


def infomap_dir(model, cbfe_seed, cd_seed, behaviour=INFOMAP_BEHAVIOUR):
    weight_threshold = path_number(CD_CONFIG["weight_threshold"])
    markov_time = path_number(CD_CONFIG["markov_time"])
    return (
        f"{cd_dir(model, cbfe_seed, cd_seed)}/cd_wt{weight_threshold}/"
        f"mt{markov_time}_pm{preferred_modules_tag()}_{behaviour}"
    )


def gpu_resources():
    return 1 if config["features"]["device"] == "cuda" else 0


TRAINING = config.get("training") or {}
#: backbone file written by each trainer: the EMA teacher for DINO, the student for Leopart
TRAINED_BACKBONE = {"dino": "backbone_teacher.pt", "leopart": "backbone_student.pt"}


def training_section(kind):
    """training.<kind> without `retrain` (which decides whether the rule runs, not what it does)."""
    return {k: v for k, v in (TRAINING.get(kind) or {}).items() if k != "retrain"}


def training_gpus(kind):
    trainer = training_section(kind).get("config") or {}
    return 1 if trainer.get("device") == "cuda" else 0


def retrained_by(model):
    """The training kind that (re)trains `model` in this run, or None."""
    for kind, section in TRAINING.items():
        if section and section["retrain"] and section.get("model", kind) == model:
            return kind
    return None


def train_manifest(kind):
    """The manifest a trainer reads its images from (images.source: manifest), else none."""
    images = (TRAINING.get(kind) or {}).get("images", {})
    return manifest_path(images["split"]) if images.get("source") == "manifest" else []


def toy_design_of(kind):
    """The toy design version a trainer's rendered images follow (None for a manifest's images)."""
    images = (TRAINING.get(kind) or {}).get("images", {})
    return TOY_DESIGN_VERSION if images.get("source") == "toy" else None


def weights_file(model):
    """The checkpoint a model needs as an input file, or [] for random init."""
    kind = retrained_by(model)
    if kind:
        return f"{RUN_DIR}/train/{kind}/{TRAINED_BACKBONE[kind]}"
    w = MODELS[model]["weights"]
    if w["source"] == "random":
        return []
    if w.get("path"):
        return w["path"]
    return f"resources/weights/{model}.pth"


FEATURES_CONFIG = config["features"]
SHARD_SIZE = FEATURES_CONFIG["shard_size"]


def extraction_params():
    """What extraction results depend on (plus the device, which changes only round-off)."""
    return dict(
        input_size=FEATURES_CONFIG["input_size"],
        batch_size=FEATURES_CONFIG["batch_size"],
        device=FEATURES_CONFIG["device"],
        num_workers=FEATURES_CONFIG["num_workers"],
        precision=FEATURES_CONFIG["precision"],
    )


def shard_files(kind):
    """Input function: the `kind` ("tokens" or "cls_attn") files of every shard of a split;
    the number of shards follows from the split's manifest (a checkpoint)."""

    def files(wc):
        from leopart.data.dataset import read_manifest
        from leopart.features.extract import shard_count

        manifest = checkpoints.manifest.get(split=wc.split).output.manifest
        n = len(read_manifest(manifest))
        return expand(
            f"{RUN_DIR}/features/{wc.model}/shards/{wc.split}_{{shard}}_{kind}.npy",
            shard=range(shard_count(n, SHARD_SIZE)),
        )

    return files


def raw_tokens(model, split):
    """Raw (not reduced) tokens of a model: imported file or inference output."""
    if is_imported(model):
        return f"{RUN_DIR}/embeddings/{model}/{split}.npy"
    return tokens_path(model, split)


def overcluster_metrics(model):
    """(seeds, metric file) of the k-means runs of rows DINO / +Leopart."""
    model = artefact_model(model)
    k, fit = OVERCLUSTER_CONFIG["k"], val_fit()
    return [
        ({"kmeans_seed": s}, f"{RUN_DIR}/overcluster/{model}/{fit}/k{k}_seed{s}/metrics.json")
        for s in OVERCLUSTER_CONFIG["seeds"]
    ]


def table_layout():
    """Every metric file of Table 5 by input name, each with the seeds it was made with:
    {name: [(seeds, path), ...]} (see leopart.table for the names and seed keys)."""
    model = artefact_model(ROW_MODELS["leopart"])
    fg_k = FG_CLUSTERING_CONFIG["k"]
    clusterings = [(b, c) for b in CBFE_SEEDS for c in CD_CLUSTERING_SEEDS]

    def cd_metrics(behaviour):
        return [
            ({"cbfe_seed": b, "cd_seed": c}, f"{infomap_dir(model, b, c, behaviour)}/metrics.json")
            for b, c in clusterings
        ]

    layout = {
        "dino": overcluster_metrics(ROW_MODELS["dino"]),
        "leopart": overcluster_metrics(model),
        "cbfe": [
            ({"cbfe_seed": b, "kmeans_seed": s}, f"{fg_kmeans_dir(model, b, fg_k, s)}/hungarian.json")
            for b in CBFE_SEEDS
            for s in FG_CLUSTERING_CONFIG["seeds"]
        ],
        "cd": cd_metrics(INFOMAP_BEHAVIOUR),
    }
    if COMPARE_INFOMAP_SEEDS:
        layout["cd_other_infomap"] = cd_metrics(OTHER_INFOMAP_BEHAVIOUR)
    layout["upper_bound"] = [
        ({"cbfe_seed": b, "cd_seed": c}, f"{cd_dir(model, b, c)}/many_to_one.json") for b, c in clusterings
    ]
    layout.update(label_free_layout(model, fg_k, clusterings))
    return layout


def kmeans_trainval_labels(wc, split):
    """The K=cbfe.k cluster labels a CBFE job thresholds (its seed without the label-free suffix)."""
    seed = wc.cbfe_seed.removesuffix(LABEL_FREE_SEED)
    return f"{RUN_DIR}/kmeans/{wc.model}/trainval_k{wc.cbfe_k}_seed{seed}/{split}_labels.npy"


def label_free_seed(cbfe_seed):
    """The CBFE seed of the label-free threshold: its own folder with masks, the plain one without
    (there the +CBFE threshold is label-free itself)."""
    return f"{cbfe_seed}{LABEL_FREE_SEED}" if HAS_MASKS else cbfe_seed


def label_free_layout(model, fg_k, clusterings):
    """Metric files of the label-free rows (workflow/rules/label_free.smk), {} when not reported."""
    if not LABEL_FREE_ROWS:
        return {}
    layout = {
        "cd_label_free": [
            ({"cbfe_seed": b, "cd_seed": c}, f"{cd_dir(model, label_free_seed(b), c)}/cd_label_free/metrics.json")
            for b, c in clusterings
        ]
    }
    if HAS_MASKS:
        layout["cbfe_label_free"] = [
            ({"cbfe_seed": b, "kmeans_seed": s}, f"{fg_kmeans_dir(model, label_free_seed(b), fg_k, s)}/hungarian.json")
            for b in CBFE_SEEDS
            for s in FG_CLUSTERING_CONFIG["seeds"]
        ]
    return layout


#: [row name, input name] of every +CD row of the table: the paper's, and with
#: cd.compare_infomap_seeds the same graphs under the other Infomap behaviour
CD_ROWS = [[cd_row_name(), "cd"]] + (
    [[cd_row_name(f"infomap {OTHER_INFOMAP_BEHAVIOUR}"), "cd_other_infomap"]] if COMPARE_INFOMAP_SEEDS else []
)
#: [row name, input name] of every +CBFE row (the label-free threshold beside the paper's)
CBFE_ROWS = [[cbfe_row_name() if HAS_MASKS else cbfe_row_name(LABEL_FREE), "cbfe"]]
if LABEL_FREE_ROWS and HAS_MASKS:
    CBFE_ROWS.append([cbfe_row_name(LABEL_FREE), "cbfe_label_free"])
if LABEL_FREE_ROWS:
    CD_ROWS.append([cd_row_name(LABEL_FREE), "cd_label_free"])


def table_inputs():
    """The metric files of Table 5 by input name (lists aligned with table_seeds())."""
    return {name: [path for _, path in entries] for name, entries in table_layout().items()}


def table_seeds():
    """The seeds of every metric file of table_inputs(), in the same order."""
    return {name: [seeds for seeds, _ in entries] for name, entries in table_layout().items()}


# ---- segmentation files and the report (workflow/rules/report.smk) ----------------------------
REPORT_CONFIG = config["report"]
REPORT_DIR = f"{RUN_DIR}/report"
_TABLE_INPUTS = table_inputs()


def _first(paths):
    """The first seed's metric file of a row (a row's input is one path or a list)."""
    return paths if isinstance(paths, str) else paths[0]


def _beside(path, name, up=0):
    """The file `name` in the folder of `path` (or `up` folders above it)."""
    return str(PurePosixPath(path).parents[up] / name)


_CD_METRICS = _first(_TABLE_INPUTS["cd"])
_CBFE_METRICS = _first(_TABLE_INPUTS["cbfe"])
#: per segmentation row: its token-level label map and the metric JSON holding its matching
SEGMENTATION_ROWS = {
    row: {"labels": _beside(_first(_TABLE_INPUTS[row]), "val_labels.npy"), "metrics": _first(_TABLE_INPUTS[row])}
    for row in ("dino", "leopart", "cbfe", "upper_bound")
}
SEGMENTATION_ROWS["cd"] = {"labels": _beside(_CD_METRICS, "val_merged.npy"), "metrics": _CD_METRICS}
SEGMENTATION_ROWS["cbfe_foreground"] = {"labels": _beside(_CBFE_METRICS, "val_fg.npy", up=1)}
if LABEL_FREE_ROWS:
    _CD_LF_METRICS = _first(_TABLE_INPUTS["cd_label_free"])
    SEGMENTATION_ROWS["cd_label_free"] = {
        "labels": _beside(_CD_LF_METRICS, "val_merged.npy"),
        "metrics": _CD_LF_METRICS,
    }
if not HAS_MASKS:
    # no ground truth, no matching: the PNGs hold cluster / community ids
    for _row in SEGMENTATION_ROWS.values():
        _row.pop("metrics", None)
#: [column title, segmentation row] of the report's qualitative grid: GRID_COLUMNS, and the
#: label-free +CD row before the upper bound when it is reported
QUALITATIVE_COLUMNS = [c for c in GRID_COLUMNS if c[1] != "upper_bound"]
if "cd_label_free" in SEGMENTATION_ROWS:
    QUALITATIVE_COLUMNS.append(LABEL_FREE_GRID_COLUMN)
QUALITATIVE_COLUMNS.extend(c for c in GRID_COLUMNS if c[1] == "upper_bound")


def segmentation_dir(row):
    """The segmentation folder of a row of SEGMENTATION_ROWS."""
    return f"{RUN_DIR}/segmentations/{row}"
