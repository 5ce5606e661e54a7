"""tl_multineuron: which MLP neurons a multilingual LLM shares across languages.

A TransformerLens plugin implementing Wang et al. 2024, "Sharing Matters: Analysing Neurons
Across Languages and Tasks in LLMs" (arXiv 2406.09265).

The public API below is loaded lazily (PEP 562): ``import tl_multineuron`` imports no module of
the package (and so neither torch nor TransformerLens); each name imports its module on first
use. The pipeline-stage subpackages are attributes too (``tl_multineuron.sharing``); import a
module by its path (``import tl_multineuron.sharing.recording``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module (in this package) that defines it
_EXPORTS: dict[str, str] = {
    "Accumulator": "sharing.accumulator",
    "AnalysisConfig": "sharing.analysis",
    "AnalysisResult": "sharing.analysis",
    "analyze": "sharing.analysis",
    "AnswerBoundaryWarning": "data.answers",
    "boundary_findings": "data.answers",
    "continuation": "data.answers",
    "attention_implementation": "backends.attention",
    "efficient_attention": "backends.attention",
    "answer_token_ids": "attribution.scores",
    "contribution_scores": "attribution.scores",
    "effective_scores": "attribution.scores",
    "IGResult": "attribution.scores",
    "integrated_gradients": "attribution.scores",
    "attribute": "attribution.analysis",
    "AttributionConfig": "attribution.analysis",
    "AttributionResult": "attribution.analysis",
    "AttributionStats": "attribution.stats",
    "ScoreStats": "attribution.stats",
    "active_mask": "sharing.classification",
    "Categories": "sharing.classification",
    "categorize": "sharing.classification",
    "categorize_acts": "sharing.classification",
    "Category": "sharing.classification",
    "CATEGORY_NAMES": "sharing.classification",
    "validate_thresholds": "sharing.classification",
    "mcnemar_exact": "experiments.comparisons",
    "paired_bootstrap": "experiments.comparisons",
    "paired_comparisons": "experiments.comparisons",
    "load_parallel": "data.datasets",
    "ParallelDataset": "data.datasets",
    "ParallelItem": "data.datasets",
    "available_devices": "backends.devices",
    "resolve_device": "backends.devices",
    "MultiNeuronError": "errors",
    "build_report": "report.page",
    "accuracy_table": "experiments.evaluation",
    "EvalConfig": "experiments.evaluation",
    "evaluate": "experiments.evaluation",
    "generate_greedy": "experiments.evaluation",
    "ExperimentScores": "experiments.scores",
    "accuracy_summary": "experiments.conditions",
    "Condition": "experiments.conditions",
    "ExperimentSets": "experiments.conditions",
    "paper_conditions": "experiments.conditions",
    "prepare_sets": "experiments.conditions",
    "run_experiment": "experiments.conditions",
    "GridConfig": "runs.grid",
    "run_task": "runs.grid",
    "amplify": "experiments.interventions",
    "apply": "experiments.interventions",
    "Composite": "experiments.interventions",
    "deactivate": "experiments.interventions",
    "Edit": "experiments.interventions",
    "Intervention": "experiments.interventions",
    "mean_ablate": "experiments.interventions",
    "NeuronHook": "experiments.interventions",
    "steer_toward": "experiments.interventions",
    "coarse_neurons": "attribution.knowledge",
    "knowledge_neurons": "attribution.knowledge",
    "KnowledgeNeurons": "attribution.knowledge",
    "KnowledgeStats": "attribution.knowledge",
    "refine": "attribution.knowledge",
    "identifier_accuracy": "steering.identifier",
    "LanguageIdentifier": "steering.identifier",
    "LanguageSteerConfig": "runs.language",
    "run_language_study": "runs.language",
    "control_table": "steering.language",
    "diff_of_means": "steering.language",
    "language_edit": "steering.language",
    "ResidualAdd": "experiments.interventions",
    "topk_mask": "sharing.masks",
    "estimate_forward": "backends.memory",
    "memory_budget": "backends.memory",
    "MemoryEstimate": "backends.memory",
    "parse_memory": "backends.memory",
    "merge_shards": "runs.merge",
    "check_model": "backends.models",
    "EMBEDDED_MODEL": "backends.models",
    "load_model": "backends.models",
    "LoadInfo": "backends.models",
    "SUPPORTED_MODELS": "backends.models",
    "magnitude_strata": "experiments.neuron_sets",
    "NeuronSet": "experiments.neuron_sets",
    "sample_like": "experiments.neuron_sets",
    "norm_path": "backends.norms",
    "NormPath": "backends.norms",
    "NormSpec": "backends.norms",
    "run_analysis": "runs.pipelines",
    "run_attribution": "runs.pipelines",
    "write_item_views": "runs.pipelines",
    "layer_device_map": "backends.placement",
    "iter_dataset": "sharing.recording",
    "iter_dataset_with": "sharing.recording",
    "language_prefixes": "sharing.recording",
    "record": "sharing.recording",
    "record_with": "sharing.recording",
    "RecordingConfig": "sharing.recording",
    "TokenBatch": "sharing.recording",
    "tokenize": "sharing.recording",
    "load_item_categories": "runs.directories",
    "attach_sae": "backends.saes",
    "load_sae": "backends.saes",
    "sae_site": "backends.saes",
    "answer_rows": "experiments.scoring",
    "AnswerRows": "experiments.scoring",
    "AnswerScores": "experiments.scoring",
    "prefix_cache_status": "experiments.scoring",
    "score_answers": "experiments.scoring",
    "scoring_path": "experiments.scoring",
    "Shard": "runs.shards",
    "edit_hook": "backends.sites",
    "EXPERT_SITE": "backends.experts",
    "SHARED_EXPERT_SITE": "backends.experts",
    "moe_layers": "backends.experts",
    "output_logits": "backends.logits",
    "gate_activation": "backends.sites",
    "is_feature_site": "backends.sites",
    "merge_all": "sharing.statistics",
    "SharingStats": "sharing.statistics",
    "AccuracySteerConfig": "runs.steer",
    "run_accuracy_study": "runs.steer",
    "default_bands": "steering.sets",
    "search_space": "steering.sets",
    "SteerConfig": "steering.sets",
    "SteeringSets": "steering.sets",
    "choose": "steering.study",
    "heldout_comparisons": "steering.study",
    "score_steering": "steering.study",
    "search_surface": "steering.study",
    "list_tasks": "data.tasks",
    "load_task": "data.tasks",
    "TASKS": "data.tasks",
    "check_tl_version": "backends.tl_compat",
    "native_kind": "backends.tl_compat",
    "tl_version": "backends.tl_compat",
    "drift_line": "backends.versions",
    "version_drift": "backends.versions",
    "versions_line": "backends.versions",
    "model_weights": "backends.weights",
    "ModelWeights": "backends.weights",
    "load_xnli": "data.xnli",
    "load_mpararel": "data.mpararel",
    "load_mzsre": "data.mzsre",
    "load_data": "data.formats",
    "DATA_FORMATS": "data.formats",
    "DroppedItemsWarning": "data.sources",
    "ActivationHistogram": "sharing.histogram",
    "LanguageSets": "experiments.language_sets",
    "identify_language_sets": "experiments.language_sets",
    "lape_select": "experiments.language_sets",
    "token_language_sets": "experiments.language_sets",
    "lape_diagnostics": "experiments.language_sets",
    "control_seed": "experiments.neuron_sets",
    "Corpus": "data.corpus",
    "load_corpus": "data.corpus",
    "corpus_from_dataset": "data.corpus",
    "TokenStats": "sharing.token_stats",
    "record_token_stats": "sharing.token_stats",
    "ActProbStats": "sharing.act_prob",
    "record_act_prob": "sharing.act_prob",
    "act_prob_select": "experiments.language_sets",
    "token_rows": "sharing.token_batches",
    "load_csalt_sets": "experiments.peer_files",
    "load_lape_activations": "experiments.peer_files",
    "LanguageVectors": "steering.vectors",
    "load_clas_vectors": "steering.vectors",
    "record_language_vectors": "steering.vectors",
    "load_lape_sets": "experiments.language_sets",
    "equalize": "experiments.language_sets",
    "SpecificityConfig": "experiments.specificity",
    "deactivation_matrix": "experiments.specificity",
    "matrix_table": "experiments.specificity",
    "selectivity": "experiments.specificity",
    "output_language": "experiments.specificity",
    "output_language_table": "experiments.specificity",
    "record_for_sets": "experiments.specificity",
    "SpecificityRunConfig": "runs.specificity",
    "run_specificity": "runs.specificity",
    "ItemSummaries": "sharing.item_summaries",
    "pair_table": "sharing.language_pairs",
    "similarity_table": "sharing.language_pairs",
    "jaccard_matrix": "sharing.language_pairs",
    "task_differences": "sharing.task_comparison",
    "input_variation": "sharing.task_comparison",
    "mantel": "sharing.mantel",
    "distance_matrix": "sharing.typology",
    "TypologyWarning": "sharing.typology",
    "association": "sharing.association",
    "RowAttribution": "attribution.rows",
    "correctness_split": "attribution.correctness",
    "peak_table": "attribution.correctness",
    "write_paper": "runs.paper",
}

# fmt: off
__all__ = [
    "Accumulator", "accuracy_summary", "act_prob_select", "ActProbStats", "load_csalt_sets",
    "load_lape_activations", "LanguageVectors",
    "load_clas_vectors", "record_language_vectors", "record_act_prob", "token_rows",
    "accuracy_table", "AccuracySteerConfig",
    "ActivationHistogram", "active_mask", "amplify", "AnalysisConfig", "AnalysisResult", "analyze",
    "answer_rows", "answer_token_ids", "AnswerBoundaryWarning", "AnswerRows", "AnswerScores",
    "apply", "association", "attach_sae", "attention_implementation", "attribute",
    "AttributionConfig", "AttributionResult", "AttributionStats", "available_devices",
    "boundary_findings", "build_report", "Categories", "categorize", "categorize_acts", "Category",
    "CATEGORY_NAMES", "check_model", "check_tl_version", "choose", "coarse_neurons", "Composite",
    "Condition", "continuation", "contribution_scores", "control_seed", "control_table", "Corpus",
    "corpus_from_dataset", "correctness_split", "DATA_FORMATS", "deactivate",
    "deactivation_matrix", "default_bands", "diff_of_means", "distance_matrix", "drift_line",
    "DroppedItemsWarning", "Edit", "edit_hook", "effective_scores", "efficient_attention",
    "EMBEDDED_MODEL", "equalize", "estimate_forward", "EvalConfig", "evaluate", "ExperimentScores",
    "ExperimentSets", "EXPERT_SITE", "gate_activation", "generate_greedy", "GridConfig",
    "heldout_comparisons", "identifier_accuracy", "identify_language_sets", "IGResult",
    "input_variation", "integrated_gradients", "Intervention", "is_feature_site", "ItemSummaries",
    "iter_dataset", "iter_dataset_with", "jaccard_matrix", "knowledge_neurons", "KnowledgeNeurons",
    "KnowledgeStats", "language_edit", "language_prefixes", "LanguageIdentifier", "LanguageSets",
    "LanguageSteerConfig", "lape_diagnostics", "lape_select", "layer_device_map", "list_tasks",
    "load_corpus", "load_data", "load_item_categories", "load_lape_sets", "load_model",
    "load_mpararel", "load_mzsre", "load_parallel", "load_sae", "load_task", "load_xnli",
    "LoadInfo", "magnitude_strata", "mantel", "matrix_table", "mcnemar_exact", "mean_ablate",
    "memory_budget", "MemoryEstimate", "merge_all", "merge_shards", "model_weights",
    "ModelWeights", "moe_layers", "MultiNeuronError", "native_kind", "NeuronHook", "NeuronSet",
    "norm_path", "NormPath", "NormSpec", "output_language", "output_language_table",
    "output_logits", "pair_table", "paired_bootstrap", "paired_comparisons", "paper_conditions",
    "ParallelDataset", "ParallelItem", "parse_memory", "peak_table", "prefix_cache_status",
    "prepare_sets", "record", "record_for_sets", "record_token_stats", "record_with",
    "RecordingConfig", "refine", "ResidualAdd", "resolve_device", "RowAttribution",
    "run_accuracy_study", "run_analysis", "run_attribution", "run_experiment",
    "run_language_study", "run_specificity", "run_task", "sae_site", "sample_like",
    "score_answers", "score_steering", "ScoreStats", "scoring_path", "search_space",
    "search_surface", "selectivity", "Shard", "SHARED_EXPERT_SITE", "SharingStats",
    "similarity_table", "SpecificityConfig", "SpecificityRunConfig", "steer_toward", "SteerConfig",
    "SteeringSets", "SUPPORTED_MODELS", "task_differences", "TASKS", "tl_version",
    "token_language_sets", "TokenBatch", "tokenize", "TokenStats", "topk_mask", "TypologyWarning",
    "validate_thresholds", "version_drift", "versions_line", "write_item_views", "write_paper",
]
# fmt: on


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time names load on first use
    from .attribution.analysis import AttributionConfig, AttributionResult, attribute
    from .attribution.correctness import correctness_split, peak_table
    from .attribution.knowledge import (
        KnowledgeNeurons,
        KnowledgeStats,
        coarse_neurons,
        knowledge_neurons,
        refine,
    )
    from .attribution.rows import RowAttribution
    from .attribution.scores import (
        IGResult,
        answer_token_ids,
        contribution_scores,
        effective_scores,
        integrated_gradients,
    )
    from .attribution.stats import AttributionStats, ScoreStats
    from .backends.attention import attention_implementation, efficient_attention
    from .backends.devices import available_devices, resolve_device
    from .backends.experts import EXPERT_SITE, SHARED_EXPERT_SITE, moe_layers
    from .backends.logits import output_logits
    from .backends.memory import MemoryEstimate, estimate_forward, memory_budget, parse_memory
    from .backends.models import EMBEDDED_MODEL, SUPPORTED_MODELS, LoadInfo, check_model, load_model
    from .backends.norms import NormPath, NormSpec, norm_path
    from .backends.placement import layer_device_map
    from .backends.saes import attach_sae, load_sae, sae_site
    from .backends.sites import edit_hook, gate_activation, is_feature_site
    from .backends.tl_compat import check_tl_version, native_kind, tl_version
    from .backends.versions import drift_line, version_drift, versions_line
    from .backends.weights import ModelWeights, model_weights
    from .data.answers import AnswerBoundaryWarning, boundary_findings, continuation
    from .data.corpus import Corpus, corpus_from_dataset, load_corpus
    from .data.datasets import ParallelDataset, ParallelItem, load_parallel
    from .data.formats import DATA_FORMATS, load_data
    from .data.mpararel import load_mpararel
    from .data.mzsre import load_mzsre
    from .data.sources import DroppedItemsWarning
    from .data.tasks import TASKS, list_tasks, load_task
    from .data.xnli import load_xnli
    from .errors import MultiNeuronError
    from .experiments.comparisons import mcnemar_exact, paired_bootstrap, paired_comparisons
    from .experiments.conditions import (
        Condition,
        ExperimentSets,
        accuracy_summary,
        paper_conditions,
        prepare_sets,
        run_experiment,
    )
    from .experiments.evaluation import EvalConfig, accuracy_table, evaluate, generate_greedy
    from .experiments.interventions import (
        Composite,
        Edit,
        Intervention,
        NeuronHook,
        ResidualAdd,
        amplify,
        apply,
        deactivate,
        mean_ablate,
        steer_toward,
    )
    from .experiments.language_sets import (
        LanguageSets,
        act_prob_select,
        equalize,
        identify_language_sets,
        lape_diagnostics,
        lape_select,
        load_lape_sets,
        token_language_sets,
    )
    from .experiments.neuron_sets import NeuronSet, control_seed, magnitude_strata, sample_like
    from .experiments.peer_files import (
        load_csalt_sets,
        load_lape_activations,
    )
    from .experiments.scores import ExperimentScores
    from .experiments.scoring import (
        AnswerRows,
        AnswerScores,
        answer_rows,
        prefix_cache_status,
        score_answers,
        scoring_path,
    )
    from .experiments.specificity import (
        SpecificityConfig,
        deactivation_matrix,
        matrix_table,
        output_language,
        output_language_table,
        record_for_sets,
        selectivity,
    )
    from .report.page import build_report
    from .runs.directories import load_item_categories
    from .runs.grid import GridConfig, run_task
    from .runs.language import LanguageSteerConfig, run_language_study
    from .runs.merge import merge_shards
    from .runs.paper import write_paper
    from .runs.pipelines import run_analysis, run_attribution, write_item_views
    from .runs.shards import Shard
    from .runs.specificity import SpecificityRunConfig, run_specificity
    from .runs.steer import AccuracySteerConfig, run_accuracy_study
    from .sharing.accumulator import Accumulator
    from .sharing.act_prob import ActProbStats, record_act_prob
    from .sharing.analysis import AnalysisConfig, AnalysisResult, analyze
    from .sharing.association import association
    from .sharing.classification import (
        CATEGORY_NAMES,
        Categories,
        Category,
        active_mask,
        categorize,
        categorize_acts,
        validate_thresholds,
    )
    from .sharing.histogram import ActivationHistogram
    from .sharing.item_summaries import ItemSummaries
    from .sharing.language_pairs import jaccard_matrix, pair_table, similarity_table
    from .sharing.mantel import mantel
    from .sharing.masks import topk_mask
    from .sharing.recording import (
        RecordingConfig,
        TokenBatch,
        iter_dataset,
        iter_dataset_with,
        language_prefixes,
        record,
        record_with,
        tokenize,
    )
    from .sharing.statistics import SharingStats, merge_all
    from .sharing.task_comparison import input_variation, task_differences
    from .sharing.token_batches import token_rows
    from .sharing.token_stats import TokenStats, record_token_stats
    from .sharing.typology import TypologyWarning, distance_matrix
    from .steering.identifier import LanguageIdentifier, identifier_accuracy
    from .steering.language import control_table, diff_of_means, language_edit
    from .steering.sets import SteerConfig, SteeringSets, default_bands, search_space
    from .steering.study import choose, heldout_comparisons, score_steering, search_surface
    from .steering.vectors import LanguageVectors, load_clas_vectors, record_language_vectors
