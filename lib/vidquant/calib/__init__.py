"""Calibration data: sample sets and capture of block-0 inputs over timesteps and CFG branches."""

from vidquant.calib.capture import CalibData, capture_block_inputs, capture_expert_inputs, select_calls
from vidquant.calib.samples import Sample, SampleSetError, i2v_size, load_conditioning_image, load_samples

__all__ = ["CalibData", "capture_block_inputs", "capture_expert_inputs", "select_calls", "Sample",
           "SampleSetError", "i2v_size", "load_conditioning_image", "load_samples"]
