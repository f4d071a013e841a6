"""Pretraining, probing and fine-tuning of AnySat with Lightning, on top of :mod:`anysat_core` (which never imports
this package).

Entry point (LightningCLI; every value of a config can be overridden on the command line)::

    python -m training fit --config training/configs/geoplex-mini-cpu.yaml     # pretrain on GeoPlex-mini (CPU)
    python -m training fit --config training/configs/geoplex.yaml \\
        --data.datasets.0.root /data/TreeSat ...                               # the paper's mix, GPUs/nodes
    python -m training fit --config training/configs/probe-treesatai-ts.yaml \\
        --data.root /data/TreeSat --model.weights runs/encoder.pt               # linear probing
    python -m training fit ... --ckpt_path last                                # resume a killed run
    python -m training export runs/last.ckpt encoder.pt [--format released]    # the teacher encoder

Modules, by concern:

* :mod:`training.masks`: I-JEPA multi-block masks (seeded; the context never sees a target);
* :mod:`training.data`: datasets as :class:`~training.data.DatasetSpec`, the weighted multi-dataset mix with
  per-dataset scales, the collate that draws scale and masks, and the datamodules (pretraining, downstream);
* :mod:`training.predictor`, :mod:`training.losses`, :mod:`training.schedules`: the JEPA predictor, smooth-L1 on
  layer-normed targets and cross-modal MIL-NCE, the learning-rate and EMA schedules;
* :mod:`training.jepa`: the pretraining LightningModule (student, EMA teacher, predictor);
* :mod:`training.downstream`, :mod:`training.heads`: linear probing, LP+ and fine-tuning for tile classification,
  segmentation and change detection, with the metrics of :mod:`anysat_core.analysis.metrics`;
* :mod:`training.cli`, :mod:`training.callbacks`, :mod:`training.export`: the command line, atomic checkpoints,
  the encoder export; ``training/configs/``: the named configs;
* :mod:`training.report`: pretrain with the ``geoplex-mini-cpu`` recipe and compare probes on held-out tiles.

Where this differs from the original code, on purpose (the original's behaviours are bugs; model spec §2.5, §3.1):

* the pretraining teacher runs in eval mode and its EMA update follows the optimiser step;
* context tokens and positional encodings are gathered at the right offsets (no dropped token, no off-by-one PE);
* the predictor uses standard attention even when the encoder uses the released weights' ``flash-compat``
  attention (in that mode the original's predictor never saw the context);
* the context block never overlaps a target block (the original's could);
* a linear probe keeps the frozen encoder in eval mode (the original ran it in train mode, L-TAE dropout active);
* learning rates follow a per-step warm-up + cosine schedule by default (``ReduceLROnPlateau`` is available).
"""
