"""The Meta-USCL bi-level step: the real step, CMW-Net's exact hypergradient through a one-step SGD lookahead.

One module per idea: :mod:`.step` (the iteration: ``plain_step``, ``meta_step``), :mod:`.hypergrad` (dL_meta/dα),
:mod:`.virtual_sgd` (the optimizer's mirror), :mod:`.tangent` (J·d from the recorded forward), :mod:`.forward`
(BatchNorm batches, autocast and functional forwards), :mod:`.graphs` (the steps as CUDA graphs) and
:mod:`.config`. The names below are imported lazily.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "MetaStepConfig": ".config",
    "StepOutput": ".config",
    "plain_step": ".step",
    "meta_step": ".step",
    "cmw_optimizer": ".step",
    "hypergradient": ".hypergrad",
    "StepGraphs": ".graphs",
    "GraphStats": ".graphs",
    "Tape": ".tangent",
    "tangent": ".tangent",
    "unsupported_reason": ".tangent",
    "MetaConfigError": "..errors",
    "MetaOptimizerError": "..errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
