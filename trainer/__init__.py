"""The workstation side: train the BiGAN detector, evaluate it, export it to ONNX (needs torch).

The modules in the order the data goes through them:

- config.py: the options (networks, training, score), variant presets, `--set recipe=paper`
- datasets.py (idx.py): a data set folder -> uint8 images; tensors.py: images <-> model tensors
- models.py: E, G, D and the pixel judge J; losses.py: the training losses; anomalies.py: simulated
  anomalies J learns from; steps.py: one training step per variant
- fit.py: the training loop (augment.py, distributed.py, resume.py beside it)
- score.py, score_stats.py: the anomaly score; detector.py: the Detector module it ships as;
  threshold.py: the pass/fail threshold; checkpoint.py: the model.pt file
- evaluate.py (plots.py): metrics on a test split; export.py (onnx_passes.py): the ONNX graph
- bench.py (bench_report.py, baselines.py): the comparison table; bench_eager.py: torch eager beside
  the engines
- cli.py: the `trainer` command
"""
