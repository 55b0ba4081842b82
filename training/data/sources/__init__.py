"""Where the videos come from: one module per kind of source, every kind yielding the same rows.

* :mod:`.video_folder`: a local folder of videos (and of frame folders), with an optional ``metadata.csv``;
* :mod:`.frame_folders`: a folder of one video's frame images, or a dataset row holding a list of images;
* :mod:`.grouped_images`: one image per row, grouped into videos by a video-id column (local or streamed);
* :mod:`.parquet` and :mod:`.hub`: parquet files and Hub dataset ids, whose columns (:mod:`.columns`) hold videos,
  lists of frames or images to group.

:mod:`.spec` says what a source and a row are, :mod:`.selection` which rows a run keeps (filters, the meta split),
and :mod:`.open` picks each source's kind from one table (:data:`.open.KINDS`) and joins the sources as one
``datasets`` stream.
"""

from .open import KINDS, LAYOUTS, Kind, folder_rows, open_source
from .selection import meta_split_fn, row_filter
from .spec import VIDEO_EXTENSIONS, SourceSpec, VideoSource, list_folder

__all__ = [
    "KINDS",
    "LAYOUTS",
    "VIDEO_EXTENSIONS",
    "Kind",
    "SourceSpec",
    "VideoSource",
    "folder_rows",
    "list_folder",
    "meta_split_fn",
    "open_source",
    "row_filter",
]
