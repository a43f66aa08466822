"""Synthetic production line: metal-nut-like parts (or tiles of a photographed surface) on a conveyor belt,
rendered with numpy and OpenCV.

No torch here: `trainer synth` calls `synth.run.run_synth`, tests and benchmarks call `synthesize`.

- `spec`: what to render (a part's pose and defect, the lighting) and how to sample it.
- `geometry`: the part's outline in part units and anti-aliased rasterisation.
- `defects`: the four defect kinds drawn onto a rendered part, each with its mask.
- `parts`: one part rendered as layers (colour, coverage, shadow, defect mask).
- `scene`: belt, composition and camera: one inspection image.
- `stills`: the MVTec-layout data set (train/good, test/<kind>, ground_truth masks, test_index.csv).
- `video`: the conveyor video, its ground-truth CSV and an inspector config.
- `surface_source`, `surface_parts`, `surface_defects`: `--surface PHOTO`, tiles cut from a photograph and
  the defect painter of textured surfaces (for test parts only; the trainer never imports it).
- `lines`: what `stills` and `video` render through: the metal parts or the surface tiles.
- `run`: the options, their checks, and `synthesize` / `run_synth` writing it all.
"""
