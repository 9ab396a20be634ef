"""Evaluation: fidelity metrics against the float model, task metrics on procedural clips, per-timestep
denoiser error, and video files."""
