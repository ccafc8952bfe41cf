"""Support code for the notebooks in ``notebooks/``, not used by training.

- :mod:`.run_scale`: how much a notebook computes (``$CNX2LITE_SCALE``);
- :mod:`.photos`: the photos the notebooks show;
- :mod:`.plotting`: what the figures share (image display, colors, PNG rendering);
- :mod:`.masking_figures`, :mod:`.sparse_figures`, :mod:`.grn_figures`, :mod:`.collapse_figures`:
  the figures of notebooks 1, 2, 3 and 4 (``cnx2lite reproduce`` also draws the collapse figure);
- :mod:`.widgets`: the interactive explorers of notebooks 1 and 3;
- :mod:`.evidence`: the committed ``reproduce --scale cpu`` report's numbers and figures, and its trained runs
  when they are on this machine.

The science the figures show lives in the library (:mod:`cnx2lite.masking`, :mod:`cnx2lite.layers.grn`,
:mod:`cnx2lite.analysis`, ...); this package only loads, draws and wires controls.
"""
