"""The torch-free layer that trainer, engines and inspector share: the model contract (manifest and
tensor shapes), image files, data-set folder layouts, the ground-truth CSV, AUROC and user errors."""
