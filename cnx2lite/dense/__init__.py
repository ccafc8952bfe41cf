"""Transfer to dense tasks: the backbone under a segmentation head (UperNet) and a detector (Mask R-CNN), trained and
scored on composites of labeled photos (:mod:`.composites`), a synthetic task with exact labels."""
