"""The bundled Meta-USCL trainer (installed as ``timm_uscl.training``; needs the ``train`` extra).

The curated API, imported lazily (nothing heavy loads until a name is used)::

    from timm_uscl.training import load_config, pretrain, evaluate
    result = pretrain(load_config("meta_uscl", overrides={"source": "videos/", "epochs": 2}))
    results = evaluate(f"local-dir:{result.export_dir}", tasks=["busi"])

Subpackages, one per subsystem: :mod:`.data` (sources, decoding, pairs, augmentation, the data module,
publishing), :mod:`.meta` (the bi-level step), :mod:`.evaluation` (downstream tasks and protocols), :mod:`.cli`
(the ``timm-uscl`` trainer subcommands). At the top: :mod:`.engine` (the loop), :mod:`.config`,
:mod:`.checkpoint`, :mod:`.model`, :mod:`.losses`, :mod:`.dist`, :mod:`.errors`.
"""

from ._lazy import lazy_exports

_EXPORTS = {
    "load_config": ".config",
    "TrainConfig": ".config",
    "pretrain": ".engine",
    "RunResult": ".engine",
    "evaluate": ".evaluation",
    "results_to_markdown": ".evaluation",
    "DataConfig": ".data",
    "PairDataModule": ".data",
    "meta_step": ".meta",
    "plain_step": ".meta",
    "MetaStepConfig": ".meta",
    "nt_xent": ".losses",
    "ContrastiveModel": ".model",
    "CMWNet": ".model",
    "ConfigError": ".errors",
    "DataError": ".errors",
    "DecodeError": ".errors",
    "EvaluationError": ".errors",
    "MetaConfigError": ".errors",
    "MetaOptimizerError": ".errors",
    "RunFolderError": ".errors",
    "TrainingDivergedError": ".errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
