"""Batches of image files: the jobs, a runner in this process and a Dask runner, and the
``napari-selfmsnet`` command (:mod:`.cli`). Both runners execute the engine's stack plan
(:mod:`napari_selfmsnet.engine.stack_plan`); files go through :mod:`napari_selfmsnet.io`."""
