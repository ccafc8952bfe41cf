"""Support code for the notebooks in ``notebooks/``, not used by training.

- :mod:`.run_scale`: how much a notebook computes (``$CNX2LITE_SCALE``);
- :mod:`.photos`: the photos the notebooks show;
- :mod:`.plotting`: what the figures share (image display, the opaque masked-cell grey and its legend, PNG and
  JPEG rendering);
- :mod:`.masking_figures`, :mod:`.sparse_figures` (+ :mod:`.step_timing`), :mod:`.grn_figures`,
  :mod:`.collapse_figures`, :mod:`.pretraining_figures` (+ :mod:`.anatomy`): the figures and measurements of
  notebooks 1 to 5 (the collapse figure of the report is :func:`cnx2lite.collapse_curves.plot_curves`);
- :mod:`.widgets`: the interactive explorers of notebooks 1 to 5;
- :mod:`.source`: the package's own code printed on a notebook's page;
- :mod:`.evidence`: the committed ``reproduce --scale cpu`` report's numbers and figures, and its trained runs
  when they are on this machine.

The science the figures show lives in the library (:mod:`cnx2lite.masking`, :mod:`cnx2lite.layers.grn`,
:mod:`cnx2lite.collapse`, ...); this package only loads, draws and wires controls.
"""
