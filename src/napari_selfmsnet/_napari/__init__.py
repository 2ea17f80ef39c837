"""The napari plugin: the dock widget (:mod:`.widget`, with its form :mod:`.controls`, its worker
:mod:`.worker` and its status line :mod:`.progress`), the job it runs (:mod:`.job`), the layer
adapters (:mod:`.layers`) and the sample data (:mod:`.sample_data`). napari finds them through
``napari.yaml`` only; :mod:`.job` and :mod:`.layers` import no napari or Qt, so they are tested
without a viewer."""
