"""The pair pipeline: sources -> decode (+ frame cache) -> pairs -> augmentation on the device.

One module per idea: :mod:`.sources` (a package, one module per kind of source: folders of videos or frame
folders, grouped images, parquet, Hub ids; all as one ``datasets`` stream), :mod:`.folders` (what a local folder
lists, and that nothing outside it is read), :mod:`.frames` (what a frame video is), :mod:`.decode` (sparse,
resized frames), :mod:`.cache` (decoded clips on local disk), :mod:`.pairs` (the pair-type table), :mod:`.sampling`
(its samplers), :mod:`.draws` (keyed uniforms: the same pair and views on every path and device), :mod:`.augment`
(per-sample batched augmentation), :mod:`.batch` (what a module hands the loop, and its views), :mod:`.module`
(the streaming loaders, meta split, resume), :mod:`.store` and :mod:`.store_module` (the frame store and its
module), :mod:`.datamodule` (the protocol both modules follow, and the one factory), :mod:`.publish` (a folder of
videos as a Hub dataset) and :mod:`.config` (the settings). The names below are imported lazily.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "DataConfig": ".config",
    "PairDataModule": ".module",
    "PairBatch": ".batch",
    "DataStats": ".batch",
    "StoreDataModule": ".store_module",
    "DataModule": ".datamodule",
    "data_module": ".datamodule",
    "FrameStore": ".store",
    "read_frames": ".decode",
    "decode_clip": ".decode",
    "DataError": "..errors",
    "DecodeError": "..errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
